"""A raw ASGI app that serves its metrics and health probes, for the real Prometheus to scrape.

Routes:
    GET  /metrics              MetricsEndpoint: this stream's collector, in Prometheus's format
    GET  /healthz, /readyz     HealthEndpoint("live"), HealthEndpoint("ready")
    GET  /events/{id}          stream("{run}user-{id}"): the template names the test run
    POST /publish/{id}?count=n&size=b   n events of b bytes on "{run}user-{id}"
    POST /close                aclose(): streams end, readiness answers 503

``EVENTSTREAM_RUN`` (a prefix of the channel template) lets each test tell its
series apart in a Prometheus that scrapes every run. Small buffers and a short
``send_timeout``: a client that stops reading is dropped within a second.
``EVENTSTREAM_BROKER`` is a broker URL (key prefix: the run); a publish the
engine refuses gets 503. The stream is entered for the life of the app (lifespan).
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry

from eventstream import BrokerError, EventStream, HealthEndpoint, RedisBroker
from eventstream.prometheus import MetricsEndpoint, register
from eventstream.types import Receive, Scope, Send

RUN = os.environ.get("EVENTSTREAM_RUN", "")
_broker = os.environ.get("EVENTSTREAM_BROKER")
stream = EventStream(
    buffer_size=4,
    send_timeout=0.5,
    keep_alive_interval=None,
    broker=RedisBroker(_broker, key_prefix=RUN, publish_timeout=1.0, request_timeout=0.5)
    if _broker
    else None,
)
registry = CollectorRegistry()
register(stream, registry)
metrics = MetricsEndpoint(registry)
events = stream(RUN + "user-{id}")
probes = {"/healthz": HealthEndpoint(stream, "live"), "/readyz": HealthEndpoint(stream, "ready")}
_EVENTS = re.compile(r"/events/(?P<id>[^/]+)")
_PUBLISH = re.compile(r"/publish/(?P<id>[^/]+)")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    path: str = scope["path"]
    if path == "/metrics":
        await metrics(scope, receive, send)
    elif path in probes:
        await probes[path](scope, receive, send)
    elif match := _EVENTS.fullmatch(path):
        await events({**scope, "path_params": match.groupdict()}, receive, send)
    elif (match := _PUBLISH.fullmatch(path)) and scope["method"] == "POST":
        query = parse_qs(scope["query_string"].decode())
        count, size = int(query.get("count", ["1"])[0]), int(query.get("size", ["10"])[0])
        try:
            for _ in range(count):
                await stream.publish_event(f"{RUN}user-{match['id']}", {"data": "x" * size})
        except BrokerError:
            await _answer(send, 503)
        else:
            await _answer(send, 204)
    elif path == "/close" and scope["method"] == "POST":
        await stream.aclose()
        await _answer(send, 204)
    else:
        await _answer(send, 404)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await stream.__aenter__()  # connects the broker, if any
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stream.__aexit__(None, None, None)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _answer(send: Send, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b""})
