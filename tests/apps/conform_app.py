"""A small ASGI app for request-validation tests under real servers.

Routes:
    GET /events/{id}     stream("{id}")
    GET /none            stream(callable returning None): a bad channels callable
    GET /bytes           stream(async callable returning b"x"): another one
"""

from __future__ import annotations

import logging
import re

from eventstream import EventStream
from eventstream.types import Receive, Scope, Send

# The library's logger has only a NullHandler: the app sends its lines to stderr (the server's log).
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")

stream = EventStream(keep_alive_interval=0.5)


def channels_of_nothing(scope: Scope) -> None:
    return None


async def channels_as_bytes(scope: Scope) -> bytes:
    return b"x"


_ROUTES = [
    (re.compile(r"/events/(?P<id>[^/]+)"), stream("{id}")),
    (re.compile(r"/none"), stream(channels_of_nothing)),  # type: ignore[arg-type]
    (re.compile(r"/bytes"), stream(channels_as_bytes)),  # type: ignore[arg-type]
]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":  # no GRIP: nothing to run; the tests close their streams
        await receive()  # lifespan.startup
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    for pattern, endpoint in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            scope["path_params"] = match.groupdict()
            await endpoint(scope, receive, send)
            return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b"not found"})
