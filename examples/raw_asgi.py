"""A raw ASGI app (no framework) with a chat page.

    GET  /                  the chat page (its EventSource shows published messages)
    GET  /api/events        streams channel "test", or the channels named in ?channel=...
    GET  /api/events/{id}   streams channel {id}
    POST /api/publish       {"channel": "test", "event": "message", "data": {...}}
    GET  /healthz, /readyz  liveness and readiness probes; /metrics with prometheus-client
                            installed (examples/observability.py)

Run it with ``hypercorn --workers 0 examples.raw_asgi:app`` (or ``-k trio``; ``--workers 0``
keeps hypercorn in one process, which Ctrl+C reaches), open http://127.0.0.1:8000/, or
read the stream from a shell, and publish::

    curl -N localhost:8000/api/events
    curl -X POST localhost:8000/api/publish -d '{"event": "message", "data": {"text": "hello"}}'

With ``CORS_ORIGINS`` set (origins separated by spaces), pages on those origins may
stream and publish too. With ``REDIS_URL`` set (``redis://127.0.0.1:6379/0``), the processes that run it
share their channels through that engine: ``uvicorn examples.raw_asgi:app --workers 4``.
The Starlette and FastAPI examples use the same hub, so the same holds for them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import parse_qs

from eventstream import BrokerError, EventStream, get_event_stream_singleton
from eventstream.cors import CORS
from eventstream.types import ASGIApp, Receive, Scope, Send

from .observability import monitoring_routes

CHAT_PAGE = (Path(__file__).parent / "static" / "chat.html").read_bytes()


def query_channels(scope: Scope) -> list[str]:
    return parse_qs(scope["query_string"].decode("latin-1")).get("channel", ["test"])


async def respond(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


def chat_app(stream: EventStream) -> ASGIApp:
    """The chat app around ``stream``; its lifespan keeps the stream entered (and GRIP publishing on)."""
    events = stream(query_channels)
    events_by_id = stream("{id}")
    monitoring = monitoring_routes(stream)

    async def publish(receive: Receive, send: Send) -> None:
        try:
            request = json.loads(await read_body(receive))
            channel = request.pop("channel", "test")
            await stream.publish_event(channel, request)
        except (ValueError, TypeError, AttributeError) as exc:
            await respond(send, 400, f"Bad event: {exc}\n".encode())
            return
        except BrokerError as exc:  # the engine refused it, or was unreachable for too long
            await respond(send, 503, f"Not published: {exc}\n".encode())
            return
        await respond(send, 202, b"Published\n")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            # The stream is entered for the life of the app: that runs GRIP
            # publishing when it is configured (examples/grip). Ctrl+C and
            # SIGTERM end open streams by themselves (handle_signals).
            async with stream:
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        if path == "/":
            await respond(send, 200, CHAT_PAGE, b"text/html; charset=utf-8")
        elif path == "/api/events":
            await events(scope, receive, send)
        elif match := re.fullmatch(r"/api/events/([^/]+)", path):
            scope["path_params"] = {"id": match[1]}
            await events_by_id(scope, receive, send)
        elif path == "/api/publish" and scope["method"] == "POST":
            await publish(receive, send)
        elif path in monitoring:
            await monitoring[path](scope, receive, send)
        else:
            await respond(send, 404, b"Not found\n")

    return app


# Browsers reconnect after 1 s (instead of their default 3 s) and resume with Last-Event-ID.
# With REDIS_URL, every process running this app shares its channels through that engine.
app: ASGIApp = chat_app(get_event_stream_singleton(retry=1000, broker=os.environ.get("REDIS_URL") or None))
# Pages on the origins of CORS_ORIGINS ("https://chat.example.com https://*.example.org")
# may stream and publish (the preflight of a POST of JSON is answered), without cookies.
if origins := os.environ.get("CORS_ORIGINS"):
    app = CORS(app, allow_origins=origins.split())
