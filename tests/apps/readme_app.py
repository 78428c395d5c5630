"""An app written as the README's first examples show, with no shutdown code at all.

Two hubs (``stream`` and ``alerts``) serve Starlette routes; ``POST /publish``
publishes ``{"channel": ..., "event": {...}}`` to ``stream``, or to ``alerts``
with ``"hub": "alerts"``. ``endpoint`` is a bare endpoint used as the whole
app (``tests.apps.readme_app:endpoint``).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from eventstream import EventStream

stream = EventStream(shutdown_event={"event": "shutdown"})
alerts = EventStream(shutdown_event={"event": "shutdown"})


async def publish(request: Request) -> Response:
    body = await request.json()
    hub = alerts if body.get("hub") == "alerts" else stream
    await hub.publish_event(body["channel"], body["event"])
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/api/events/{id}", stream("{id}")),
        Route("/api/alerts", alerts("alerts")),
        Route("/publish", publish, methods=["POST"]),
    ]
)

endpoint = EventStream(shutdown_event={"event": "shutdown"})("test")
