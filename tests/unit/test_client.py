"""eventstream.client.EventSource against small raw HTTP servers written here.

Each server answers connection n with the n-th script: it can cut a stream
inside an event, stall, refuse, or answer with the wrong status or type. What
the client sends (Last-Event-ID above all) is recorded.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import itertools
import math
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import httpx
import pytest

from eventstream import ServerSentEvent
from eventstream._sse import MAX_RETRY
from eventstream.client import EventSource, EventSourceError

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio

Script = Callable[[anyio.abc.ByteStream], Awaitable[None]]


@dataclass
class RawServer:
    scripts: Sequence[Script]
    port: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    accepted_at: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    async def handle(self, stream: anyio.abc.ByteStream) -> None:
        self.accepted_at.append(anyio.current_time())
        number = len(self.accepted_at) - 1
        async with stream:
            head = b""
            try:
                with anyio.fail_after(10):
                    while b"\r\n\r\n" not in head and len(head) < 65536:
                        head += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return  # the client went before its request was whole (its test ended meanwhile)
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {"": lines[0]}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self.requests.append(headers)
            await self.scripts[min(number, len(self.scripts) - 1)](stream)


@asynccontextmanager
async def raw_server(*scripts: Script) -> AsyncIterator[RawServer]:
    server = RawServer(scripts)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def head(status: str = "200 OK", content_type: str | None = "text/event-stream") -> bytes:
    lines = [f"HTTP/1.1 {status}", "Cache-Control: no-cache", "Connection: close"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def send(*parts: bytes, stall: bool = False) -> Script:
    """A script writing ``parts`` (a response), then closing, or stalling forever."""

    async def script(stream: anyio.abc.ByteStream) -> None:
        for part in parts:
            await stream.send(part)
        if stall:
            await anyio.sleep_forever()  # a server that goes silent; cancelled when the test ends

    return script


async def hang_up(stream: anyio.abc.ByteStream) -> None:
    """Read the request, answer nothing, close."""


async def collect(source: EventSource, count: int, timeout: float = 20) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    with anyio.fail_after(timeout):
        async for event in source:
            events.append(event)
            if len(events) == count:
                break
    return events


async def test_a_stream_cut_inside_an_event_resumes_from_the_last_whole_one() -> None:
    first = b"retry: 10\n\ndata: a\nid: 1\n\ndata: b\nid: 2\n"  # cut before b's blank line
    second = b"data: b\nid: 2\n\nevent: note\ndata: c\n\n"  # c has no id: the last id stays 2
    async with raw_server(
        send(head(), first), send(head(), second), send(head("204 No Content", None))
    ) as server:
        async with EventSource(server.url) as source:
            events: list[ServerSentEvent] = []
            ids: list[str] = []

            async def read_all() -> None:
                async for event in source:
                    events.append(event)
                    ids.append(source.last_event_id)

            with pytest.raises(EventSourceError) as raised, anyio.fail_after(10):
                await read_all()
            assert [(e.event, e.text, e.id) for e in events] == [
                (None, "a", "1"),
                (None, "b", "2"),
                ("note", "c", None),
            ]
            assert ids == ["1", "2", "2"]
            assert source.last_event_id == "2"
            assert source.reconnect_delay == 0.01  # the server's retry, in seconds
            assert source.connections == 2
    assert raised.value.status_code == 204
    assert "204 No Content" in str(raised.value)
    assert [r.get("last-event-id") for r in server.requests] == [None, "1", "2"]
    assert {r["accept"] for r in server.requests} == {"text/event-stream"}
    assert {r["cache-control"] for r in server.requests} == {"no-cache"}


@pytest.mark.parametrize(
    ("answer", "status", "reason"),
    [
        (head("204 No Content", None), 204, "204 No Content"),
        (head("500 Internal Server Error", "text/plain") + b"boom", 500, "500 Internal Server Error"),
        (head("404 Not Found", "text/plain"), 404, "404 Not Found"),
        (head("503 Service Unavailable", "text/plain"), 503, "503 Service Unavailable"),
        (head(content_type="text/html") + b"data: x\n\n", 200, "'text/html'"),
        (head(content_type=None) + b"data: x\n\n", 200, "None"),
        (head(content_type="text/event-streams") + b"data: x\n\n", 200, "'text/event-streams'"),
    ],
)
async def test_a_refusal_stops_with_a_clear_error_and_no_reconnect(
    answer: bytes, status: int, reason: str
) -> None:
    async with raw_server(send(answer)) as server, EventSource(server.url, reconnect_delay=0) as source:
        with pytest.raises(EventSourceError, match=reason) as raised, anyio.fail_after(10):
            await source.__anext__()
        assert raised.value.status_code == status
        assert raised.value.url == server.url
        with pytest.raises(StopAsyncIteration):  # closed for good, as a browser's CLOSED state
            await source.__anext__()
    assert len(server.requests) == 1


async def test_content_type_with_parameters_and_redirects_are_accepted() -> None:
    redirect = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(
        send(redirect),
        send(head(content_type="Text/Event-Stream; charset=utf-8"), b"data: \xc3\xa9\r\n\r\n", stall=True),
    ) as server:
        async with EventSource(server.url) as source:
            (event,) = await collect(source, 1)
            assert event.text == "é"
            assert source.response is not None
            assert source.response.url.path == "/moved"
    assert [r[""] for r in server.requests] == ["GET /events HTTP/1.1", "GET /moved HTTP/1.1"]


async def test_a_silent_connection_is_reopened_after_the_read_timeout() -> None:
    async with raw_server(
        send(head(), b"id: 5\ndata: first\n\n", stall=True),
        send(head(), b"id: 6\ndata: second\n\n", stall=True),
    ) as server:
        async with EventSource(server.url, read_timeout=0.5, reconnect_delay=0) as source:
            events = await collect(source, 2)
    assert [e.text for e in events] == ["first", "second"]
    assert [r.get("last-event-id") for r in server.requests] == [None, "5"]
    assert server.accepted_at[1] - server.accepted_at[0] >= 0.5


async def test_repeated_failures_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    base, cap, attempts = 0.02, 0.16, 7
    async with raw_server(hang_up) as server:
        async with EventSource(server.url, reconnect_delay=base, max_reconnect_delay=cap) as source:
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, source, 1, 60)

                async def enough() -> bool:
                    return len(server.accepted_at) >= attempts

                await wait_until(enough, timeout=30)
                tg.cancel_scope.cancel()
    times = server.accepted_at[:attempts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # After the n-th failure in a row the wait is min(cap, base * 2**(n-1)), times
    # a jitter in [0.5, 1], never below the base: these are lower bounds.
    floors = [max(base, 0.5 * min(cap, base * 2 ** (n - 1))) for n in range(1, attempts)]
    slack = 0.005
    assert all(gap >= floor - slack for gap, floor in zip(gaps, floors, strict=True)), (gaps, floors)
    assert gaps[-1] >= cap / 2 - slack  # it grew from 0.02 to the cap's range
    assert source.last_event_id == ""


async def test_cancelling_a_read_closes_the_connection_and_the_next_read_resumes() -> None:
    async with raw_server(
        send(head(), b"id: 1\ndata: one\n\nid: 2\ndata: tw", stall=True),
        send(head(), b"id: 2\ndata: two\n\n", stall=True),
    ) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            assert [e.text for e in await collect(source, 1)] == ["one"]
            with anyio.move_on_after(0.3):
                await source.__anext__()  # waits inside event 2: cancelled
            assert source.response is None
            assert [e.text for e in await collect(source, 1)] == ["two"]
    assert [r.get("last-event-id") for r in server.requests] == [None, "1"]


async def test_given_last_event_id_headers_and_client_are_used() -> None:
    async with raw_server(send(head(), b"data: x\n\n", stall=True)) as server:
        async with httpx.AsyncClient(headers={"user-agent": "mine"}) as client:
            async with EventSource(
                server.url, client=client, headers={"Authorization": "Bearer t"}, last_event_id="41"
            ) as source:
                await collect(source, 1)
            assert not client.is_closed  # a client passed in is left open
    (request,) = server.requests
    assert (request["last-event-id"], request["authorization"], request["user-agent"]) == (
        "41",
        "Bearer t",
        "mine",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
        ({"last_event_id": "a\nb"}, "last_event_id"),
        ({"last_event_id": "evt-1 "}, "cannot be sent in a Last-Event-ID header"),
        ({"headers": {"Last-Event-ID": "3"}}, "last_event_id="),
        ({"reconnect_delay": -1}, "reconnect_delay"),
        ({"reconnect_delay": math.inf}, "reconnect_delay"),
        ({"max_reconnect_delay": 0}, "max_reconnect_delay"),
        ({"read_timeout": 0}, "read_timeout"),
        ({"max_event_size": 0}, "max_event_size"),
        ({"connect_timeout": math.nan}, "connect_timeout"),
        ({"reconnect_delay": True}, "reconnect_delay must be a number of seconds >= 0, not True"),
        ({"read_timeout": "5"}, "read_timeout must be a positive number of seconds or None, not '5'"),
    ],
)
def test_bad_arguments_are_refused_when_built(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"url": "http://127.0.0.1/events", **kwargs}
    with pytest.raises(ValueError, match=message):
        EventSource(**arguments)  # type: ignore[arg-type]


async def test_iterating_without_entering_is_an_error() -> None:
    source = EventSource("http://127.0.0.1:9/events")
    with pytest.raises(RuntimeError, match="async with"):
        await source.__anext__()


@pytest.mark.parametrize("while_", ["reading", "waiting to reconnect"])
async def test_aclose_from_another_task_ends_the_iteration(while_: str) -> None:
    script = send(head(), b"data: x\n\n", stall=True) if while_ == "reading" else hang_up
    async with raw_server(script) as server:
        source = EventSource(server.url, reconnect_delay=60)
        ended = anyio.Event()
        received: list[ServerSentEvent] = []

        async def consume() -> None:
            async for event in source:
                received.append(event)
            ended.set()

        async with source, anyio.create_task_group() as tg:
            tg.start_soon(consume)

            async def started() -> bool:
                return bool(received) if while_ == "reading" else bool(server.requests)

            await wait_until(started)
            await source.aclose()
            with anyio.fail_after(5):
                await ended.wait()
    assert len(server.requests) == 1


async def test_aclose_while_the_headers_are_awaited_drops_the_late_response() -> None:
    # With a client passed in, aclose() leaves it open but cancels the request in flight: the
    # answer that comes after is never read; the iteration ends with no event.
    answer = anyio.Event()

    async def late(stream: anyio.abc.ByteStream) -> None:
        await answer.wait()
        with contextlib.suppress(anyio.BrokenResourceError):  # the client may have closed the connection
            await send(head(), b"data: late\n\n", stall=True)(stream)

    async with raw_server(late) as server, httpx.AsyncClient() as client:
        source = EventSource(server.url, client=client, reconnect_delay=60)
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
            await source.aclose()
            answer.set()
            with anyio.fail_after(5):
                await ended.wait()
        assert not client.is_closed
    assert received == []
    assert len(server.requests) == 1


async def test_a_client_passed_in_already_closed_is_an_error_not_a_reconnect_loop() -> None:
    async with raw_server(send(head(), b"data: x\n\n")) as server:
        client = httpx.AsyncClient()
        await client.aclose()
        async with EventSource(server.url, client=client, reconnect_delay=0) as source:
            with anyio.fail_after(5), pytest.raises(RuntimeError, match="closed"):
                await source.__anext__()
    assert server.requests == []


async def test_a_non_ascii_id_is_sent_back_as_utf8() -> None:
    async with raw_server(
        send(head(), "id: \u00e9t\u00e9 \u2603\ndata: one\n\n".encode()),
        send(head(), b"data: two\n\n", stall=True),
    ) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            assert [e.text for e in await collect(source, 2)] == ["one", "two"]
            assert source.last_event_id == "\u00e9t\u00e9 \u2603"
    assert server.requests[1]["last-event-id"].encode("latin-1").decode() == "\u00e9t\u00e9 \u2603"


async def test_an_event_larger_than_max_event_size_stops_the_source() -> None:
    async with raw_server(
        send(head(), b"data: small\n\ndata: " + b"x" * 3000, b"\ndata: " + b"y" * 3000, stall=True)
    ) as server:
        async with EventSource(server.url, max_event_size=4000) as source:
            assert [e.text for e in await collect(source, 1)] == ["small"]
            with pytest.raises(EventSourceError, match="max_event_size") as raised, anyio.fail_after(10):
                await source.__anext__()
            assert raised.value.status_code == 200
            assert source.response is None
            with pytest.raises(StopAsyncIteration):
                await source.__anext__()
    assert len(server.requests) == 1


@functools.cache
def gzip_bomb() -> bytes:
    """70 KiB of gzip: 7 million empty events (``data:`` and a blank line), 49 MB once inflated."""
    return gzip.compress(b"data:\n\n" * 7_000_000, compresslevel=9)


def encoded_head(coding: str) -> bytes:
    return head().replace(b"\r\n\r\n", f"\r\nContent-Encoding: {coding}\r\n\r\n".encode())


async def test_a_gzip_bomb_is_inflated_only_as_events_are_taken() -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 72 * 1024
    async with raw_server(send(encoded_head("gzip"), bomb, stall=True)) as server:
        async with EventSource(server.url) as source:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                first = await collect(source, 10)
                ten = tracemalloc.get_traced_memory()[1] - before
                more = await collect(source, 30_000, timeout=60)  # several pieces of the body
                peak = tracemalloc.get_traced_memory()[1] - before
            finally:
                tracemalloc.stop()
    assert [e.text for e in first + more] == [""] * 30_010
    # Before: the whole body inflated and decoded at once, about 800 MiB for 10 events.
    assert ten <= 32 * 1024 * 1024, ten
    assert peak <= 32 * 1024 * 1024, peak
    assert server.requests[0]["accept-encoding"] == "gzip, deflate"


def _deflate(data: bytes, *, wrapped: bool) -> bytes:
    compressor = zlib.compressobj(wbits=zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


_STREAM = b"".join(b"id: %d\ndata: %s\n\n" % (n, b"x" * (n % 5000)) for n in range(100))


@pytest.mark.parametrize(
    ("coding", "body"),
    [
        ("identity", _STREAM),
        ("gzip", gzip.compress(_STREAM)),
        ("gzip", gzip.compress(_STREAM[:5000]) + gzip.compress(_STREAM[5000:])),  # two members
        ("x-gzip", gzip.compress(_STREAM)),
        ("deflate", _deflate(_STREAM, wrapped=True)),
        ("deflate", _deflate(_STREAM, wrapped=False)),  # raw deflate, as httpx accepts it
    ],
)
async def test_compressed_streams_are_decoded_piece_by_piece(coding: str, body: bytes) -> None:
    parts = [body[i : i + 100] for i in range(0, len(body), 100)]
    async with raw_server(send(encoded_head(coding), *parts, stall=True)) as server:
        async with EventSource(server.url) as source:
            events = await collect(source, 100)
            assert source.last_event_id == "99"
    assert [(e.id, e.text) for e in events] == [(str(n), "x" * (n % 5000)) for n in range(100)]


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip"])
async def test_a_content_encoding_it_cannot_decode_stops_the_source(coding: str) -> None:
    async with raw_server(send(encoded_head(coding), b"data: x\n\n")) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            with pytest.raises(EventSourceError, match="decodes gzip or deflate"), anyio.fail_after(10):
                await source.__anext__()
    assert len(server.requests) == 1


async def test_a_corrupt_gzip_body_is_dropped_and_the_stream_resumed() -> None:
    good = gzip.compress(b"id: 1\ndata: one\n\n")
    async with raw_server(
        send(encoded_head("gzip"), good + b"garbage, not a gzip member" * 2, stall=True),
        send(encoded_head("gzip"), gzip.compress(b"id: 2\ndata: two\n\n"), stall=True),
    ) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            assert [e.text for e in await collect(source, 2)] == ["one", "two"]
    assert [r.get("last-event-id") for r in server.requests] == [None, "1"]


@pytest.mark.parametrize("sent", [b"evt-1 ", b"  two", b"a\x0bb", b"a\x0cb", b"a\x01b", b"\tx"])
async def test_an_id_that_cannot_be_sent_back_stops_the_source_when_it_must_reconnect(sent: bytes) -> None:
    received = sent.decode()
    async with raw_server(
        send(head(), b"retry: 0\nid: " + sent + b"\ndata: one\n\n"), send(head(), b"data: two\n\n")
    ) as server:
        async with EventSource(server.url) as source:
            (event,) = await collect(source, 1)
            assert (event.text, event.id, source.last_event_id) == ("one", received, received)  # as sent
            with pytest.raises(EventSourceError, match="cannot be sent back") as raised, anyio.fail_after(10):
                await source.__anext__()
            assert (raised.value.url, raised.value.status_code) == (server.url, 200)
            assert repr(received) in str(raised.value)
            with pytest.raises(StopAsyncIteration):
                await source.__anext__()
    assert len(server.requests) == 1  # stopped, not reconnecting for ever


async def test_an_id_with_a_tab_inside_is_sent_back() -> None:
    async with raw_server(
        send(head(), b"retry: 0\nid: a\tb\ndata: one\n\n"), send(head(), b"data: two\n\n", stall=True)
    ) as server:
        async with EventSource(server.url) as source:
            assert [e.text for e in await collect(source, 2)] == ["one", "two"]
    assert server.requests[1]["last-event-id"] == "a\tb"


@pytest.mark.parametrize("digits", [400, 5000])
async def test_a_huge_retry_is_clamped_and_the_event_beside_it_kept(digits: int) -> None:
    async with raw_server(
        send(head(), b"retry: " + b"9" * digits + b"\ndata: beside\n\n", stall=True)
    ) as server:
        async with EventSource(server.url) as source:
            (event,) = await collect(source, 1)
            assert (event.text, event.retry) == ("beside", MAX_RETRY)
            assert source.reconnect_delay == MAX_RETRY / 1000


async def connections_seen(server: RawServer, source: EventSource, count: int) -> list[float]:
    """Iterate ``source`` until ``server`` has accepted ``count`` connections; their gaps."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect, source, 10_000, 60)

        async def enough() -> bool:
            return len(server.accepted_at) >= count

        await wait_until(enough, timeout=30)
        tg.cancel_scope.cancel()
    return [b - a for a, b in itertools.pairwise(server.accepted_at[:count])]


async def test_responses_that_end_at_once_back_off_whatever_retry_says() -> None:
    cap, attempts = 0.4, 7
    async with raw_server(send(head(), b"retry: 0\n\n")) as server:
        async with EventSource(server.url, max_reconnect_delay=cap) as source:
            gaps = await connections_seen(server, source, attempts)
            assert source.reconnect_delay == 0
    # After the first quick end the wait is at least 0.1 s times a jitter in [0.5, 1];
    # after the n-th in a row, min(cap, 0.1 * 2**(n-1)) times the jitter: lower bounds.
    # Without the backoff, these 7 connections took about 10 ms.
    floors = [0.5 * min(cap, 0.1 * 2 ** (n - 1)) for n in range(1, attempts)]
    slack = 0.005
    assert all(gap >= floor - slack for gap, floor in zip(gaps, floors, strict=True)), (gaps, floors)


async def test_responses_that_end_at_once_after_an_event_are_not_reopened_at_once() -> None:
    async with raw_server(send(head(), b"retry: 0\ndata: x\n\n")) as server:
        async with EventSource(server.url) as source:
            gaps = await connections_seen(server, source, 6)
    assert min(gaps) >= 0.05 - 0.005, gaps  # at most 20 a second, not 600


async def test_a_steady_response_ends_the_backoff() -> None:
    async def steady(stream: anyio.abc.ByteStream) -> None:
        await stream.send(head() + b"retry: 0\n\n")
        await anyio.sleep(1.2)  # the server's behaviour: open longer than the client's 1 s

    quick = send(head(), b"retry: 0\n\n")
    async with raw_server(quick, quick, quick, quick, steady, quick) as server:
        async with EventSource(server.url, max_reconnect_delay=10) as source:
            gaps = await connections_seen(server, source, 7)
    # 4 quick ends: the wait grew to at least 0.4 s. The steady one is reopened at once
    # (retry: 0), and after the quick one that follows the wait is back in [0.05, 0.1]:
    # without the reset, it would be at least 0.5 * 0.1 * 2**5 = 1.6 s.
    assert gaps[3] >= 0.4 - 0.005, gaps
    assert gaps[4] >= 1.2 - 0.005, gaps
    assert 0.05 - 0.005 <= gaps[5] < 1.0, gaps


def _redirect(to: Callable[[], str]) -> Script:
    async def script(stream: anyio.abc.ByteStream) -> None:
        await stream.send(
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {to()}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    return script


async def test_a_cross_origin_redirect_carries_none_of_the_given_headers_nor_the_id() -> None:
    async with raw_server(send(head(), b"data: elsewhere\n\n", stall=True)) as other:
        async with raw_server(_redirect(lambda: f"http://localhost:{other.port}/moved")) as first:
            async with (
                httpx.AsyncClient(
                    follow_redirects=True, headers={"Authorization": "Bearer client"}, auth=("user", "pw")
                ) as client,
                EventSource(
                    first.url, client=client, headers={"X-Api-Key": "secret"}, last_event_id="41"
                ) as source,
            ):
                assert [e.text for e in await collect(source, 1)] == ["elsewhere"]
    (asked,) = first.requests
    assert (asked["x-api-key"], asked["last-event-id"]) == ("secret", "41")
    assert asked["authorization"].startswith("Basic ")  # the client's auth, at the URL's origin
    (moved,) = other.requests
    assert moved[""] == "GET /moved HTTP/1.1"
    assert moved["accept"] == "text/event-stream"
    assert not {"x-api-key", "last-event-id", "authorization"} & set(moved), moved


async def test_a_same_origin_redirect_keeps_the_given_headers_and_the_id() -> None:
    async with raw_server(
        _redirect(lambda: "/moved"), send(head(), b"data: moved\n\n", stall=True)
    ) as server:
        async with EventSource(server.url, headers={"X-Api-Key": "secret"}, last_event_id="41") as source:
            assert [e.text for e in await collect(source, 1)] == ["moved"]
    assert [(r[""], r["x-api-key"], r["last-event-id"]) for r in server.requests] == [
        ("GET /events HTTP/1.1", "secret", "41"),
        ("GET /moved HTTP/1.1", "secret", "41"),
    ]


async def test_a_client_that_follows_no_redirects_is_respected() -> None:
    async with raw_server(_redirect(lambda: "/moved"), send(head(), b"data: moved\n\n")) as server:
        async with httpx.AsyncClient() as client, EventSource(server.url, client=client) as source:
            with pytest.raises(EventSourceError, match="follow_redirects=False") as raised:
                await collect(source, 1)
    assert raised.value.status_code == 307
    assert len(server.requests) == 1


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/x", "file:///etc/passwd"])
async def test_a_redirect_to_no_http_url_stops_the_source(location: str) -> None:
    async with raw_server(_redirect(lambda: location)) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            with pytest.raises(EventSourceError, match="not an http") as raised:
                await collect(source, 1)
    assert raised.value.status_code == 307
    assert len(server.requests) == 1


async def test_a_redirect_loop_stops_after_the_clients_max_redirects() -> None:
    async with raw_server(_redirect(lambda: "/events")) as server:
        async with (
            httpx.AsyncClient(follow_redirects=True, max_redirects=3) as client,
            EventSource(server.url, client=client, reconnect_delay=0) as source,
        ):
            with pytest.raises(httpx.TooManyRedirects, match="max_redirects"):
                await collect(source, 1)
            with pytest.raises(StopAsyncIteration):
                await source.__anext__()
    assert len(server.requests) == 4


async def test_a_redirect_to_a_malformed_url_stops_the_source() -> None:
    async with raw_server(_redirect(lambda: "mailto:someone@example.com")) as server:
        async with EventSource(server.url, reconnect_delay=0) as source:
            with pytest.raises(httpx.InvalidURL):
                await collect(source, 1)
            with pytest.raises(StopAsyncIteration):
                await source.__anext__()
    assert len(server.requests) == 1


async def test_a_source_is_entered_once() -> None:
    # Its connection, its last id and its backoff belong to one run: a second run needs a new source.
    source = EventSource("http://127.0.0.1:9/events")
    async with source:
        with pytest.raises(RuntimeError, match="an EventSource can be entered only once"):
            await source.__aenter__()
    with pytest.raises(RuntimeError, match="an EventSource can be entered only once"):
        async with source:
            pass
