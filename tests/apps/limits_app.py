"""The ASGI app that the subscribe-limits end-to-end tests run under real servers.

Routes:
    GET /open/{id}    stream("{id}") of a stream that lets one address hold 2 open streams
    GET /rate/{id}    stream("{id}") of a stream that lets one address open 1 stream a second
                      (a burst of 3)
"""

from __future__ import annotations

from eventstream import EventStream, SubscribeLimits
from eventstream.types import Receive, Scope, Send

by_open = EventStream(keep_alive_interval=0.5, subscribe_limits=SubscribeLimits(max_open=2))
by_rate = EventStream(keep_alive_interval=0.5, subscribe_limits=SubscribeLimits(rate=1, burst=3))
open_endpoint = by_open("{id}")
rate_endpoint = by_rate("{id}")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with by_open, by_rate:
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    for prefix, endpoint in (("/open/", open_endpoint), ("/rate/", rate_endpoint)):
        if path.startswith(prefix):
            scope["path_params"] = {"id": path.removeprefix(prefix)}
            await endpoint(scope, receive, send)
            return
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"not found"})
