"""The same app with Starlette: ``Route(path, stream(...))`` mounts an endpoint directly.

Run it with ``hypercorn --workers 0 examples.starlette_app:app`` (or ``-k trio``, or
``uvicorn examples.starlette_app:app``). With ``REDIS_URL`` set
(``redis://127.0.0.1:6379/0``), every process that runs it shares its channels
through that engine: ``uvicorn examples.starlette_app:app --workers 4``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from eventstream import BrokerError, get_event_stream_singleton

from .observability import monitoring_routes
from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton(broker=os.environ.get("REDIS_URL") or None)


async def homepage(request: Request) -> Response:
    return HTMLResponse(CHAT_PAGE)


async def publish(request: Request) -> Response:
    try:
        body = await request.json()
        channel = body.pop("channel", "test")
        await stream.publish_event(channel, body)
    except (ValueError, TypeError, AttributeError) as exc:
        return PlainTextResponse(f"Bad event: {exc}\n", status_code=400)
    except BrokerError as exc:
        return PlainTextResponse(f"Not published: {exc}\n", status_code=503)
    return PlainTextResponse("Published\n", status_code=202)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # Runs the broker (with REDIS_URL) while the app serves. No shutdown code:
    # Ctrl+C and SIGTERM end open streams (handle_signals).
    async with stream:
        yield


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/api/events", stream(query_channels)),
        Route("/api/events/{id}", stream("{id}")),
        Route("/api/publish", publish, methods=["POST"]),
        Mount("/api/lobby", app=stream("lobby")),  # every path below /api/lobby streams "lobby"
        # /healthz, /readyz, and /metrics with prometheus-client installed
        *(Route(path, endpoint) for path, endpoint in monitoring_routes(stream).items()),
    ],
    lifespan=lifespan,
)
