"""Django's ASGI application and eventstream's endpoints in one ASGI app.

    GET  /                   the chat page (a Django view)
    POST /api/publish        a sync Django view that publishes
    GET  /api/events         eventstream: channel "test", or the channels in ?channel=...
    GET  /api/rooms/{token}  eventstream: channel "room-{token}"
    GET  /healthz, /readyz   probes; /metrics with prometheus-client (examples/observability.py)

Django's ASGI handler serves HTTP only; this app answers the lifespan protocol itself
(the hub lives as long as the server) and routes the stream paths before Django.
``pip install -e '.[django]'``, then run it with ``uvicorn examples.django_app.asgi:app``,
``hypercorn --workers 0 examples.django_app.asgi:app`` or ``daphne examples.django_app.asgi:app``.
daphne sends no lifespan events: the lifespan below never runs and the hub works unentered
(without GRIP or a broker), but Ctrl+C and SIGTERM still end open streams cleanly, through
the signal handlers the hub installs at its first request.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

from django.core.asgi import get_asgi_application  # after the settings module is named

from eventstream.types import Receive, Scope, Send

from ..observability import monitoring_routes
from ..raw_asgi import query_channels
from .views import stream

django_app = get_asgi_application()
events = stream(query_channels)
room = stream("room-{token}")
monitoring = monitoring_routes(stream)  # /healthz, /readyz (and /metrics with prometheus-client)
_ROOM = re.compile(r"/api/rooms/(?P<token>[^/]+)")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with stream:
            with stream.close_on_signals():  # on SIGTERM: end open streams, so the server can stop
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope.get("path", "")
    if scope["type"] == "http" and path == "/api/events":
        await events(scope, receive, send)
    elif scope["type"] == "http" and (match := _ROOM.fullmatch(path)):
        await room({**scope, "path_params": match.groupdict()}, receive, send)
    elif scope["type"] == "http" and path in monitoring:
        await monitoring[path](scope, receive, send)
    else:
        await django_app(scope, receive, send)
