"""``statistics().slowest``: the subscribers most behind, found when asked (publishes do not compute it)."""

from __future__ import annotations

import anyio
import pytest
import trio.testing

from eventstream import EventStream, SubscriberLag
from eventstream._core import HistoryEntry, Hub
from eventstream._observe._lag import SLOWEST_LIMIT

pytestmark = pytest.mark.anyio

_TRIO_MOCK_CLOCK = pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")


def _entry(channel: str, seq: int) -> HistoryEntry:
    wire = f"data: {seq}\nid: e-{seq}\n\n".encode()
    return HistoryEntry(channel, seq, seq - 1, f"e-{seq}", f"e-{seq - 1}", wire, wire.index(b"id:"), 0.0)


@pytest.mark.parametrize("anyio_backend", ["asyncio", _TRIO_MOCK_CLOCK])
async def test_the_left_behind_come_first_with_how_long_then_the_most_queued(anyio_backend: object) -> None:
    hub = Hub(buffer_size=4, send_timeout=300.0)
    reader = hub.subscribe(["news"])
    paused = hub.subscribe(["news", "sport"])
    paused.sending = True  # its connection is held in a send: its client does not read
    lagging = hub.subscribe(["news"])  # reads, but has not taken the latest two yet
    assert hub.statistics().slowest == ()  # nobody holds anything
    seq = 0
    while paused.stalled is None:
        seq += 1
        assert hub.put("news", _entry("news", seq)) is None
        reader.take()
        if len(lagging.queue) > 1:
            lagging.take()
    elapsed = 5.0 if anyio_backend != "asyncio" else 0.05  # the mock clock jumps; asyncio's runs
    await anyio.sleep(elapsed)  # the time being measured, not a wait for something
    slowest = hub.statistics().slowest
    assert [lag.channels for lag in slowest] == [("news", "sport"), ("news",)]  # not the reader
    behind, queued = slowest
    assert behind.left_behind
    assert behind.queued == 4
    assert behind.seconds_behind >= elapsed
    if anyio_backend != "asyncio":
        assert behind.seconds_behind == elapsed  # the mock clock: exactly the time slept
    assert queued == SubscriberLag(("news",), len(lagging.queue), 0.0, False)
    # It catches up: it is no longer listed.
    paused.sending = False
    paused.take()
    assert hub.rejoin(paused) is True
    assert [lag.channels for lag in hub.statistics().slowest] == [("news",)]


async def test_at_most_the_limit_most_queued_first() -> None:
    hub = Hub(buffer_size=64, send_timeout=300.0)
    subscribers = [hub.subscribe([f"c{number}"]) for number in range(SLOWEST_LIMIT + 5)]
    for number, _subscriber in enumerate(subscribers):
        for seq in range(1, number + 2):  # subscriber n holds n + 1 entries
            assert hub.put(f"c{number}", _entry(f"c{number}", seq)) is None
    slowest = hub.statistics().slowest
    assert len(slowest) == SLOWEST_LIMIT
    assert [lag.queued for lag in slowest] == list(range(SLOWEST_LIMIT + 5, 5, -1))
    assert slowest[0].channels == (f"c{SLOWEST_LIMIT + 4}",)


async def test_an_event_stream_lists_a_client_that_does_not_read() -> None:
    """Through EventStream.statistics(): a subscriber that took nothing shows its queued entries."""
    stream = EventStream(buffer_size=8, keep_alive_interval=None)
    subscriber = stream._hub.subscribe(["orders"])
    try:
        for number in range(3):
            await stream.publish_event("orders", {"data": number})
        (lag,) = stream.statistics().slowest
        assert lag == SubscriberLag(("orders",), 3, 0.0, False)
    finally:
        stream._hub.unsubscribe(subscriber)
    assert stream.statistics().slowest == ()
