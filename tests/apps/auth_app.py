"""The ASGI app that the authentication end-to-end tests run under real servers.

Routes:
    GET  /events/{id}    stream("{id}"), authorized by a JWTAuthorizer: a bearer token, the
                         ``session`` cookie or a one-time ``?ticket=``; ``user-{sub}`` and
                         the token's ``channels`` claim are granted
    POST /ticket         a ticket for the request's token (bearer or cookie), or 401
    POST /publish        {"channel": ..., "values": [...]} -> one event per value, as data

``AUTH_CORS_ORIGIN``: an origin whose pages may use it with credentials (cookies).
"""

from __future__ import annotations

import json
import os

from eventstream import EventStream
from eventstream.auth import JWTAuthorizer, Unauthorized
from eventstream.cors import CORS
from eventstream.types import Receive, Scope, Send

from ..support.tokens import AUDIENCE, ISSUER, SECRET, TICKET_SECRET

authorizer = JWTAuthorizer(
    secret=SECRET,
    issuer=ISSUER,
    audience=AUDIENCE,
    leeway=0,
    channels=["user-{sub}"],
    cookie="session",
    ticket_secret=TICKET_SECRET,
)
stream = EventStream(authorize=authorizer, keep_alive_interval=0.5)
endpoint = stream("{id}")


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _reply(send: Send, status: int, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
    )
    await send({"type": "http.response.body", "body": body})


async def routes(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with stream:
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    if path.startswith("/events/"):
        scope["path_params"] = {"id": path.removeprefix("/events/")}
        await endpoint(scope, receive, send)
    elif path == "/ticket" and scope["method"] == "POST":
        await _read_body(receive)
        try:
            ticket = authorizer.mint_ticket(scope)
        except Unauthorized:
            await _reply(send, 401, b"Unauthorized")
            return
        await _reply(send, 200, ticket.encode("ascii"))
    elif path == "/publish" and scope["method"] == "POST":
        request = json.loads(await _read_body(receive))
        for value in request["values"]:
            await stream.publish_event(request["channel"], {"data": value})
        await _reply(send, 200, b"ok")
    else:
        await _reply(send, 404, b"not found")


_origin = os.environ.get("AUTH_CORS_ORIGIN")
app = CORS(routes, allow_origins=[_origin], allow_credentials=True) if _origin else routes
