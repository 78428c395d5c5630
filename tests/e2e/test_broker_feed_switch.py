"""The feed's bulk subscribing: paced, and none once the whole feed comes through its pattern.

Against a real private redis-server, on asyncio and trio; a relay
(tests/support/relay.py) between one broker and the engine holds the
engine's replies on the feed's connection where a test needs them held.
"""

from __future__ import annotations

import anyio
import pytest

from eventstream import BrokerStatistics, EventStream, RedisBroker
from eventstream._redis._feedconn import FeedConnection
from eventstream.testing import open_stream

from ..support.helpers import broker_of, follower_of, receive_data, wait_until
from ..support.redis_engine import RedisEngine
from ..support.relay import Relay

pytestmark = pytest.mark.anyio

#: The relay's connection that carries a broker's feed (the feed connects first).
FEED = 0


def feed_name(prefix: str, channel: str) -> bytes:
    return f"{prefix}|ch:0:{channel}".encode()


def numsub(engine: RedisEngine, prefix: str, channel: str) -> int:
    return int(engine.command("PUBSUB", "NUMSUB", feed_name(prefix, channel).decode()).split()[1])


def numpat(engine: RedisEngine) -> int:
    return int(engine.command("PUBSUB", "NUMPAT"))


def feed(stream: EventStream) -> BrokerStatistics:
    statistics = stream.statistics().broker
    assert statistics is not None
    return statistics


def feed_connection(stream: EventStream) -> FeedConnection:
    connection = follower_of(stream).interest._connection
    assert isinstance(connection, FeedConnection)
    return connection


async def test_a_bulk_subscribe_goes_a_command_at_a_time_each_after_the_engine_answered(
    via_relay: Relay, engine: RedisEngine, prefix: str
) -> None:
    # 3,000 channels followed at once take three SUBSCRIBEs; the second is sent only once
    # the engine's replies to the first were read (held here): a feed message published
    # meanwhile waits behind one command's replies, not behind all of them (a whole feed
    # taken or given up: 50,000 channels).
    broker = RedisBroker(
        f"redis://127.0.0.1:{via_relay.port}", key_prefix=prefix, feed_channels_max=None, request_timeout=30
    )
    stream = EventStream(broker=broker)
    bulk = [f"bulk-{n}" for n in range(3000)]
    with anyio.fail_after(60):
        async with stream:
            via_relay.hold(FEED, replies_only=True)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: broker_of(stream).prepare(bulk, resuming=False))

                async def first_answered() -> bool:
                    return via_relay.holds_reply(FEED) and subscriptions(engine) == 1024

                await wait_until(first_answered)
                assert len(feed_connection(stream)._book._sent) == 1  # the others not sent
                via_relay.release()
            assert subscriptions(engine) == 3000
            assert len(feed_connection(stream)._book.confirmed) == 3000


def subscriptions(engine: RedisEngine) -> int:
    """The channels the engine's clients subscribe to (the feed's is the only one that does)."""
    listing = engine.command("CLIENT", "LIST").decode()
    return sum(int(field[4:]) for field in listing.split() if field.startswith("sub="))


async def test_once_the_whole_feed_comes_through_the_pattern_new_channels_cost_no_request(
    engine: RedisEngine, prefix: str
) -> None:
    # Past feed_channels_max, streams on new channels ask nothing of the engine to follow
    # them (the pattern carries their feed): no request, and no wait for one.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, feed_channels_max=4))
    publisher = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30):
        async with stream, publisher:
            await broker_of(stream).prepare([f"first-{n}" for n in range(5)], resuming=False)
            assert feed(stream).feed_whole
            requests = feed(stream).feed_requests
            for n in range(10):
                async with open_stream(stream(f"new-{n}")) as response:
                    await publisher.publish_event(f"new-{n}", {"data": n})
                    assert [event.json() for event in await receive_data(response, 1)] == [n]
            assert feed(stream).feed_requests == requests
            assert numpat(engine) == 1
            assert numsub(engine, prefix, "new-0") == 0


async def test_a_channel_followed_while_the_feed_is_shared_again_is_subscribed_before_the_pattern_goes(
    via_relay: Relay, engine: RedisEngine, prefix: str
) -> None:
    # Back under half of feed_channels_max, the process subscribes to each channel again
    # (the engine's confirmations held here) before it gives the pattern up. A stream on
    # a new channel opened meanwhile is followed through the pattern without a request,
    # and then subscribed too: its events still come once the pattern is gone.
    broker = RedisBroker(
        f"redis://127.0.0.1:{via_relay.port}",
        key_prefix=prefix,
        feed_channels_max=4,
        feed_linger=0.0,
        request_timeout=30,
    )
    stream = EventStream(broker=broker)
    publisher = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(60):
        async with stream, publisher:
            many = [f"many-{n}" for n in range(5)]
            await broker_of(stream).prepare(many, resuming=False)
            assert feed(stream).feed_whole
            async with open_stream(stream(many[0])) as keep:
                assert keep.status == 200
                via_relay.hold(FEED, replies_only=True)
                # Four channels given up, as the end of their linger does: with one channel
                # followed, the process subscribes to it again, then gives the pattern up.
                follower_of(stream).interest.drop(many[1:])
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follower_of(stream).interest.unsubscribe, many[1:])

                    async def sharing() -> bool:
                        return numsub(engine, prefix, many[0]) == 1 and via_relay.holds_reply(FEED)

                    await wait_until(sharing)
                    async with open_stream(stream("late")) as late:
                        assert late.status == 200
                        via_relay.release()

                        async def shared() -> bool:
                            return not feed(stream).feed_whole and numpat(engine) == 0

                        await wait_until(shared)
                        assert numsub(engine, prefix, "late") == 1
                        await publisher.publish_event("late", {"data": "after"})
                        assert [event.json() for event in await receive_data(late, 1)] == ["after"]
