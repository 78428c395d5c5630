"""The same app with Starlette: ``Route(path, stream(...))`` mounts an endpoint directly.

Run it with ``hypercorn examples.starlette_app:app`` (or ``-k trio``, or
``uvicorn examples.starlette_app:app``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from eventstream import get_event_stream_singleton

from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton()


async def homepage(request: Request) -> Response:
    return HTMLResponse(CHAT_PAGE)


async def publish(request: Request) -> Response:
    try:
        body = await request.json()
        channel = body.pop("channel", "test")
        await stream.publish_event(channel, body)
    except (ValueError, TypeError, AttributeError) as exc:
        return PlainTextResponse(f"Bad event: {exc}\n", status_code=400)
    return PlainTextResponse("Published\n", status_code=202)


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/api/events", stream(query_channels)),
        Route("/api/events/{id}", stream("{id}")),
        Route("/api/publish", publish, methods=["POST"]),
        Mount("/api/lobby", app=stream("lobby")),  # every path below /api/lobby streams "lobby"
    ],
)  # no shutdown code: Ctrl+C and SIGTERM end open streams (handle_signals)
