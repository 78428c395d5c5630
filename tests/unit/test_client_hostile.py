"""eventstream.client.EventSource against hostile servers: silent ones, bad redirects, two readers.

The raw servers are those of ``test_client``: each connection runs a script,
and what the client sent is recorded.
"""

from __future__ import annotations

import tracemalloc

import anyio
import anyio.abc
import httpx
import pytest

from eventstream import ServerSentEvent
from eventstream.client import EventSource, EventSourceError

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


@pytest.mark.parametrize("line", [b"data\n", "data:\U0001f600\n".encode()], ids=["empty", "one-4-byte-char"])
async def test_short_data_lines_reach_max_event_size_before_much_memory(line: bytes) -> None:
    # Each data line used to count its characters and one more: a million empty lines (8 bytes of
    # list each) or of one 4-byte character (88 bytes each) stayed under a limit of a million.
    limit = 1_000_000
    ordinary = b"".join(b"data: %s\n" % (b"x" * 99) for _ in range(5000)) + b"\n"  # 500,000 characters
    flood = line * 8192
    async with raw_server(send(head(), ordinary, *[flood] * 160, stall=True)) as server:  # 1.3 million lines
        async with EventSource(server.url, max_event_size=limit) as source:
            with anyio.fail_after(20):
                event = await source.__anext__()
            assert event.text == "\n".join(["x" * 99] * 5000)  # well under the limit: handed out
            peak = await peak_until_refused(source)
    # The limit bounds the memory an event holds at 4 bytes a unit (what one long line of 4-byte
    # characters costs), whatever its lines; 2 MiB more for the pieces being read and decoded and the
    # growth of the list of lines. Measured: 0.9 and 4.2 MB; before, 8.9 and 45 MB.
    assert peak <= 4 * limit + 2 * 1024 * 1024, peak
    assert len(server.requests) == 1


async def peak_until_refused(source: EventSource) -> int:
    """The memory the next event took (traced, in bytes) until the source refused it as too big."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        with anyio.fail_after(60), pytest.raises(EventSourceError, match="max_event_size"):
            await source.__anext__()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("piece", [b"xy", "\U0001f600".encode()], ids=["two-ascii", "one-4-byte-char"])
async def test_a_line_sent_in_tiny_chunks_reaches_max_event_size_before_much_memory(piece: bytes) -> None:
    # Each chunk of a line without its end was kept apart: a str of 2 characters costs 59 bytes, one
    # of one 4-byte character 88, while both count their characters only.
    limit = 100_000
    chunked = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    flood = b"%x\r\n%s\r\n" % (len(piece), piece) * 8192  # chunks of one piece each
    async with raw_server(send(chunked, b"6\r\ndata: \r\n", *[flood] * 13, stall=True)) as server:
        async with EventSource(server.url, max_event_size=limit) as source:
            peak = await peak_until_refused(source)
    # 4 bytes a unit, as for the longest characters in long pieces; 1 MiB for what is being read.
    # Measured: 0.4 and 0.6 to 0.8 MB; before, 3 and 9 MB.
    assert peak <= 4 * limit + 1024 * 1024, peak
    assert len(server.requests) == 1
