"""``statistics().slowest`` finds a real client that stopped reading, under a real server (hypercorn in
this process, on asyncio and trio), and leaves out the one that reads."""

from __future__ import annotations

from contextlib import ExitStack

import anyio
import httpx
import pytest

from eventstream import EventStream
from eventstream.types import Receive, Scope, Send

from ..support.helpers import open_events
from ..support.servers import serve_in_process
from .test_stalled_clients import open_non_reader

pytestmark = [pytest.mark.anyio, pytest.mark.server]


async def test_a_client_that_stopped_reading_is_the_slowest() -> None:
    stream = EventStream(buffer_size=4, send_timeout=60.0, keep_alive_interval=None)
    events = stream("{id}")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "path_params": {"id": scope["path"].removeprefix("/events/")}}
        await events(scope, receive, send)

    big = "x" * 65536  # a few of these fill the socket buffers of a client that does not read
    with ExitStack() as attackers, anyio.fail_after(60):
        async with serve_in_process(app) as port, httpx.AsyncClient(timeout=30) as client:
            async with open_events(client, f"http://127.0.0.1:{port}/events/slow") as honest:
                assert (await honest.next()).event == "stream-open"
                open_non_reader(attackers, port, "slow")
                await stream.wait_subscribers(2, "slow")
                published = 0
                while not any(lag.left_behind for lag in stream.statistics().slowest):
                    await stream.publish_event("slow", {"data": big})
                    published += 1
                    assert (await honest.next()).json() == big  # the reader keeps up
                (lag,) = stream.statistics().slowest  # the reader has taken everything: not listed
                assert lag.channels == ("slow",)
                assert lag.left_behind
                assert 0 < lag.queued <= 4
                assert lag.seconds_behind >= 0.0
                assert published > 4
                attackers.close()  # the non-reader leaves: the server can stop
                await stream.aclose()
