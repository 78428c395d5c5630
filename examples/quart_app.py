"""The chat app with Quart: Quart serves the page and the publish view, eventstream the streams.

Quart has no way to mount an ASGI app, so a small dispatcher in front of the Quart app
routes the stream paths with werkzeug's router (the one Quart uses), puts the matched
``{token}`` into ``scope["path_params"]`` and calls the endpoint; every other request goes
to Quart (lifespan included). Quart runs on asyncio: ``pip install -e '.[quart]'``, then
``hypercorn --workers 0 examples.quart_app:app`` (or uvicorn, granian; not hypercorn's trio
worker).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule

from eventstream import get_event_stream_singleton
from eventstream.types import ASGIApp, Receive, Scope, Send

from .observability import monitoring_routes
from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton()
quart = Quart(__name__)


@quart.while_serving
async def lifespan() -> AsyncGenerator[None]:
    # On SIGTERM or at shutdown: end open streams, so the server can stop.
    async with stream:
        with stream.close_on_signals():
            yield


@quart.get("/")
async def homepage() -> Response:
    return Response(CHAT_PAGE, content_type="text/html; charset=utf-8")


@quart.post("/api/publish")
async def publish() -> tuple[str, int, dict[str, str]]:
    plain = {"content-type": "text/plain; charset=utf-8"}
    try:
        body: Any = await request.get_json(force=True)
        channel = body.pop("channel", "test")
        await stream.publish_event(channel, body)
    except (ValueError, TypeError, AttributeError) as exc:
        return f"Bad event: {exc}\n", 400, plain
    return "Published\n", 202, plain


class StreamDispatcher:
    """Serves the paths of ``routes`` with their endpoints and everything else with ``app``."""

    def __init__(self, app: ASGIApp, routes: dict[str, ASGIApp]) -> None:
        self.app = app
        self.endpoints = routes
        self.map = Map([Rule(path, endpoint=path) for path in routes])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            adapter = self.map.bind("", path_info=scope["path"], url_scheme=scope.get("scheme", "http"))
            try:
                rule, params = adapter.match(method="GET", return_rule=True)
            except HTTPException:
                pass  # not a stream path (or a redirect to one): Quart answers
            else:
                await self.endpoints[rule.rule]({**scope, "path_params": params}, receive, send)
                return
        await self.app(scope, receive, send)


app = StreamDispatcher(
    quart,  # type: ignore[arg-type]  # an ASGI app; its annotations use asgiref's scope types
    {
        "/api/events": stream(query_channels),
        "/api/rooms/<token>": stream("room-{token}"),  # werkzeug's <token> fills {token}
        **monitoring_routes(stream),  # /healthz, /readyz (and /metrics with prometheus-client)
    },
)
