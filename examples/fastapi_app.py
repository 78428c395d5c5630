"""The chat app with FastAPI: endpoints are added as routes (or mounted), the hub lives in the lifespan.

Run it with ``hypercorn examples.fastapi_app:app`` (or ``-k trio``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse

from eventstream import get_event_stream_singleton

from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # On SIGTERM or at shutdown: end open streams, so the server can stop.
    async with stream:
        with stream.close_on_signals():
            yield


app = FastAPI(lifespan=lifespan)
# add_route takes ASGI apps at run time; its annotation only names request handlers.
app.add_route("/api/events", stream(query_channels))  # type: ignore[arg-type]
app.add_route("/api/events/{id}", stream("{id}"))  # type: ignore[arg-type]
app.mount("/api/lobby", stream("lobby"))  # a mounted endpoint: every path below it streams "lobby"


@app.get("/", response_class=HTMLResponse)
async def homepage() -> bytes:
    return CHAT_PAGE


@app.post("/api/publish", status_code=202)
async def publish(body: dict[str, Any]) -> dict[str, str]:
    channel = body.pop("channel", "test")
    try:
        await stream.publish_event(channel, body)
    except (ValueError, TypeError) as exc:
        raise HTTPException(status_code=400, detail=f"Bad event: {exc}") from None
    return {"status": "published"}
