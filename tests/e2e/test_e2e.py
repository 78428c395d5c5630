"""End to end: real servers (hypercorn asyncio and trio workers, uvicorn, granian, daphne), real httpx."""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest

from ..support.helpers import EventReader, open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.servers import NATIVE_RSS_DRIFT_KINDS, Server

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


async def publish(
    client: httpx.AsyncClient, server: Server, channel: str, event: dict[str, Any], count: int = 1
) -> None:
    response = await client.post(
        f"{server.base_url}/publish", json={"channel": channel, "event": event, "count": count}
    )
    assert response.status_code == 200, response.text


async def publish_many(client: httpx.AsyncClient, server: Server, channel: str, values: range) -> None:
    response = await client.post(
        f"{server.base_url}/publish", json={"channel": channel, "values": list(values)}
    )
    assert response.status_code == 200, response.text


async def stats(client: httpx.AsyncClient, server: Server) -> dict[str, Any]:
    response = await client.get(f"{server.base_url}/stats")
    result: dict[str, Any] = response.json()
    return result


async def test_stream_bytes_headers_and_routing(server: Server) -> None:
    channel = unique("room")
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{server.base_url}/events/{channel}") as reader:
            response = reader.response
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-length" not in response.headers
            assert (await reader.next()).event == "stream-open"
            assert bytes(reader.raw) == b"event: stream-open\ndata: \n\n"
            await publish(client, server, channel, {"event": "message", "data": {"name": "John"}})
            await publish(client, server, unique("other"), {"event": "message", "data": "not for us"})
            await publish(client, server, channel, {"event": "message", "text": "two\nlines"})
            first = await reader.next_not_keep_alive()
            second = await reader.next_not_keep_alive()
            assert first.json() == {"name": "John"}
            assert second.text == "two\nlines"
            raw = bytes(reader.raw).replace(b"event: keep-alive\ndata: \n\n", b"")
            assert re.fullmatch(
                rb"event: stream-open\ndata: \n\n"
                rb'event: message\ndata: {"name":"John"}\nid: ([0-9a-f]{8})-(\d+)\n\n'
                rb"event: message\ndata: two\ndata: lines\nid: \1-\d+\n\n",
                raw,
            ), raw


async def test_several_channels_one_connection(server: Server) -> None:
    prefix = unique("pair")
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{server.base_url}/pair/{prefix}") as reader:
            await reader.next()
            for i in range(20):
                await publish(client, server, f"{prefix}-{'ab'[i % 2]}", {"data": i})
            assert [(await reader.next_not_keep_alive()).json() for _ in range(20)] == list(range(20))


async def test_burst_arrives_in_order_exactly_once(server: Server) -> None:
    channel = unique("burst")
    async with httpx.AsyncClient(timeout=10) as client:
        dropped_before = (await stats(client, server))["subscribers_dropped"]  # the server is shared
        async with (
            open_events(client, f"{server.base_url}/events/{channel}") as one,
            open_events(client, f"{server.base_url}/query?channel={channel}") as two,
        ):
            received: list[list[object]] = [[], []]

            async def read(reader: EventReader, into: list[object]) -> None:
                for _ in range(2000):
                    into.append((await reader.next_not_keep_alive()).json())

            for reader in (one, two):
                await reader.next()
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, one, received[0])
                tg.start_soon(read, two, received[1])
                for start in range(0, 2000, 500):
                    await publish_many(client, server, channel, range(start, start + 500))
            assert received == [list(range(2000))] * 2
            assert (await stats(client, server))["subscribers_dropped"] == dropped_before


async def test_keep_alive_arrives(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{server.base_url}/events/{unique('idle')}") as reader:
            assert (await reader.next()).event == "stream-open"
            with anyio.fail_after(5):
                assert (await reader.next()).event == "keep-alive"


async def test_keep_alives_go_on_between_events(server: Server) -> None:
    # The keep-alive's deadline moves after every write; it still comes after each quiet interval.
    channel = unique("quiet")
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{server.base_url}/events/{channel}") as reader:
            assert (await reader.next()).event == "stream-open"
            with anyio.fail_after(15):
                for n in range(3):
                    await publish_many(client, server, channel, range(n, n + 1))
                    event = await reader.next_not_keep_alive()
                    assert event.json() == n
                    assert (await reader.next()).event == "keep-alive"
                    assert (await reader.next()).event == "keep-alive"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "reason"),
    [
        ("POST", "/events/a", {}, 405, "Method not allowed"),
        ("DELETE", "/events/a", {}, 405, "Method not allowed"),
        ("GET", "/events/a", {"accept": "application/json"}, 406, "Not acceptable"),
        ("GET", "/events/a", {"accept": "text/event-stream;q=0"}, 406, "Not acceptable"),
        ("GET", "/query?channel=%20&channel=", {}, 400, "No channels"),
        ("GET", "/query?" + "&".join(f"channel=c{i}" for i in range(40)), {}, 400, "Too many channels"),
        ("GET", "/events/" + "x" * 300, {}, 400, "limit is 256"),
        ("GET", "/events/a%3Bb", {}, 400, "Invalid channel"),
        ("GET", "/missing", {}, 400, "No route parameter 'nope'"),
        ("GET", "/events/a", {"last-event-id": "error"}, 400, "Last-Event-ID"),
    ],
)
async def test_refused_requests(
    server: Server, method: str, path: str, headers: dict[str, str], status: int, reason: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.request(method, server.base_url + path, headers=headers)
        assert response.status_code == status
        assert reason in response.text
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        if status == 405:
            assert response.headers["allow"] == "GET, HEAD"


async def test_head(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.head(f"{server.base_url}/events/{unique('head')}")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.content == b""


async def test_publish_error_reaches_publisher(server: Server) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.base_url}/publish", json={"channel": "a", "event": {"event": "x\ny", "data": 1}}
        )
        assert response.status_code == 400
        assert "CR, LF or NUL" in response.text


async def test_500_disconnects_leave_no_subscriber_and_no_growth(server: Server) -> None:
    channel = unique("drop")
    url = f"{server.base_url}/events/{channel}"
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as control,
        httpx.AsyncClient(timeout=30, limits=limits) as client,
    ):

        async def settled(subscribers: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                current = await stats(control, server)
                return bool(current["channels"].get(channel, 0) == subscribers == current["subscribers"])

            return check

        async def one_round() -> dict[str, int]:
            """Open 500 streams, drop them all, wait until the server let go; return its memory."""
            opened = anyio.Semaphore(0)
            release = anyio.Event()

            async def hold() -> None:
                async with open_events(client, url) as reader:
                    await reader.next()
                    opened.release()
                    await release.wait()
                # leaving the block closes the connection before the stream ends

            async with anyio.create_task_group() as tg:
                for _ in range(500):
                    tg.start_soon(hold)
                with anyio.fail_after(60):
                    for _ in range(500):
                        await opened.acquire()
                await wait_until(await settled(500))
                release.set()
            await wait_until(await settled(0), timeout=20)
            memory: dict[str, int] = (await control.get(f"{server.base_url}/memory")).json()
            return memory

        rounds = [await one_round() for _ in range(4)]
    print(f"{server.kind}: server memory after each round of 500 connections: {rounds}")
    # Nothing the library made for 500 streams outlives them, whatever the server keeps (what
    # comes and goes, the keep-alive ticks for one, moves the count by a few dozen; one object
    # left per five streams would add 100 a round).
    counts = [memory["library_objects"] for memory in rounds]
    assert max(counts) - min(counts) < 100, rounds
    # The first two rounds warm up allocators and the servers' caches; later rounds must not
    # keep growing.
    first, last = rounds[1], rounds[3]
    if server.kind not in NATIVE_RSS_DRIFT_KINDS:
        assert last["rss"] - first["rss"] < 8 * 1024 * 1024, rounds


async def test_1000_forced_reconnects_during_a_steady_publish_lose_nothing(server: Server) -> None:
    """A client that drops its connection 1,000 times, resuming with Last-Event-ID, sees every event once."""
    channel = unique("steady")
    total_reconnects = 1000
    received: list[int] = []
    async with httpx.AsyncClient(timeout=10) as client, httpx.AsyncClient(timeout=10) as publisher:
        stop = anyio.Event()
        published = 0

        async def publish_steadily() -> None:
            nonlocal published
            while not stop.is_set():
                response = await publisher.post(
                    f"{server.base_url}/publish",
                    json={"channel": channel, "values": list(range(published, published + 5))},
                )
                assert response.status_code == 200
                published += 5
                await anyio.sleep(0.005)  # pacing the load (about 1,000 events/s at most)

        last_id: str | None = None
        async with anyio.create_task_group() as tg:
            async with open_events(client, f"{server.base_url}/events/{channel}") as reader:
                await reader.next()
                tg.start_soon(publish_steadily)
                event = await reader.next_not_keep_alive()
                received.append(event.json())
                last_id = event.id
            for _ in range(total_reconnects):
                headers = {"last-event-id": str(last_id)}
                target = published  # catch up with what was published when connecting
                async with open_events(
                    client, f"{server.base_url}/events/{channel}", headers=headers
                ) as reader:
                    assert (await reader.next()).event == "stream-open"
                    while True:  # at least one event per connection, then drop it
                        event = await reader.next_not_keep_alive()
                        assert event.event != "stream-reset"
                        received.append(event.json())
                        last_id = event.id
                        if received[-1] >= target - 1:
                            break
            stop.set()
        # Drain what was published up to the end, once more through a resume.
        async with open_events(
            client, f"{server.base_url}/events/{channel}", headers={"last-event-id": str(last_id)}
        ) as reader:
            await reader.next()
            while received[-1] != published - 1:
                received.append((await reader.next_not_keep_alive()).json())
    lost = sorted(set(range(published)) - set(received))
    print(f"{server.kind}: {total_reconnects} reconnects, {published} events, lost {len(lost)}")
    assert received == list(range(published))
