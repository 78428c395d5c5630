"""Pipe an async generator into a channel with ``channel_writer``.

A ticker runs for the life of the app, inside the lifespan's task group, and
is piped into channel "ticks": it moves only as fast as events are dispatched.
On Ctrl+C or SIGTERM the stream closes (handle_signals), ``pipe()`` returns,
open streams end, and the server stops: no shutdown code.

    hypercorn --workers 0 examples.pipe:app    # then: curl -N localhost:8000/api/events
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import anyio

from eventstream import ServerSentEvent, get_event_stream_singleton
from eventstream.types import Receive, Scope, Send

stream = get_event_stream_singleton()
events = stream("ticks")
INTERVAL = float(os.environ.get("TICK_INTERVAL", "1"))


async def ticker() -> AsyncIterator[ServerSentEvent]:
    count = 0
    while True:
        yield ServerSentEvent(event="tick", data={"count": count, "time": time.time()})
        count += 1
        await anyio.sleep(INTERVAL)


async def pipe_ticks() -> None:
    async with stream.channel_writer("ticks") as writer:
        await writer.pipe(ticker())


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with stream, anyio.create_task_group() as tg:
            tg.start_soon(pipe_ticks)  # returns when the stream is closed
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            tg.cancel_scope.cancel()
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["path"] == "/api/events":
        await events(scope, receive, send)
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"Not found\n"})
