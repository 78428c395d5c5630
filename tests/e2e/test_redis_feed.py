"""The feed inbox: the feed's connection hands messages to the feed reader.

Unit tests of the inbox on asyncio and trio, and against a real redis-server:
a broker that stops while its feed is busy stops cleanly (no event-loop
callback error) and a running one still gets every message in order; a batch
from the feed wakes each subscriber once.
"""

from __future__ import annotations

import math

import anyio
import anyio.to_thread
import pytest

from eventstream import EventStream, RedisBroker, ServerSentEvent
from eventstream._backends import current_waiter
from eventstream._redis._feed import FeedInbox
from eventstream._redis._wire import EngineEntry
from eventstream.testing import open_stream

from ..support.redis_engine import RedisEngine

pytestmark = pytest.mark.anyio


async def test_messages_are_taken_in_order_up_to_the_limit() -> None:
    inbox = FeedInbox()
    messages = [(b"ch", b"%d" % number) for number in range(5)]
    for message in messages:
        inbox.push(message)
    await inbox.wait()
    assert inbox.take(3) == messages[:3]
    assert len(inbox) == 2
    assert inbox.take(10) == messages[3:]
    assert inbox.take(10) == []


async def test_a_waiting_reader_wakes_on_the_next_message() -> None:
    inbox = FeedInbox()
    woke = anyio.Event()

    async def reader() -> None:
        await inbox.wait()
        woke.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.wait_all_tasks_blocked()
        assert not woke.is_set()
        inbox.push((b"ch", b"m"))
        with anyio.fail_after(5):
            await woke.wait()
    assert inbox.take(1) == [(b"ch", b"m")]
    # The event was used up: the next wait blocks until the next message.
    with anyio.move_on_after(0.05) as scope:
        await inbox.wait()
    assert scope.cancelled_caught


async def test_a_cancelled_wait_leaves_every_message_for_the_next() -> None:
    inbox = FeedInbox()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await inbox.wait()
    inbox.push((b"ch", b"kept"))
    # A wait is a cancellation point even when a message is waiting already:
    # a loop around it can always be cancelled (a deadline ends it).
    with anyio.CancelScope() as scope:
        scope.cancel()
        await inbox.wait()
    assert scope.cancelled_caught
    with anyio.fail_after(5):
        await inbox.wait()
    assert inbox.take(5) == [(b"ch", b"kept")]


async def test_a_broker_stopping_while_its_feed_is_busy_stops_cleanly(
    engine: RedisEngine, prefix: str
) -> None:
    """Brokers enter and exit while another one publishes without pause.

    Each exit cancels a feed reader with messages arriving. Any event-loop
    callback error would fail the test (the test runner raises it).
    """
    publisher = RedisBroker(engine.url, key_prefix=prefix)
    published = 0
    async with publisher, anyio.create_task_group() as tg:

        async def publish_forever() -> None:
            nonlocal published
            while True:
                await publisher.publish("busy", ServerSentEvent(data=published))
                published += 1

        tg.start_soon(publish_forever)
        for _ in range(20):
            stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
            async with stream, open_stream(stream("busy")) as response:
                first = await response.receive_event()
                while first.event is not None:
                    first = await response.receive_event()
                start = first.json()
                for offset in range(1, 20):
                    event = await response.receive_event()
                    assert event.json() == start + offset
        tg.cancel_scope.cancel()
    assert published > 20


async def test_a_feed_batch_wakes_each_subscriber_once(engine: RedisEngine, prefix: str) -> None:
    """The follower puts a whole feed batch in subscribers' queues before it yields."""
    broker = RedisBroker(engine.url, key_prefix=prefix)
    stream = EventStream(broker=broker)
    async with stream:
        await broker.prepare(["batch"])
        hub = stream._hub
        follower = broker._parts.follower
        assert follower is not None
        subscribers = [hub.subscribe(("batch",)) for _ in range(3)]
        entries = [
            ("batch", EngineEntry(broker.epoch, seq, f"{broker.epoch}-{seq}", "", 0, b"data: %d\n" % seq))
            for seq in range(1, 101)
        ]
        wakes = [0] * len(subscribers)
        received: list[list[int]] = [[] for _ in subscribers]

        async def drain(index: int) -> None:
            subscriber = subscribers[index]
            waiter = current_waiter()
            subscriber.waiter = waiter
            while len(received[index]) < len(entries):
                if subscriber.queue:
                    wakes[index] += 1
                    received[index] += [entry.seq for entry in subscriber.take()]
                else:
                    await waiter.wait(math.inf)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for index in range(len(subscribers)):
                    tg.start_soon(drain, index)
                await anyio.wait_all_tasks_blocked()
                await follower.receive(entries)
        assert received == [list(range(1, 101))] * len(subscribers)
        assert wakes == [1] * len(subscribers)
