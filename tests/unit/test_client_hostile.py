"""eventstream.client.EventSource against hostile servers: silent ones, bad redirects, two readers.

The raw servers are those of ``test_client``: each connection runs a script,
and what the client sent is recorded.
"""

from __future__ import annotations

import anyio
import anyio.abc
import httpx
import pytest

from eventstream import ServerSentEvent
from eventstream.client import EventSource

from ..support.helpers import wait_until
from .test_client import head, raw_server, send

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("given", [False, True], ids=["own-client", "client-given"])
async def test_aclose_ends_an_iteration_waiting_for_headers_that_never_come(given: bool) -> None:
    # The server reads the request and never answers; with read_timeout=None nothing else ends
    # the wait. Before, aclose() left a client passed in open and the request waited for ever.
    async with raw_server(send(stall=True)) as server, httpx.AsyncClient() as client:
        source = EventSource(server.url, client=client if given else None, read_timeout=None)
        received: list[ServerSentEvent] = []
        ended = anyio.Event()

        async def consume() -> None:
            async for event in source:
                received.append(event)
            ended.set()

        async with source, anyio.create_task_group() as tg:
            tg.start_soon(consume)

            async def requested() -> bool:
                return bool(server.requests)

            await wait_until(requested)
            with anyio.fail_after(5):
                await source.aclose()
                await ended.wait()
            with pytest.raises(StopAsyncIteration):  # closed for good
                await source.__anext__()
        assert client.is_closed is False  # a client passed in is left open (and this one never was)
    assert received == []
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "location"),
    [("301 Moved Permanently", "http://[::1"), ("302 Found", "http://[zz]/"), ("302 Found", "http://a:b/")],
)
@pytest.mark.parametrize("follow", [True, False], ids=["following", "not-following"])
async def test_a_redirect_to_a_url_httpx_cannot_read_stops_the_source(
    status: str, location: str, follow: bool
) -> None:
    # httpx reports such a Location as a RemoteProtocolError, a network error: the source
    # reconnected for ever, silently, whether the client followed redirects or not.
    answer = f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    async with (
        raw_server(send(answer)) as server,
        httpx.AsyncClient(follow_redirects=follow) as client,
        EventSource(server.url, client=client, reconnect_delay=0, max_reconnect_delay=0.1) as source,
    ):
        with anyio.fail_after(5), pytest.raises(httpx.InvalidURL, match="Location is not a URL"):
            await source.__anext__()
        with pytest.raises(StopAsyncIteration):  # closed for good
            await source.__anext__()
    assert len(server.requests) == 1


async def test_a_second_task_iterating_gets_a_clear_error_and_the_first_reads_on() -> None:
    go = anyio.Event()

    async def stream_on_cue(stream: anyio.abc.ByteStream) -> None:
        await stream.send(head() + b"id: 1\ndata: one\n\n")
        await go.wait()
        await stream.send(b"id: 2\ndata: two\n\nid: 3\ndata: three\n\n")
        await anyio.sleep_forever()

    async with raw_server(stream_on_cue) as server, EventSource(server.url, reconnect_delay=0) as source:
        received: list[ServerSentEvent] = []

        async def first() -> None:
            async for event in source:
                received.append(event)
                if len(received) == 3:
                    break

        async with anyio.create_task_group() as tg:
            tg.start_soon(first)

            async def one_received() -> bool:
                return bool(received)

            await wait_until(one_received)  # the first task is now back in __anext__, reading
            busy = "already being iterated by another task"
            with anyio.fail_after(5), pytest.raises(RuntimeError, match=busy):
                await source.__anext__()
            assert source.response is not None  # the connection of the first task is untouched
            go.set()
        assert [(e.id, e.text) for e in received] == [("1", "one"), ("2", "two"), ("3", "three")]
        assert source.connections == 1
    assert len(server.requests) == 1  # no reconnection
