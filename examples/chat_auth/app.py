"""A chat where people log in, see who is online, and get private messages.

Run it (``pip install -e '.[examples]'`` first) and open http://127.0.0.1:8000/::

    uvicorn examples.chat_auth.app:app

- ``POST /login`` (a form with ``name``) sets an ``HttpOnly`` cookie holding a
  short-lived HS256 JWT (``sub`` and ``name`` are the name); ``POST /logout``
  clears it.
- ``GET /events/{sub}`` streams ``lobby`` (everyone's messages),
  ``presence:lobby`` (who joins and leaves) and ``user-{sub}`` (private
  messages): a :class:`~eventstream.auth.JWTAuthorizer` grants exactly these,
  from the cookie or from a one-time ``?ticket=``.
- ``GET /online``: who is in the lobby now (``stream.presence``), what a page
  reads when its stream opens, then keeps up to date with the join and leave events.
- ``POST /say`` ``{"text"}`` and ``POST /private`` ``{"to", "text"}``: JSON only
  (a cross-site form cannot send it), from a logged-in user.
- ``POST /ticket``: a one-time ticket for a page on another origin, which
  cannot send the cookie with its ``EventSource``.

Environment: ``CHAT_SECRET`` and ``CHAT_TICKET_SECRET`` (at least 32 bytes;
random at each start by default: one process only), ``CHAT_CORS_ORIGIN`` (an
origin whose page may use the chat with the cookie, e.g.
``http://127.0.0.1:8001``). Behind HTTPS the cookie is ``Secure``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from eventstream import EventStream
from eventstream.auth import JWTAuthorizer, Unauthorized
from eventstream.cors import CORS

SECRET = os.environ.get("CHAT_SECRET") or secrets.token_urlsafe(32)
TICKET_SECRET = os.environ.get("CHAT_TICKET_SECRET") or secrets.token_urlsafe(32)
ISSUER, AUDIENCE = "chat-example", "chat"
COOKIE = "chat_token"
TOKEN_LIFETIME = 15 * 60  # seconds: the stream ends then, and the page asks to log in again
NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")  # what a name may be: it becomes a channel's name
MAX_TEXT = 500
PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

authorizer = JWTAuthorizer(
    secret=SECRET,
    issuer=ISSUER,
    audience=AUDIENCE,
    channels=["lobby", "presence:lobby", "user-{sub}"],
    cookie=COOKIE,
    ticket_secret=TICKET_SECRET,
    info_claims=("name",),
)
stream = EventStream(authorize=authorizer, presence=["lobby"])


def user(request: Request) -> str:
    """The logged-in user's name. Raises Unauthorized: no valid token in the cookie."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise Unauthorized("no cookie")
    return str(authorizer.verifier.verify(token)["sub"])


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def login(request: Request) -> Response:
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    name = (form.get("name") or [""])[0].strip()
    if not NAME.fullmatch(name):
        return PlainTextResponse("A name is 1 to 32 letters, digits, '_' or '-'.", status_code=400)
    now = int(time.time())
    claims = {
        "sub": name,
        "name": name,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + TOKEN_LIFETIME,
    }
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        jwt.encode(claims, SECRET, algorithm="HS256"),
        max_age=TOKEN_LIFETIME,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="lax")
    return response


async def me(request: Request) -> Response:
    try:
        return JSONResponse({"name": user(request)})
    except Unauthorized:
        return PlainTextResponse("Unauthorized", status_code=401)


async def online(request: Request) -> Response:
    try:
        user(request)
    except Unauthorized:
        return PlainTextResponse("Unauthorized", status_code=401)
    members = await stream.presence("lobby")
    return JSONResponse([member.identity for member in members])


async def _message(request: Request) -> tuple[str, dict[str, Any]] | Response:
    # The sender and the JSON body of a POST, or the answer that refuses it.
    try:
        sender = user(request)
    except Unauthorized:
        return PlainTextResponse("Unauthorized", status_code=401)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return PlainTextResponse("Send JSON.", status_code=415)
    try:
        body = json.loads(await request.body())
    except ValueError:
        return PlainTextResponse("Bad JSON.", status_code=400)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
        return PlainTextResponse(f"text: 1 to {MAX_TEXT} characters.", status_code=400)
    return sender, body


async def say(request: Request) -> Response:
    got = await _message(request)
    if isinstance(got, Response):
        return got
    sender, body = got
    await stream.publish_event("lobby", {"event": "message", "data": {"from": sender, "text": body["text"]}})
    return Response(status_code=204)


async def private(request: Request) -> Response:
    got = await _message(request)
    if isinstance(got, Response):
        return got
    sender, body = got
    to = body.get("to")
    if not isinstance(to, str) or not NAME.fullmatch(to):
        return PlainTextResponse("to: a user's name.", status_code=400)
    event = {"event": "private", "data": {"from": sender, "to": to, "text": body["text"]}}
    await stream.publish_event(f"user-{to}", event)
    return Response(status_code=204)


async def ticket(request: Request) -> Response:
    try:
        return PlainTextResponse(authorizer.mint_ticket(request.scope))
    except Unauthorized:
        return PlainTextResponse("Unauthorized", status_code=401)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with stream:  # the stream opens and closes with the app
        yield


chat = Starlette(
    routes=[
        Route("/", page),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/me", me),
        Route("/online", online),
        Route("/say", say, methods=["POST"]),
        Route("/private", private, methods=["POST"]),
        Route("/ticket", ticket, methods=["POST"]),
        Route("/events/{sub}", stream(["lobby", "presence:lobby", "user-{sub}"])),
    ],
    lifespan=lifespan,
)
_origin = os.environ.get("CHAT_CORS_ORIGIN")
app: ASGIApp = CORS(chat, allow_origins=[_origin], allow_credentials=True) if _origin else chat
