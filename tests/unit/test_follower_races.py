"""The Redis broker's follower where two of its paths meet, with an engine stood in by a function.

The races here cannot be ordered through a real engine (both sides wait on
the same connection), so the engine's reads are a function the test gates;
the follower, its history, its interest and the hub are the real ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from functools import partial

import anyio
import pytest

from eventstream import BrokerError
from eventstream._core import Hub, origin_id
from eventstream._redis._follow import EngineFollower
from eventstream._redis._history import SharedHistory
from eventstream._redis._interest import FeedInterest
from eventstream._redis._layout import CLUSTER_EPOCH, ClusterLayout
from eventstream._redis._prepare import WOKEN_AT_ONCE
from eventstream._redis._reads import Read, Reads
from eventstream._redis._wire import EngineEntry
from tests.support.helpers import wait_until

pytestmark = pytest.mark.anyio

EPOCH = CLUSTER_EPOCH
CHANNEL = "room"


def entry(seq: int) -> EngineEntry:
    prev = origin_id(EPOCH) if seq == 1 else f"{EPOCH}-{seq - 1}"
    return EngineEntry(EPOCH, seq, f"{EPOCH}-{seq}", prev, 1_765_046_400_000, b"data: %d\n" % seq)


class Engine:
    """A channel's history as the engine holds it; a first read may be held at a gate."""

    def __init__(self, count: int) -> None:
        self.entries = [entry(n) for n in range(1, count + 1)]
        self.gate: anyio.Event | None = None
        self.held = anyio.Event()  # a first read waits at the gate
        self.read_together = anyio.Event()  # a connection's first read was answered
        self.together_gate: anyio.Event | None = None  # holds the reads together, when set
        self.together_held = anyio.Event()  # reads together wait at that gate

    async def read(self, channel: str, after: int, count: int) -> tuple[str, int, list[EngineEntry]]:
        if self.gate is not None and after == -1 and count > 1:  # a first read (not a check's)
            self.held.set()
            await self.gate.wait()
        await anyio.lowlevel.checkpoint()  # a round trip
        newest = self.entries[-1].seq if self.entries else 0
        if after < 0:
            return EPOCH, newest, self.entries[-count:]
        return EPOCH, newest, [e for e in self.entries if e.seq > after][:count]

    async def read_many(self, requests: Sequence[tuple[str, int]], count: int) -> list[Read | BrokerError]:
        if self.together_gate is not None:
            self.together_held.set()
            await self.together_gate.wait()
        await anyio.lowlevel.checkpoint()
        newest = self.entries[-1].seq if self.entries else 0
        answers: list[Read | BrokerError]
        answers = [(EPOCH, newest, self.entries[-count:]) for _channel, _after in requests]
        self.read_together.set()
        return answers


class Feed:
    """Subscriptions confirmed at once, or once :attr:`gate` is set (when there is one)."""

    def __init__(self) -> None:
        self.gate: anyio.Event | None = None
        self.held = anyio.Event()  # a subscribe waits at the gate

    async def subscribe(self, names: object) -> None:
        if self.gate is not None:
            self.held.set()
            await self.gate.wait()

    async def unsubscribe(self, names: object) -> None:
        pass


def follower_on(engine: Engine, hub: Hub, *, linger: float = 5, feed: Feed | None = None) -> EngineFollower:
    history = SharedHistory(EPOCH, max_events=256, max_bytes=1 << 20, max_age=300)
    interest = FeedInterest(layout=ClusterLayout("t:"), engine="fake", whole_above=None)
    interest.bind(feed or Feed())  # type: ignore[arg-type]
    return EngineFollower(
        hub, history, engine.read, engine="fake", read_many=engine.read_many, interest=interest, linger=linger
    )


async def test_a_first_read_answered_while_its_channel_is_reloaded_is_not_taken_in_twice() -> None:
    # The engine's numbering of a followed channel went back (its keys were
    # deleted): the feed reads it again as a new channel, holding the follower's
    # lock. A connection's first read of it, sent meanwhile, is answered after:
    # it was taken in a second time (KeyError: a 500 to the client, or the end
    # of the broker's task group when the periodic check had asked for it).
    engine = Engine(5)
    hub = Hub(buffer_size=256, send_timeout=5)
    before = hub.subscribe((CHANNEL,))
    follower = follower_on(engine, hub)
    with anyio.fail_after(10):
        await follower.prepare([CHANNEL])
        assert follower.history.last_seq[CHANNEL] == 5
        engine.entries = [entry(1)]  # the keys were deleted; the numbering starts again
        engine.gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.receive, [(CHANNEL, engine.entries[0])])  # the feed's message
            await engine.held.wait()  # the reload's read is in flight, under the lock
            tg.start_soon(follower.prepare, [CHANNEL])  # a new connection on the channel
            await engine.read_together.wait()
            engine.gate.set()
    assert CHANNEL in follower.loaded
    assert follower.history.last_seq[CHANNEL] == 1  # the engine's numbering, taken in once
    assert before.closed  # its stream ended: its client resumes and gets stream-reset
    after = hub.subscribe((CHANNEL,))
    engine.entries.append(entry(2))
    with anyio.fail_after(10):
        await follower.receive([(CHANNEL, engine.entries[-1])])
    assert [kept.seq for kept in after.queue] == [2]


async def test_a_first_read_answered_while_the_feed_holds_the_lock_is_taken_in_once_it_is_free() -> None:
    # A connection's read is answered while the follower's lock is held (the
    # feed taking in a message): the connection waits for the lock, then takes
    # its read in.
    engine = Engine(3)
    follower = follower_on(engine, Hub(buffer_size=256, send_timeout=5))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, follower.lock:
            tg.start_soon(follower.prepare, [CHANNEL])
            await engine.read_together.wait()

            async def waiting_for_the_lock() -> bool:
                return follower.lock.statistics().tasks_waiting == 1

            await wait_until(waiting_for_the_lock)
            assert CHANNEL not in follower.loaded  # answered, not taken in: the lock is held
    assert CHANNEL in follower.loaded
    assert follower.history.last_seq[CHANNEL] == 3


async def test_a_first_read_that_cannot_take_the_lock_in_time_fails_and_a_later_one_reads_again() -> None:
    # Held past the connection's time limit, the lock is given up: the
    # connection fails (its client gets 503 and retries) and nothing of its
    # read stays behind; the next connection on the channel reads it anew.
    engine = Engine(3)
    follower = follower_on(engine, Hub(buffer_size=256, send_timeout=5))
    released = anyio.Event()
    held = anyio.Event()

    async def hold_the_lock() -> None:  # (the feed taking in a message, for long)
        async with follower.lock:
            held.set()
            await released.wait()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold_the_lock)
            await held.wait()
            with pytest.raises(BrokerError, match="no answer within"):
                await follower.prepare([CHANNEL], within=0.2)
            released.set()
        assert CHANNEL not in follower.loaded
        engine.entries.append(entry(4))
        await follower.prepare([CHANNEL])
    assert follower.history.last_seq[CHANNEL] == 4


async def test_a_connection_queued_behind_a_slow_read_fails_by_its_own_deadline() -> None:
    # The reads of new channels go one request at a time; a request led by a
    # caller with a longer time limit (the periodic check's) is slow to come
    # back. A connection queued behind it fails by its own deadline, not that
    # request's, and its channel is left to be read again.
    engine = Engine(3)
    engine.together_gate = anyio.Event()
    follower = follower_on(engine, Hub(buffer_size=256, send_timeout=5))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(partial(follower.prepare, ["slow"], within=30))
                await engine.together_held.wait()
                with pytest.raises(BrokerError, match="no answer within"):
                    await follower.prepare([CHANNEL], within=0.2)
                assert CHANNEL not in follower.loaded
            finally:
                engine.together_gate.set()  # (the slow request comes back only now)
        assert "slow" in follower.loaded
        engine.together_gate = None
        await follower.prepare([CHANNEL])
    assert follower.history.last_seq[CHANNEL] == 3


async def test_connections_answered_together_take_their_reads_in_a_few_per_pass_of_the_loop() -> None:
    # A flood of new streams: the reads of dozens of connections come back in one
    # answer. Woken all at once, they took their reads in (and answered their
    # clients) in one pass of the event loop, and the feed of the channels already
    # followed waited behind all of them. They are woken WOKEN_AT_ONCE at a time,
    # a pass of the loop apart: a task that runs once per pass (as the feed's
    # reader does, woken by its socket) sees them finish a few at a time.
    engine = Engine(0)
    engine.together_gate = anyio.Event()
    follower = follower_on(engine, Hub(buffer_size=256, send_timeout=5))
    connections = 48
    started = done = 0
    seen: list[int] = []

    async def connection(name: str) -> None:
        nonlocal started, done
        started += 1  # (and queued, before this step of the task ends)
        await follower.prepare([name])
        done += 1

    async def all_queued() -> bool:
        return started == connections

    async def once_per_pass() -> None:
        while done < connections:
            seen.append(done)
            await anyio.lowlevel.checkpoint()
        seen.append(done)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.prepare, ["first"])  # its request is held: the others queue
            await engine.together_held.wait()
            for n in range(connections):
                tg.start_soon(connection, f"c{n}")
            await wait_until(all_queued)
            gate, engine.together_gate = engine.together_gate, None
            tg.start_soon(once_per_pass)
            gate.set()
    assert all(f"c{n}" in follower.loaded for n in range(connections))
    steps = [after - before for before, after in itertools.pairwise(seen)]
    # At most one group, and part of another on trio (which orders a pass's tasks at random).
    assert max(steps) < 2 * WOKEN_AT_ONCE + 2, steps
    assert len([step for step in steps if step]) >= connections // (2 * WOKEN_AT_ONCE + 1)


async def test_every_connection_of_an_answered_request_has_its_outcome_before_any_is_woken() -> None:
    # Woken WOKEN_AT_ONCE per pass of the loop, the later connections of a request got
    # their outcome only at their wake: one whose deadline passed in between was failed
    # with "no answer in time", though the engine had answered. Every outcome is set
    # first; only the wakes are spread.
    engine = Engine(0)
    follower = follower_on(engine, Hub(buffer_size=256, send_timeout=5))
    batch = [Reads([(f"c{n}", -1)], math.inf) for n in range(4 * WOKEN_AT_ONCE)]
    seen: list[int] = []  # how many had their outcome, once per pass of the loop
    sent = False

    async def once_per_pass() -> None:
        while not sent:
            seen.append(sum(reads.done for reads in batch))
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(once_per_pass)
            await follower._preparer._send_reads(batch)  # (what the request's sender runs)
            sent = True
    assert set(seen) <= {0, len(batch)}, seen  # none had its outcome, then all had
    assert seen.count(len(batch)) >= 2, seen  # (seen between the wakes, a pass apart)
    assert all(len(reads.results) == 1 and not isinstance(reads.results[0], BrokerError) for reads in batch)


async def test_a_new_epoch_ends_left_behind_streams_too() -> None:
    # The engine lost its data: every open stream ends, so that its client resumes and
    # gets stream-reset. A stream left behind (its client stopped reading) was not
    # ended, and went on later with positions of the old numbering.
    engine = Engine(0)
    hub = Hub(buffer_size=4, send_timeout=30)
    follower = follower_on(engine, hub)
    with anyio.fail_after(10):
        await follower.prepare([CHANNEL])
    reader, paused = hub.subscribe([CHANNEL]), hub.subscribe([CHANNEL])
    paused.sending = True  # held in a send: its client does not read
    seq = 0
    while paused.stalled is None:  # not waited for: it holds more, then it is left behind
        seq += 1
        hub.put(CHANNEL, entry(seq).to_history(CHANNEL, 0.0))
        reader.take()
    follower.new_epoch("another-epoch")
    assert reader.closed
    assert paused.closed
    assert hub.subscriber_count(CHANNEL) == 0
