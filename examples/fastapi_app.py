"""The chat app with FastAPI: endpoints are added as routes (or mounted).

Run it with ``hypercorn --workers 0 examples.fastapi_app:app`` (or ``-k trio``, or
``uvicorn examples.fastapi_app:app``). ``POST /api/publish`` takes a JSON body
whatever its ``Content-Type`` (``curl -d`` sends a form type).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from eventstream import get_event_stream_singleton

from .observability import monitoring_routes
from .raw_asgi import CHAT_PAGE, query_channels

stream = get_event_stream_singleton()

app = FastAPI()  # no shutdown code: Ctrl+C and SIGTERM end open streams (handle_signals)
# add_route takes ASGI apps at run time; its annotation only names request handlers.
app.add_route("/api/events", stream(query_channels))  # type: ignore[arg-type]
app.add_route("/api/events/{id}", stream("{id}"))  # type: ignore[arg-type]
app.mount("/api/lobby", stream("lobby"))  # a mounted endpoint: every path below it streams "lobby"
for path, endpoint in monitoring_routes(stream).items():  # /healthz, /readyz (and /metrics)
    app.add_route(path, endpoint)  # type: ignore[arg-type]


@app.get("/", response_class=HTMLResponse)
async def homepage() -> bytes:
    return CHAT_PAGE


@app.post("/api/publish", status_code=202)
async def publish(request: Request) -> dict[str, str]:
    try:
        body = json.loads(await request.body())
        channel = body.pop("channel", "test")
        await stream.publish_event(channel, body)
    except (ValueError, TypeError, AttributeError) as exc:
        raise HTTPException(status_code=400, detail=f"Bad event: {exc}") from None
    return {"status": "published"}
