"""The Redis broker's interest-based feed, against a real private redis-server, on asyncio and trio.

Each ``EventStream`` stands for a process (its own hub, feed connection and
copy of history). A process takes in the feed of the channels it serves only:
what it took in is read from its own counters (``statistics().broker``) and
from the engine (``PUBSUB NUMSUB``, ``PUBSUB CHANNELS``).
"""

from __future__ import annotations

import contextlib

import anyio
import pytest

from eventstream import BrokerStatistics, EventStream, RedisBroker, ServerSentEvent
from eventstream.testing import open_stream

from ..support.helpers import broker_of, follower_of, receive_data, wait_until
from ..support.redis_engine import RedisEngine

pytestmark = pytest.mark.anyio


def make_stream(engine: RedisEngine, prefix: str, **options: object) -> EventStream:
    return EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, **options))  # type: ignore[arg-type]


def feed_channel(prefix: str, channel: str) -> str:
    return f"{prefix}|ch:0:{channel}"


def numsub(engine: RedisEngine, prefix: str, *channels: str) -> dict[str, int]:
    """The engine's count of subscribers to each channel's feed."""
    lines = engine.command("PUBSUB", "NUMSUB", *(feed_channel(prefix, c) for c in channels)).split()
    counts = {name.decode(): int(count) for name, count in zip(lines[::2], lines[1::2], strict=True)}
    return {channel: counts[feed_channel(prefix, channel)] for channel in channels}


def feed_channels_on_engine(engine: RedisEngine, prefix: str) -> set[str]:
    """The channels whose feed anyone is subscribed to, under ``prefix``."""
    start = feed_channel(prefix, "")
    names = engine.command("PUBSUB", "CHANNELS", f"{start}*").decode().split()
    return {name[len(start) :] for name in names}


def feed(stream: EventStream) -> BrokerStatistics:
    stats = stream.statistics().broker
    assert stats is not None
    return stats


async def test_a_process_takes_in_only_the_feed_of_the_channels_it_serves(
    engine: RedisEngine, prefix: str
) -> None:
    a, b = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with a, b, open_stream(a("user-a")) as on_a, open_stream(b("user-b")) as on_b:
            await a.wait_subscribers(1, "user-a")
            await b.wait_subscribers(1, "user-b")
            counts = numsub(engine, prefix, "user-a", "user-b", "nobody")
            assert counts == {"user-a": 1, "user-b": 1, "nobody": 0}
            assert feed_channels_on_engine(engine, prefix) == {"user-a", "user-b"}
            for n in range(10):
                for channel in ("user-a", "user-b", "nobody"):
                    await a.publish_event(channel, {"data": n})
            assert [e.json() for e in await receive_data(on_a, 10)] == list(range(10))
            assert [e.json() for e in await receive_data(on_b, 10)] == list(range(10))
            # Each took in its own channel's 10 events, and nothing of the others'.
            assert (feed(a).feed_messages, feed(a).feed_channels) == (10, 1)
            assert (feed(b).feed_messages, feed(b).feed_channels) == (10, 1)
            assert feed(a).feed_requests == feed(b).feed_requests == 1


async def test_a_process_without_subscribers_takes_in_no_feed(engine: RedisEngine, prefix: str) -> None:
    idle, busy = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with idle, busy, open_stream(busy("news")) as response:
            await busy.wait_subscribers(1, "news")
            for n in range(20):
                await idle.publish_event("news", {"data": n})  # (publishing needs no feed)
            await receive_data(response, 20)
            assert feed(idle) == BrokerStatistics(
                feed_channels=0,
                feed_messages=0,
                feed_dropped=0,
                feed_unchecked=0,
                events_filled=0,
                feed_requests=0,
                feed_connected=True,
                engine_answering=True,
                feed_whole=False,
            )
            assert feed(busy).feed_messages == 20


async def test_a_channel_left_without_subscribers_is_unsubscribed_after_its_linger(
    engine: RedisEngine, prefix: str
) -> None:
    watcher = make_stream(engine, prefix)
    stream = make_stream(engine, prefix, feed_linger=0.0, check_interval=0.05)
    with anyio.fail_after(20):
        async with watcher, stream, open_stream(watcher("news")) as watching:
            async with open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                await stream.publish_event("news", {"data": "one"})
                assert [e.json() for e in await receive_data(response, 1)] == ["one"]
            await stream.wait_subscribers(0, "news")

            async def unsubscribed() -> bool:
                return numsub(engine, prefix, "news")["news"] == 1 and feed(stream).feed_channels == 0

            await wait_until(unsubscribed)  # (the watcher's subscription stays)
            taken_in = feed(stream).feed_messages
            for n in range(5):
                await stream.publish_event("news", {"data": n})
            watched = await receive_data(watching, 6)
            assert [e.json() for e in watched] == ["one", *range(5)]
            assert feed(stream).feed_messages == taken_in == 1
            assert feed(stream).feed_requests == 2  # one subscribe, one unsubscribe
            # Followed again: its history is read from the engine.
            first = watched[0].id
            assert first is not None
            async with open_stream(stream("news"), headers={"last-event-id": first}) as response:
                replay = await receive_data(response, 5)
            assert [e.id for e in replay] == [e.id for e in watched[1:]]
            assert feed(stream).feed_channels == 1


async def test_a_subscriber_back_within_the_linger_costs_no_subscribe(
    engine: RedisEngine, prefix: str
) -> None:
    stream = make_stream(engine, prefix, feed_linger=60.0, check_interval=0.05)
    with anyio.fail_after(20):
        async with stream:
            for n in range(5):
                async with open_stream(stream("flapping")) as response:
                    await stream.wait_subscribers(1, "flapping")
                    await stream.publish_event("flapping", {"data": n})
                    assert [e.json() for e in await receive_data(response, 1)] == [n]
                await stream.wait_subscribers(0, "flapping")
            assert numsub(engine, prefix, "flapping") == {"flapping": 1}
            assert (feed(stream).feed_requests, feed(stream).feed_channels) == (1, 1)


async def test_a_first_subscriber_during_a_burst_gets_every_event_after_its_position_once_in_order(
    engine: RedisEngine, prefix: str
) -> None:
    total = 400
    publisher, watcher = make_stream(engine, prefix), make_stream(engine, prefix)
    joiners = [make_stream(engine, prefix) for _ in range(3)]
    with anyio.fail_after(30):
        async with publisher, watcher, joiners[0], joiners[1], joiners[2]:
            async with open_stream(watcher("burst")) as watching:
                await watcher.wait_subscribers(1, "burst")
                seen: list[ServerSentEvent] = []
                got: list[list[ServerSentEvent]] = [[] for _ in joiners]

                async def publish() -> None:
                    for n in range(total):
                        await publisher.publish_event("burst", {"data": n})

                async def join(index: int, after: int) -> None:
                    # The first subscriber of its process, while the burst goes on.
                    async def published_enough() -> bool:
                        return len(seen) >= after

                    await wait_until(published_enough)
                    position = seen[after - 1].id
                    assert position is not None
                    headers = {"last-event-id": position}
                    async with open_stream(joiners[index]("burst"), headers=headers) as response:
                        got[index] = await receive_data(response, total - after)

                async def watch() -> None:
                    while len(seen) < total:
                        seen.extend(await receive_data(watching, 1))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(watch)
                    for index, after in enumerate((20, 150, 300)):
                        tg.start_soon(join, index, after)
                    tg.start_soon(publish)
            for joiner in joiners:
                assert feed(joiner).feed_channels == 1
    ids = [e.id for e in seen]
    assert [e.json() for e in seen] == list(range(total))
    for events, after in zip(got, (20, 150, 300), strict=True):
        assert [e.id for e in events] == ids[after:]
        assert [e.json() for e in events] == list(range(after, total))


async def test_a_fresh_stream_on_a_followed_channel_asks_nothing_of_the_engine(
    engine: RedisEngine, prefix: str
) -> None:
    # Without Last-Event-ID, a stream starts from now: on a channel the process
    # follows, its feed brings what is newer, and no read goes to the engine.
    # A stream that resumes still catches up (it may come from a process ahead).
    stream = make_stream(engine, prefix, check_interval=3600)
    with anyio.fail_after(20):
        async with stream, open_stream(stream("busy")) as first:
            await stream.wait_subscribers(1, "busy")
            await stream.publish_event("busy", {"data": 1})
            seen = await receive_data(first, 1)
            broker = broker_of(stream)
            reader = broker._parts.reader
            assert reader is not None
            reads: list[int] = []
            original = reader.read_many

            async def counted(requests, count):  # type: ignore[no-untyped-def]
                reads.append(len(requests))
                return await original(requests, count)

            follower = broker._parts.follower
            assert follower is not None
            follower._preparer._read_many = counted
            async with open_stream(stream("busy")) as fresh:
                await stream.wait_subscribers(2, "busy")
                await stream.publish_event("busy", {"data": 2})
                assert [e.json() for e in await receive_data(fresh, 1)] == [2]
            assert reads == []
            position = seen[0].id
            assert position is not None
            async with open_stream(stream("busy"), headers={"last-event-id": position}) as resumed:
                assert [e.json() for e in await receive_data(resumed, 1)] == [2]
            assert reads == [1]


async def test_a_channel_with_subscribers_that_lost_its_feed_is_followed_again(
    engine: RedisEngine, prefix: str
) -> None:
    # The moment between a stream's preparation and its subscription holds an
    # await (presence's join): if its channel was dropped then, the periodic
    # check follows it again. Here the drop is made by hand.
    stream = make_stream(engine, prefix, check_interval=0.05)
    with anyio.fail_after(20):
        async with stream, open_stream(stream("orphan")) as response:
            await stream.wait_subscribers(1, "orphan")
            follower = follower_of(stream)
            del follower.loaded["orphan"]
            follower.history.forget("orphan")
            follower.interest.drop(["orphan"])
            await follower.interest.unsubscribe(["orphan"])

            async def followed_again() -> bool:
                return "orphan" in follower.loaded and numsub(engine, prefix, "orphan")["orphan"] == 1

            await wait_until(followed_again)
            await stream.publish_event("orphan", {"data": "found"})
            assert [e.json() for e in await receive_data(response, 1)] == ["found"]


def numpat(engine: RedisEngine) -> int:
    return int(engine.command("PUBSUB", "NUMPAT"))


async def test_past_feed_channels_max_the_whole_feed_comes_through_one_pattern_and_back(
    engine: RedisEngine, prefix: str
) -> None:
    # Past 4 channels followed, one pattern carries the whole feed (the exact
    # subscriptions are given up); below 2 again, a subscription each. Events
    # published across both changes reach every stream once, in order.
    stream = make_stream(engine, prefix, feed_channels_max=4, feed_linger=0.0, check_interval=0.05)
    publisher = make_stream(engine, prefix)
    channels = [f"many-{n}" for n in range(6)]
    with anyio.fail_after(30):
        async with stream, publisher, contextlib.AsyncExitStack() as all_streams:
            responses = {}
            opened: dict[str, contextlib.AsyncExitStack] = {}
            for channel in channels:
                opened[channel] = await all_streams.enter_async_context(contextlib.AsyncExitStack())
                responses[channel] = await opened[channel].enter_async_context(open_stream(stream(channel)))
                await stream.wait_subscribers(1, channel)
                await publisher.publish_event(channel, {"data": 0})
            assert feed(stream).feed_whole
            assert numpat(engine) == 1
            assert set(numsub(engine, prefix, *channels).values()) == {0}
            for channel in channels:
                await publisher.publish_event(channel, {"data": 1})
            for channel, response in responses.items():
                assert [e.json() for e in await receive_data(response, 2)] == [0, 1], channel
            # All but one leave: below 2 channels followed, one subscription each again.
            for channel in reversed(channels[1:]):  # (last opened, first closed)
                await opened.pop(channel).aclose()

            async def shared_again() -> bool:
                return not feed(stream).feed_whole and numpat(engine) == 0

            await wait_until(shared_again)
            assert numsub(engine, prefix, channels[0]) == {channels[0]: 1}
            await publisher.publish_event(channels[0], {"data": 2})
            assert [e.json() for e in await receive_data(responses[channels[0]], 1)] == [2]
