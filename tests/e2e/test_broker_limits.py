"""The engine's history keeps at most ``max_bytes`` per channel, against a real redis-server.

Sizes are counted here as every copy of history counts them: an event's wire
bytes with its ``id:`` line, plus 400 bytes of bookkeeping. The engine's
stream is read directly (XRANGE) after each publish. On asyncio and trio.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from eventstream import EventStream, RedisBroker, ServerSentEvent, encode
from eventstream._redis._wire import decode_entry

from ..support.helpers import broker_of
from ..support.redis_engine import RedisEngine, run_redis

pytestmark = pytest.mark.anyio

#: What an entry counts besides its wire bytes (as in MemoryHistory).
OVERHEAD = 400


def make_stream(engine: RedisEngine, prefix: str, **options: object) -> EventStream:
    return EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, **options))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def engine_client(engine: RedisEngine) -> AsyncIterator[Any]:
    """A glide client of the test's own, to read the engine's keys."""
    from glide import GlideClient, GlideClientConfiguration, NodeAddress

    client = await GlideClient.create(GlideClientConfiguration([NodeAddress("127.0.0.1", engine.port)]))
    try:
        yield client
    finally:
        await client.close()


async def kept(client: Any, key: str) -> list[tuple[str, int, int, int]]:
    """The engine's history of a channel: (id, its size, field b, field s) per entry."""
    result = []
    # glide answers a map of entry id to [field, value] pairs, in the stream's order.
    for fields in (await client.custom_command(["XRANGE", key, "-", "+"])).values():
        values = {bytes(name): bytes(value) for name, value in fields}
        entry = decode_entry(values[b"m"])
        size = len(entry.body) + len(f"id: {entry.id}\n\n".encode()) + OVERHEAD
        result.append((entry.id, size, int(values[b"b"]), int(values[b"s"])))
    return result


def text_of(length: int, n: int) -> str:
    return f"{n:04d}" + "x" * max(0, length - 4)


async def test_the_engine_keeps_the_newest_events_within_max_bytes(engine: RedisEngine, prefix: str) -> None:
    max_bytes = 8000
    stream = make_stream(engine, prefix, max_bytes=max_bytes, max_events=1000)
    rng = random.Random(11)
    sizes: dict[str, int] = {}
    order: list[str] = []
    with anyio.fail_after(30):
        async with stream, engine_client(engine) as client:
            for n in range(150):
                text = text_of(rng.randrange(1, 3500), n)
                published = await broker_of(stream).publish("news", ServerSentEvent(text=text))
                order.append(published.id)
                sizes[published.id] = len(encode(ServerSentEvent(text=text, id=published.id))) + OVERHEAD
                entries = await kept(client, f"{prefix}|h:news")
                ids = [entry[0] for entry in entries]
                # The newest events, in order, without holes.
                assert ids == order[len(order) - len(ids) :]
                total = sum(sizes[i] for i in ids)
                assert total <= max_bytes
                # As many as fit: one more (the one before the oldest) would not.
                if len(ids) < len(order):
                    assert total + sizes[order[-len(ids) - 1]] > max_bytes
                # The engine counted each entry as this test does.
                assert [entry[3] for entry in entries] == [entry[1] for entry in entries]
                assert [sizes[i] for i in ids] == [entry[1] for entry in entries]


async def test_bytes_stay_within_the_cap_whatever_trims_by_count(prefix: str) -> None:
    # Small stream nodes, so that MAXLEN ~ trims often, at varying places.
    with run_redis(options=("--stream-node-max-entries", "4")) as own:
        max_bytes = 6000
        stream = make_stream(own, prefix, max_bytes=max_bytes, max_events=6)
        rng = random.Random(5)
        order: list[str] = []
        bound_by = set()
        with anyio.fail_after(30):
            async with stream, engine_client(own) as client:
                for n in range(200):
                    text = text_of(rng.randrange(50, 2500), n)
                    order.append((await broker_of(stream).publish("news", ServerSentEvent(text=text))).id)
                    entries = await kept(client, f"{prefix}|h:news")
                    ids = [entry[0] for entry in entries]
                    assert ids == order[len(order) - len(ids) :]
                    assert sum(entry[1] for entry in entries) <= max_bytes
                    # Each entry starts where the one before it ended.
                    for before, after in itertools.pairwise(entries):
                        assert after[2] == before[2] + before[3]
                    bound_by.add("count" if len(ids) >= 6 else "bytes")
        assert bound_by == {"count", "bytes"}  # both limits were at work


async def test_resume_inside_the_cap_has_no_gap_and_outside_gets_reset(
    engine: RedisEngine, prefix: str
) -> None:
    options = {"max_bytes": 6000, "max_events": 1000}
    first = make_stream(engine, prefix, **options)
    with anyio.fail_after(30):
        async with first:
            for n in range(20):  # ~1,430 bytes each: the engine keeps the last 4
                await first.publish_event("news", {"text": text_of(1000, n)})
            epoch = first._epoch
        assert engine.command("XLEN", f"{prefix}|h:news").strip() == b"4"
        # A process that starts now has only the engine's history.
        later = make_stream(engine, prefix, **options)
        async with later:
            headers = {"last-event-id": f"{epoch}-16"}
            async with open_stream_events(later, headers) as response:
                assert (await response.receive_event()).event == "stream-open"
                replay = [await response.receive_event() for _ in range(4)]
                await later.publish_event("news", {"text": text_of(1000, 20)})
                live = await response.receive_event()
            assert [e.id for e in replay] == [f"{epoch}-{n}" for n in range(17, 21)]
            assert [e.text[:4] for e in [*replay, live]] == ["0016", "0017", "0018", "0019", "0020"]
            async with open_stream_events(later, {"last-event-id": f"{epoch}-16"}) as response:
                # Event 17 is gone now (20 pushed it out): position 16 is outside the cap.
                assert (await response.receive_event()).event == "stream-open"
                assert (await response.receive_event()).event == "stream-reset"


def open_stream_events(stream: EventStream, headers: dict[str, str]) -> Any:
    from eventstream.testing import open_stream

    return open_stream(stream("news"), headers=headers)


async def test_an_event_heavier_than_the_cap_is_refused_and_nothing_is_published(
    engine: RedisEngine, prefix: str
) -> None:
    max_bytes = 3000
    stream = make_stream(engine, prefix, max_bytes=max_bytes)
    with anyio.fail_after(30):
        async with stream, engine_client(engine) as client:
            broker = broker_of(stream)
            await broker.publish("news", ServerSentEvent(text="small"))
            # Exactly the cap, with its own id: accepted, and kept alone.
            fits = ServerSentEvent(text="", id="own-1")
            padding = max_bytes - len(encode(fits)) - OVERHEAD
            fits = ServerSentEvent(text="y" * padding, id="own-1")
            assert len(encode(fits)) + OVERHEAD == max_bytes
            assert (await broker.publish("news", fits)).id == "own-1"
            assert [entry[0] for entry in await kept(client, f"{prefix}|h:news")] == ["own-1"]
            # One byte more: refused before anything is sent.
            heavy = ServerSentEvent(text="y" * (padding + 1), id="own-2")
            with pytest.raises(ValueError, match=r"max_bytes=3000.*not published"):
                await broker.publish("news", heavy)
            with pytest.raises(ValueError, match="max_bytes"):
                await stream.publish_event("news", {"text": "z" * max_bytes})
            assert engine.command("HGET", f"{prefix}|state", "seq:news").strip() == b"2"
            assert [entry[0] for entry in await kept(client, f"{prefix}|h:news")] == ["own-1"]
            after = await broker.publish("news", ServerSentEvent(text="next"))
            assert after.prev_id == "own-1"
            assert after.id == f"{stream._epoch}-3"
