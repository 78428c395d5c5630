"""Subscribers left behind: out of the publishes' walk, still counted, caught up, cut on time.

A subscriber that takes nothing is *left behind*: publishes skip it and its
connection catches up from history once its send ends. Publishes must not
visit it at all (a stream of non-reading clients then costs them nothing),
yet its channels stay subscribed (the Redis broker forgets channels nobody
is subscribed to), it must catch up exactly when it missed something, and it
must be cut ``send_timeout`` after it was left behind with no publish to
notice (even from a send the server shields, as hypercorn's trio worker does).
"""

from __future__ import annotations

import gc
from typing import Any

import anyio
import pytest
import trio.testing

from eventstream import EventStream
from eventstream._core import Channel, HistoryEntry, Hub, Subscriber
from eventstream.types import Message, Scope

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio

_TRIO_MOCK_CLOCK = pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")


def _entry(channel: str, seq: int) -> HistoryEntry:
    wire = f"data: {seq}\nid: e-{seq}\n\n".encode()
    return HistoryEntry(channel, seq, seq - 1, f"e-{seq}", f"e-{seq - 1}", wire, wire.index(b"id:"), 0.0)


def _seqs(subscriber: Subscriber) -> list[int]:
    return [entry.seq for entry in subscriber.queue]


def _channel(hub: Hub, name: str) -> Channel:
    state = hub._channels[name]
    assert isinstance(state, Channel)
    return state


async def test_a_lone_subscriber_costs_its_channels_no_object_until_it_is_left_behind() -> None:
    hub = Hub(buffer_size=4, send_timeout=30.0)
    names = [f"new-{index}" for index in range(64)]
    gc.collect()
    before = len(gc.get_objects())
    paused = hub.subscribe(names)
    # No container per channel (a flood of streams on new channels would bring its
    # full collections sooner): the subscriber, its channels' tuple, its queue.
    assert len(gc.get_objects()) - before < 16
    paused.sending = True
    seq = 0
    while paused.stalled is None:  # it holds more, then it is left behind
        seq += 1
        assert hub.put("new-0", _entry("new-0", seq)) is None
    # Out of every channel's walk, still subscribed to each.
    assert all(paused not in _channel(hub, name) for name in names)
    assert dict(hub.statistics().channels) == dict.fromkeys(names, 1)
    assert hub.put("new-1", _entry("new-1", 1)) is None
    assert _seqs(paused) == [1, 2, 3, 4]
    assert paused.skipped
    # A second subscriber joins a channel: the publishes visit it, not the one left behind.
    reader = hub.subscribe(["new-1"])
    assert hub.put("new-1", _entry("new-1", 2)) is None
    assert (_seqs(reader), _seqs(paused)) == ([2], [1, 2, 3, 4])
    paused.sending = False
    paused.take()
    assert hub.rejoin(paused) is True
    assert hub.put("new-1", _entry("new-1", 3)) is None
    assert (_seqs(reader), _seqs(paused)) == ([2, 3], [3])
    hub.take_vacated()  # (noted from the first call on)
    hub.unsubscribe(paused)
    assert dict(hub.statistics().channels) == {"new-1": 1}
    assert set(hub.take_vacated()) == set(names) - {"new-1"}
    # Alone there again, live: it gets what is published, then leaves the channel vacated.
    assert hub.put("new-1", _entry("new-1", 4)) is None
    assert _seqs(reader) == [2, 3, 4]
    hub.unsubscribe(reader)
    assert (dict(hub.statistics().channels), set(hub.take_vacated())) == ({}, {"new-1"})


async def test_a_channel_s_subscribers_in_the_order_they_came_whether_it_had_one_or_more() -> None:
    hub = Hub(buffer_size=4, send_timeout=30.0)
    first = hub.subscribe(["room"])
    assert hub.subscriber_count("room") == 1
    assert hub.statistics().channels == {"room": 1}
    second, third = hub.subscribe(["room"]), hub.subscribe(["room"])
    assert hub._members("room") == [first, second, third]
    hub.unsubscribe(first)
    lone = hub.subscribe(["hall"])
    hub.end_channel("hall")
    assert lone.closed
    assert hub.subscriber_count("hall") == 0
    assert hub.put("room", _entry("room", 1)) is None
    assert (_seqs(first), _seqs(second), _seqs(third)) == ([], [1], [1])


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def test_a_left_behind_subscriber_is_out_of_the_walk_still_counted_and_holds_buffer_size() -> None:
    hub = Hub(buffer_size=4, send_timeout=30.0)
    reader = hub.subscribe(["news"])
    paused = hub.subscribe(["news", "sport"])
    paused.sending = True  # its connection is held in a send: its client does not read
    seq = 0
    while paused.stalled is None:  # not waited for: it holds more, then it is left behind
        seq += 1
        assert hub.put("news", _entry("news", seq)) is None
        assert _seqs(reader) == [seq]
        reader.take()
    assert seq > 4
    # It keeps the oldest buffer_size entries (once history lets the others go, it alone would
    # hold them): the publish that left it behind and those it trimmed are for the catch-up.
    assert _seqs(paused) == [1, 2, 3, 4]
    assert paused.skipped
    # Out of both channels' walks, still subscribed to both ("sport" has nobody else).
    assert paused not in _channel(hub, "news")
    assert paused not in _channel(hub, "sport")
    assert set(_channel(hub, "news")) == {reader}  # the walk
    assert _channel(hub, "news").behind == {paused: None}  # apart, still subscribed
    assert hub.subscriber_count("news") == 2
    assert hub.subscriber_count("sport") == 1
    assert dict(hub.statistics().channels) == {"news": 2, "sport": 1}
    # Publishes pass it by: the reader gets them, its queue stays as it was.
    for later in range(seq + 1, seq + 40):
        assert hub.put("news", _entry("news", later)) is None
        assert hub.put("sport", _entry("sport", later)) is None
        assert _seqs(reader) == [later]
        reader.take()
    assert _seqs(paused) == [1, 2, 3, 4]
    # Its send ends: it writes what it held, catches up from history, and is live again.
    paused.sending = False
    assert [entry.seq for entry in paused.take()] == [1, 2, 3, 4]
    # Proven as it would have been with every entry it held (seq - 1): those were trimmed.
    assert paused.proven is (seq - 1 >= hub.prove_at)
    assert hub.rejoin(paused) is True
    assert paused in _channel(hub, "news")
    assert paused in _channel(hub, "sport")
    assert hub.put("sport", _entry("sport", 1000)) is None
    assert _seqs(paused) == [1000]
    assert dict(hub.statistics().channels) == {"news": 2, "sport": 1}
    hub.unsubscribe(paused)
    assert dict(hub.statistics().channels) == {"news": 1}
    assert hub.statistics().subscribers_dropped == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", _TRIO_MOCK_CLOCK])
async def test_a_left_behind_subscriber_catches_up_exactly_when_something_was_published() -> None:
    # Left behind by a publish that waited for it (it holds that publish's entry): rejoining
    # asks for a catch-up only if something was published on one of its channels since, the
    # other channel too. (Without history, a catch-up for nothing would be a stream-reset.)
    hub = Hub(buffer_size=2, send_timeout=30.0)
    subscriber = hub.subscribe(["a", "b"])
    seq = 0

    async def leave_behind() -> None:
        nonlocal seq
        while True:
            seq += 1
            full = hub.put("a", _entry("a", seq))
            if full is not None:
                assert full == [subscriber]
                break
        await hub.wait_for_room(full)  # it takes nothing for stall_after: it is left behind
        assert subscriber.stalled is not None
        assert not subscriber.skipped
        assert _seqs(subscriber) == list(range(seq - 2, seq + 1))
        assert hub.subscriber_count("b") == 1  # only left-behind subscribers: still subscribed

    with anyio.fail_after(10):
        await leave_behind()
        assert len(subscriber.take()) == 3
        assert hub.rejoin(subscriber) is False  # it missed nothing
        await leave_behind()
        for _ in range(3):  # on its other channel; marked once, not visited
            seq += 1
            assert hub.put("b", _entry("b", seq)) is None
        assert subscriber.skipped
        assert _seqs(subscriber) == list(range(seq - 5, seq - 2))
        assert len(subscriber.take()) == 3
        assert hub.rejoin(subscriber) is True
        await leave_behind()
        subscriber.take()
        assert hub.rejoin(subscriber) is False  # the earlier publishes no longer count


@pytest.mark.parametrize("anyio_backend", ["asyncio", _TRIO_MOCK_CLOCK])
@pytest.mark.parametrize("shielded", [False, True])
async def test_an_overdue_left_behind_subscriber_is_cut_at_its_deadline_with_nothing_published(
    shielded: bool, anyio_backend: Any
) -> None:
    # A client that never reads: its response is held in a send (shielded from cancellation,
    # as hypercorn's trio worker does, on trio; asyncio cancels the task whatever the scope).
    # Nothing is published once it is left behind, and yet its subscription is dropped
    # send_timeout after its last progress, and what it held is let go.
    send_timeout = 0.5
    stream = EventStream(buffer_size=4, send_timeout=send_timeout, keep_alive_interval=None)
    released = anyio.Event()
    bodies: list[bytes] = []

    async def receive() -> Message:
        await released.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        body = message.get("body", b"")
        if b"\nid: " in body:  # a live event's (not stream-open): the client reads no more
            bodies.append(body)
            with anyio.CancelScope(shield=shielded):
                await released.wait()

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run, scope, receive, send, "c")
            try:
                await stream.wait_subscribers(1, "c")
                (subscriber,) = stream._hub._subscribers
                count = 0
                while subscriber.stalled is None:
                    await stream.publish_event("c", {"data": count})
                    count += 1
                left_at = subscriber.stalled
                assert len(subscriber.queue) == 4  # buffer_size: not the up to 512 it held
                await wait_until(lambda: _is(stream.subscriber_count("c"), 0), timeout=10)
                dropped_at = anyio.current_time()
                stats = stream.statistics()
                assert stats.subscribers_dropped == 1
                assert stats.events_published == count  # nothing published since it was left behind
                assert subscriber.closed
                assert subscriber.queue == []  # it will write none of it
                assert dropped_at >= left_at + send_timeout
                if anyio_backend != "asyncio":  # trio's mock clock: at the deadline, to a poll
                    assert dropped_at - left_at == pytest.approx(send_timeout, abs=0.05)
                    if shielded:  # its response is still held in its send: the watch dropped it
                        assert not subscriber.finished
            finally:
                released.set()  # (a shielded send would otherwise outlive a failure)
    # It was held in its first live send, and wrote nothing after: what it held was let go.
    assert len(bodies) == 1
