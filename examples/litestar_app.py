"""The chat app with Litestar: endpoints as an ``@asgi`` handler, a route and a mount.

    GET  /                    the chat page
    GET  /api/events          channel "test", or the channels in ?channel=...
    GET  /api/rooms/{token}   channel "room-{token}": Litestar routes the request, puts
                              ``token`` into ``scope["path_params"]`` and calls the endpoint
    GET  /api/lobby/...       channel "lobby" (a mount)
    POST /api/publish         {"channel": "test", "event": "message", "data": {...}}

``pip install -e '.[litestar]'``, then ``uvicorn examples.litestar_app:app`` (or
``hypercorn --workers 0``, with either worker, or granian).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response, asgi, get, post
from litestar.exceptions import HTTPException, SerializationException
from litestar.types import ASGIApp, Receive, Scope, Send

from eventstream import get_event_stream_singleton

from .observability import monitoring_routes
from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton()
_events = stream(query_channels)
_room = stream("room-{token}")  # the path parameter fills the channel name


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    # On SIGTERM or at shutdown: end open streams, so the server can stop.
    async with stream:
        with stream.close_on_signals():
            yield


@get("/", media_type="text/html")
async def homepage() -> bytes:
    return CHAT_PAGE


# Litestar checks the handlers' annotations, so the endpoint gets a small typed wrapper.
@asgi("/api/events", copy_scope=True)
async def events(scope: Scope, receive: Receive, send: Send) -> None:
    await _events(scope, receive, send)  # type: ignore[arg-type]


# A route with a path parameter: the handler returns the endpoint, which Litestar then
# calls with the request's scope, where it put ``{"token": ...}`` in "path_params" (the
# handler need not take it as an argument). An ``@asgi`` handler cannot have a path
# parameter: Litestar 2.25 fails to route it (KeyError 'GET').
@get("/api/rooms/{token:str}")
async def room() -> ASGIApp:
    return _room  # type: ignore[return-value]


# A mount: every path below /api/lobby streams "lobby".
lobby = asgi("/api/lobby", is_mount=True, copy_scope=True)(stream("lobby"))


@post("/api/publish", status_code=202)
async def publish(request: Request[Any, Any, Any]) -> Response[str]:
    try:
        body = await request.json()
        channel = body.pop("channel", "test")
        await stream.publish_event(channel, body)
    except (SerializationException, ValueError, TypeError, AttributeError) as exc:
        raise HTTPException(status_code=400, detail=f"Bad event: {exc}") from None
    return Response("Published\n", media_type="text/plain", status_code=202)


# /healthz, /readyz (and /metrics with prometheus-client): ASGI apps, as the lobby's endpoint.
monitoring = [asgi(path, copy_scope=True)(endpoint) for path, endpoint in monitoring_routes(stream).items()]

app = Litestar([homepage, events, room, lobby, publish, *monitoring], lifespan=[lifespan])
