"""A feed message taken in by the feed's own task when nothing stands before it (asyncio, trio).

A paced message used to wake the feed's reader, which delivered it a pass of
the event loop later: under a flood of new streams that pass was most of a
millisecond at the median and 4-6 ms at p99. While the reader waits and no
message is held, the inbox offers each message to the follower at once, which
delivers it if it is simply the next of a followed channel; anything else (a
gap, a duplicate, an unknown channel, a held lock, a burst) goes the reader's
way, in order behind what is held. Here the engine is stood in by a function
(the reads are never reached); the inbox, reader, follower, history, interest
and hub are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import anyio
import anyio.lowlevel
import pytest

from eventstream import BrokerError
from eventstream._core import Hub, Subscriber, origin_id
from eventstream._redis._feed import FeedInbox
from eventstream._redis._follow import EngineFollower
from eventstream._redis._history import SharedHistory
from eventstream._redis._interest import FeedInterest
from eventstream._redis._layout import CLUSTER_EPOCH, ClusterLayout, EngineLayout
from eventstream._redis._reader import EngineReader
from eventstream._redis._reads import Read
from eventstream._redis._slots import SlotMap
from eventstream._redis._wire import EngineEntry

pytestmark = pytest.mark.anyio

EPOCH = "e1"
LAYOUT = EngineLayout("direct", 0)


def entry(seq: int, epoch: str = EPOCH) -> EngineEntry:
    prev = origin_id(epoch) if seq == 1 else f"{epoch}-{seq - 1}"
    return EngineEntry(epoch, seq, f"{epoch}-{seq}", prev, 1_765_046_400_000, b"data: %d\n" % seq)


def message(channel: str, seq: int, epoch: str = EPOCH, layout: EngineLayout = LAYOUT) -> tuple[bytes, bytes]:
    # As the publish script sends it: the entry's fields, one per line, then the body.
    e = entry(seq, epoch)
    fields = (e.epoch.encode(), e.seq, e.id.encode(), e.prev_id.encode(), e.published_ms)
    return layout.feed(channel), b"%s\n%d\n%s\n%s\n%d\n" % fields + e.body


async def unread(channel: str, after: int, count: int) -> Read:
    raise AssertionError("nothing here needs a read")


async def unread_many(requests: Sequence[tuple[str, int]], count: int) -> list[Read | BrokerError]:
    raise AssertionError("nothing here needs a read")


def follower_with(
    hub: Hub, *, known: dict[str, int], epoch: str = EPOCH, layout: EngineLayout = LAYOUT
) -> EngineFollower:
    history = SharedHistory(epoch, max_events=256, max_bytes=1 << 20, max_age=300)
    interest = FeedInterest(layout=layout, engine="fake", whole_above=None)
    follower = EngineFollower(
        hub, history, unread, engine="fake", read_many=unread_many, interest=interest, linger=5
    )
    for channel, newest in known.items():  # as a first read installs a channel
        history.replace(channel, [], newest)
        follower.loaded[channel] = None
    return follower


def queued(subscriber: Subscriber) -> list[int]:
    return [int(item.id.rsplit("-", 1)[1]) for item in subscriber.queue]


# -- the inbox ---------------------------------------------------------------------------


async def test_a_message_is_offered_at_once_only_while_the_reader_waits_and_none_is_held() -> None:
    inbox = FeedInbox()
    offered: list[tuple[bytes, bytes]] = []
    take = True

    def direct(message: tuple[bytes, bytes]) -> bool:
        offered.append(message)
        return take

    inbox.direct = direct
    inbox.push((b"ch", b"0"))  # no reader waits: held
    assert offered == []
    assert len(inbox) == 1
    await inbox.wait()
    assert inbox.take(5) == [(b"ch", b"0")]
    async with anyio.create_task_group() as tg:
        tg.start_soon(inbox.wait)
        await anyio.wait_all_tasks_blocked()
        inbox.push((b"ch", b"1"))  # taken in by `direct`: nothing held, the reader not woken
        assert offered == [(b"ch", b"1")]
        assert len(inbox) == 0
        take = False
        inbox.push((b"ch", b"2"))  # refused: held, and the reader woken
        inbox.push((b"ch", b"3"))  # one is held: behind it, not offered
        assert offered == [(b"ch", b"1"), (b"ch", b"2")]
    assert inbox.take(5) == [(b"ch", b"2"), (b"ch", b"3")]


# -- the follower ------------------------------------------------------------------------


async def test_the_next_entry_of_a_followed_channel_is_delivered_at_once() -> None:
    hub = Hub(buffer_size=256, send_timeout=5)
    subscriber = hub.subscribe(["room"])
    follower = follower_with(hub, known={"room": 3})
    assert follower.receive_now("room", entry(4))
    assert queued(subscriber) == [4]
    assert follower.history.last_seq["room"] == 4


@pytest.mark.parametrize(
    ("channel", "feed_entry", "why"),
    [
        ("room", entry(6), "a gap (5 is missing): read from history first"),
        ("room", entry(3), "a duplicate, or the engine's numbering went back"),
        ("room", entry(4, "e2"), "another epoch"),
        ("elsewhere", entry(1), "a channel not followed (its first read may be in flight)"),
    ],
)
async def test_anything_but_the_next_entry_goes_the_reader_s_way_untouched(
    channel: str, feed_entry: EngineEntry, why: str
) -> None:
    hub = Hub(buffer_size=256, send_timeout=5)
    subscriber = hub.subscribe(["room", "elsewhere"])
    follower = follower_with(hub, known={"room": 3})
    assert not follower.receive_now(channel, feed_entry), why
    assert queued(subscriber) == []
    assert follower.history.last_seq == {"room": 3}


async def test_while_the_lock_is_held_the_next_entry_waits_for_the_reader() -> None:
    hub = Hub(buffer_size=256, send_timeout=5)
    subscriber = hub.subscribe(["room"])
    follower = follower_with(hub, known={"room": 3})
    async with follower.lock:  # (a first read's outcome being taken in, a gap being read)
        assert not follower.receive_now("room", entry(4))
    assert queued(subscriber) == []
    await follower.receive([("room", entry(4))])
    assert queued(subscriber) == [4]


def reader_on(layout: EngineLayout = LAYOUT) -> EngineReader:
    return EngineReader(
        None,  # type: ignore[arg-type]  # (no read is made: no command client)
        layout=layout,
        engine="fake",
        check_interval=3600,
        publishing=lambda: 0,
        slots=SlotMap(),
    )


# -- the reader --------------------------------------------------------------------------


#: _GATHER made longer here: three pushes in a row fall within it on any machine.
GATHER = 0.05


def feed_on_room(
    monkeypatch: pytest.MonkeyPatch, buffer_size: int = 256
) -> tuple[Subscriber, EngineFollower, EngineReader, FeedInbox]:
    """One subscriber of a followed channel "room" (nothing published yet), its follower,
    a reader (with GATHER) and the feed's inbox."""
    monkeypatch.setattr("eventstream._redis._reader._GATHER", GATHER)
    hub = Hub(buffer_size=buffer_size, send_timeout=5)
    subscriber = hub.subscribe(["room"])
    return subscriber, follower_with(hub, known={"room": 0}), reader_on(), FeedInbox()


async def test_paced_messages_reach_subscribers_in_the_feed_s_task_and_a_burst_goes_through_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscriber, follower, reader, inbox = feed_on_room(monkeypatch)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.read_feed, inbox, follower)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(1.2 * GATHER)  # (the reader has just started: a burst may be starting)
            inbox.push(message("room", 1))
            assert queued(subscriber) == [1]  # before any other task ran
            await anyio.sleep(1.2 * GATHER)
            inbox.push(message("room", 2))
            assert queued(subscriber) == [1, 2]
            # Three at once (one chunk of the feed's socket): the first at once, the
            # others within GATHER of it go to the reader, and reach the hub after it.
            await anyio.sleep(1.2 * GATHER)
            for seq in (3, 4, 5):
                inbox.push(message("room", seq))
            assert queued(subscriber) == [1, 2, 3]
            assert len(inbox) == 2
            while len(subscriber.queue) < 5:
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    assert queued(subscriber) == [1, 2, 3, 4, 5]
    assert reader.messages == 5


async def test_a_direct_take_that_fails_unforeseen_is_logged_and_left_to_the_reader(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    subscriber, follower, reader, inbox = feed_on_room(monkeypatch)

    def unforeseen(channel: str, feed_entry: EngineEntry) -> bool:
        raise ArithmeticError("nothing foresaw this")

    monkeypatch.setattr(follower, "receive_now", unforeseen)
    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="eventstream"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.read_feed, inbox, follower)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(1.2 * GATHER)
            inbox.push(message("room", 1))  # raised in the feed's task: held for the reader
            assert len(inbox) == 1
            while not subscriber.queue:
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    assert queued(subscriber) == [1]
    assert "could not be taken in at once" in caplog.text
    assert "nothing foresaw this" in caplog.text
    assert inbox.direct is None  # (let go of when the reader stops)


async def test_paced_entries_to_a_client_that_stopped_reading_leave_it_behind_as_through_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client known to read whose send is now held (a slow network): the hub
    # finds it full, and whoever put the entry waits for it (the disconnect
    # policy leaves it behind once it stalls). Delivered in the feed's task, an
    # entry cannot wait there: the reader's next take waits first, and the
    # entries after it go its way. (Not waited for, the queue grew by every entry.)
    subscriber, follower, reader, inbox = feed_on_room(monkeypatch, buffer_size=2)
    subscriber.proven = True
    subscriber.sending = True
    hub = follower.hub
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader.read_feed, inbox, follower)
            await anyio.wait_all_tasks_blocked()
            for seq in range(1, 21):
                await anyio.sleep(1.2 * GATHER)
                inbox.push(message("room", seq))
            while subscriber.stalled is None:
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
    assert hub.left_behind == 1
    assert len(subscriber.queue) <= hub.buffer_size + 1


def test_a_cluster_s_feed_pushed_from_the_client_s_callbacks_goes_through_the_reader() -> None:
    # A cluster's feed comes through valkey-glide's callbacks, which run on the event
    # loop outside any task (under plain asyncio, as uvicorn runs it, nothing there
    # can tell which library runs): its messages are held and taken by the reader,
    # never taken in inside the callback. (Plain asyncio only: the property is its own.)
    layout = ClusterLayout("direct")
    seen: list[list[int]] = []

    async def main() -> None:
        hub = Hub(buffer_size=256, send_timeout=5)
        subscriber = hub.subscribe(["room"])
        follower = follower_with(hub, known={"room": 0}, epoch=CLUSTER_EPOCH, layout=layout)
        reader, inbox = reader_on(layout), FeedInbox()
        loop = asyncio.get_running_loop()
        task = loop.create_task(reader.read_feed(inbox, follower))
        while not inbox._waiting:  # (the reader waits)
            await asyncio.sleep(0)
        assert inbox.direct is None
        pushed = asyncio.Event()

        def deliver() -> None:  # (as the client's callback does)
            inbox.push(message("room", 1, CLUSTER_EPOCH, layout))
            pushed.set()

        loop.call_soon(deliver)
        await asyncio.wait_for(pushed.wait(), 5)
        deadline = loop.time() + 5
        while not subscriber.queue and loop.time() < deadline:
            await asyncio.sleep(0)
        seen.append(queued(subscriber))
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == [[1]]
