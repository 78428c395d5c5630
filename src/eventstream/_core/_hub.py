"""The fan-out core: channels, subscribers and their bounded buffers (the policies: see the package)."""

from __future__ import annotations

import math
import types
from collections.abc import Awaitable, Callable, Iterable, KeysView
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.lowlevel

from .._base import check_count, check_seconds
from .._observe._counters import FEED_LAG_BUCKETS, Histogram
from .._observe._lag import slowest_subscribers
from ._done import DONE
from ._store import HistoryEntry
from ._subscriber import Channel, EventStreamStatistics, Subscriber, clock

if TYPE_CHECKING:
    from .._observe._trace import Tracing

SlowConsumerPolicy = Literal["disconnect", "drop-oldest", "block"]
_YIELD_EVERY = 32


_POLICIES = ("disconnect", "drop-oldest", "block")
#: The longest a publish waits for a full subscriber that takes nothing (disconnect policy).
STALL_AFTER = 0.1
#: How many times ``buffer_size`` (at least 32) entries a subscriber not yet known to read may hold.
OVERFILL = 16

__all__ = ["Hub", "SlowConsumerPolicy"]


class Hub:
    """Channels and their subscribers. Not thread-safe: use it from one event loop."""

    def __init__(
        self, *, buffer_size: int, send_timeout: float, policy: SlowConsumerPolicy = "disconnect"
    ) -> None:
        if policy not in _POLICIES:
            raise ValueError(f"slow_consumer must be one of {', '.join(_POLICIES)}, not {policy!r}")
        self.policy = policy
        check_count("buffer_size", buffer_size)
        check_seconds("send_timeout", send_timeout)
        self.buffer_size = buffer_size
        self.send_timeout: float = float(send_timeout)
        #: How long a publish waits for a full subscriber that takes nothing.
        self.stall_after: float = min(self.send_timeout, STALL_AFTER)
        #: The most entries a subscriber not yet proven to read holds (see the package's docstring).
        self.overfill: int = max(buffer_size, _YIELD_EVERY) * OVERFILL
        #: What it must hold when its connection takes to be proven (see Subscriber.prove_at).
        self.prove_at: int = 2 * (buffer_size + _YIELD_EVERY)
        #: Every channel somebody is subscribed to (live or left behind), by name: the
        #: subscriber itself while it is alone there and live (most channels of a
        #: per-user stream), else a :class:`Channel`. A channel costs no object of its
        #: own until a second subscriber comes or its subscriber is left behind: under
        #: a flood of streams on new channels, tens of thousands a second live as long
        #: as their stream, long enough to reach the garbage collector's oldest
        #: generation (and set off its full passes, which hold up every delivery).
        self._channels: dict[str, Channel | Subscriber] = {}
        #: ``subscribed(channel)``: somebody is subscribed to ``channel`` (live or left behind), so
        #: its name was checked then. The dict's own membership test: every publish asks it.
        self.subscribed: Callable[[str], bool] = self._channels.__contains__
        #: Channels whose last subscriber left, noted once asked for (see take_vacated). (A dict
        #: of None: one of strings only is left out of the garbage collector's passes.)
        self._vacated: dict[str, None] | None = None
        self._subscribers: set[Subscriber] = set()
        # Counters, read by eventstream.prometheus and eventstream.otel (written here only).
        #: Events published (one per event and channel).
        self.published: int = 0
        #: Events written to clients, once per client: live ones, and those a client left behind
        #: caught up on from history (not those replayed to a client that resumed with Last-Event-ID).
        self.delivered: int = 0
        #: Subscribers disconnected for taking nothing (the slow-consumer policy).
        self.dropped: int = 0
        #: Events dropped from full buffers (drop-oldest).
        self.events_dropped: int = 0
        #: Times a subscriber was left behind by publishes, to catch up from history.
        self.left_behind: int = 0
        self._since_yield = 0
        self.closed: bool = False
        #: tracing: what makes spans (``eventstream.otel.trace``), ``None`` while tracing is off.
        self.tracing: Tracing | None = None
        #: metrics: a shared broker's feed lag, from publish to delivery here (see watch_feed_lag).
        self.feed_lag: Histogram | None = None

    def watch_feed_lag(self) -> Histogram:
        """metrics: have a shared broker's feed observe its lag from now on; idempotent."""
        if self.feed_lag is None:
            self.feed_lag = Histogram(FEED_LAG_BUCKETS)
        return self.feed_lag

    # -- subscriptions ---------------------------------------------------

    def subscribe(self, channels: Iterable[str]) -> Subscriber:
        """Register a new subscriber on ``channels`` (already validated, no duplicates).

        Raises:
            anyio.ClosedResourceError: the hub has been closed.
        """
        if self.closed:
            raise anyio.ClosedResourceError("the event stream has been closed")
        subscriber = Subscriber(tuple(channels))
        known = self._channels
        for name in subscriber.channels:
            state = known.get(name)
            if state is None:
                known[name] = subscriber  # alone there
            elif isinstance(state, Channel):
                state[subscriber] = None
            else:
                channel = known[name] = Channel()
                channel[state] = None  # (the first comes first: a publish visits it first)
                channel[subscriber] = None
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber, now: float | None = None) -> None:
        """Remove ``subscriber`` from its channels; its stream ends after its queue. Idempotent.

        ``now`` is the event loop's clock, read here when needed and not given
        (it must be given outside a task: in a loop callback, anyio cannot tell
        which loop runs).
        """
        if subscriber not in self._subscribers:
            return
        self._subscribers.discard(subscriber)
        known = self._channels
        for name in subscriber.channels:
            state = known.get(name)
            if isinstance(state, Channel):
                state.remove(subscriber)
                if state or state.behind is not None:
                    continue
            elif state is not subscriber:
                continue
            del known[name]
            if self._vacated is not None:
                self._vacated[name] = None
        stalled = subscriber.stalled if subscriber.stalled is not None else subscriber.full_since
        if stalled is not None:
            if now is None:
                now = anyio.current_time()
            if now >= stalled + self.send_timeout:
                self.dropped += 1  # disconnected for taking nothing
                # Its connection is cancelled (or stuck in a send the server shields, until
                # its client goes): what it holds would never be written.
                subscriber.queue.clear()
        subscriber.end()

    def drop_if_overdue(self, subscriber: Subscriber, now: float | None = None) -> None:
        """Unsubscribe ``subscriber`` if it was left behind, or found full without taking since
        (``drop-oldest``; not yet proven to read), ``send_timeout`` ago or more.

        Its connection is cancelled at that deadline, and its disconnect watch
        calls this then (and when its client is gone): this frees the
        subscription when the server does not let the connection's ``send``
        be cancelled (hypercorn's trio worker shields socket writes).
        Publishes do not check: they no longer visit a left-behind
        subscriber. ``now`` is the event loop's clock, read here when not
        given.
        """
        stalled = subscriber.stalled if subscriber.stalled is not None else subscriber.full_since
        if stalled is None:
            return
        if now is None:
            now = anyio.current_time()
        if now >= stalled + self.send_timeout:
            self.unsubscribe(subscriber, now)

    def end_channel(self, channel: str) -> None:
        """End every subscription to ``channel``, live or left behind (each stream after its queue)."""
        for subscriber in self._members(channel):
            self.unsubscribe(subscriber)

    def count_delivered(self, count: int) -> None:
        self.delivered += count

    def reopen(self) -> None:
        """Take new subscribers again (a stream entered after it was closed)."""
        self.closed = False

    def subscriber_count(self, channel: str | None = None) -> int:
        """Subscribers of ``channel``, or of the whole hub when it is ``None``."""
        if channel is None:
            return len(self._subscribers)
        return self._count(channel)

    def take_vacated(self) -> dict[str, None]:
        """The channels whose last subscriber left since the last call (as keys), noted from the
        first call on (a shared broker's follower asks: it stops following channels left idle)."""
        vacated, self._vacated = self._vacated or {}, {}
        return vacated

    def channel_names(self) -> KeysView[str]:
        """The channels somebody is subscribed to (live or left behind): a live view."""
        return self._channels.keys()

    def _members(self, channel: str) -> list[Subscriber]:
        """The subscribers of ``channel``, live or left behind."""
        state = self._channels.get(channel)
        if state is None:
            return []
        return state.members() if isinstance(state, Channel) else [state]

    def _count(self, channel: str) -> int:
        """How many subscribers ``channel`` has, live or left behind."""
        state = self._channels.get(channel)
        if state is None:
            return 0
        return state.count() if isinstance(state, Channel) else 1

    def _channel(self, name: str) -> Channel | None:
        """The :class:`Channel` of ``name``, made for its lone subscriber if it has none yet."""
        state = self._channels.get(name)
        if state is None or isinstance(state, Channel):
            return state
        channel = self._channels[name] = Channel()
        channel[state] = None
        return channel

    def statistics(self) -> EventStreamStatistics:
        return EventStreamStatistics(
            subscribers=len(self._subscribers),
            channels=types.MappingProxyType({name: self._count(name) for name in self._channels}),
            events_published=self.published,
            events_delivered=self.delivered,
            subscribers_dropped=self.dropped,
            events_dropped=self.events_dropped,
            slowest=slowest_subscribers(self._subscribers, clock),
        )

    def close(
        self, grace: float | None = None, final: HistoryEntry | None = None, now: float | None = None
    ) -> list[Subscriber]:
        """Refuse new subscribers and end every subscription after its queue is written.

        ``final`` is added to every queue that has room; connections still
        writing ``grace`` seconds later are cancelled. Returns the subscribers
        it ended. ``now`` is the event loop's clock (given by a signal
        handler's loop callback, where anyio cannot read it).
        """
        ended = list(self._subscribers)
        self.closed = True
        deadline = math.inf
        if now is None and (grace is not None or any(s.stalled is not None for s in ended)):
            now = anyio.current_time()
        if grace is not None and now is not None:
            deadline = now + grace
        for subscriber in ended:
            if final is not None and len(subscriber.queue) < self.buffer_size and subscriber.stalled is None:
                subscriber.queue.append(final)  # best effort: a full buffer skips it
            self.unsubscribe(subscriber, now)
            subscriber.close_deadline = deadline
            scope = subscriber.cancel_scope
            if scope is not None:
                scope.deadline = min(scope.deadline, deadline)
        return ended

    # -- publishing ------------------------------------------------------

    def publish(self, channel: str, payload: HistoryEntry) -> Awaitable[None]:
        """Put ``payload`` in the queue of every subscriber of ``channel``; return what to await.

        The awaitable returns once every subscriber that is still connected
        holds it, or was left behind (see the package's docstring: it then
        catches up from history). Cancelling it while it waits for full
        subscribers leaves the payload queued for them. Most publishes have
        nothing to wait for and no checkpoint due: they get an awaitable that
        is done at once, and build no coroutine.
        """
        full = self.put(channel, payload)
        if full:
            return self.wait_for_room(full)
        # A publish yields (and checks for cancellation) only every _YIELD_EVERY publishes:
        # a burst reaches the buffers before their connections wake, each wakes once for many
        # events, and a cancelled publisher stops within _YIELD_EVERY publishes. (A checkpoint
        # costs about as much as a delivery to one subscriber.)
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            return anyio.lowlevel.checkpoint()
        return DONE

    def put(self, channel: str, payload: HistoryEntry) -> list[Subscriber] | None:
        """Put ``payload`` in the queue of every subscriber of ``channel``; never waits.

        Returns the subscribers whose buffer was already full (it now holds
        one entry more), or None: the caller awaits :meth:`wait_for_room` for
        them before it puts more, as :meth:`publish` does. For a batch taken
        in at once (the broker's feed): it yields to subscribers once per
        batch, so each wakes once for the batch.
        """
        self.published += 1
        state = self._channels.get(channel)
        if state is None:
            return None  # nobody listens: constant time, whatever else is connected
        members: Channel | tuple[Subscriber]
        if isinstance(state, Channel):
            if state.unmarked is not None:
                state.mark_skipped()  # left behind since the last publish: this one skips them
            members = state  # (its live subscribers) those left behind catch up from history
        else:
            members = (state,)  # alone there, and live
        capacity = self.buffer_size
        full: list[Subscriber] | None = None
        left: list[tuple[Subscriber, float]] | None = None
        now: float | None = None  # read once per publish, when needed: it costs as much as a delivery
        for subscriber in members:
            queue = subscriber.queue
            if len(queue) >= capacity:
                if self.policy == "drop-oldest":
                    del queue[0]  # drop-oldest only: at most buffer_size entries to move
                    self.events_dropped += 1
                    subscriber.reset_pending = True
                    if subscriber.full_since is None:  # cut send_timeout from now unless it takes
                        if now is None:
                            now = clock(subscriber)
                        self._cut_unless_taken(subscriber, now)
                elif subscriber.proven or not subscriber.sending or self.policy == "block":
                    # Known to read, or its connection has not run since it was woken (it is
                    # not held in a send): the publish waits for it.
                    if full is None:
                        full = [subscriber]
                    else:
                        full.append(subscriber)
                else:  # held in a send, not yet known to read: it holds more, nobody waits for it
                    if now is None:
                        now = clock(subscriber)
                    since = subscriber.full_since
                    if since is None:
                        subscriber.prove_at = self.prove_at
                        self._cut_unless_taken(subscriber, now)  # (unless its send ends)
                    elif now - since >= self.stall_after or len(queue) >= self.overfill:
                        # Left behind (once the walk is over: it must not change the set it
                        # walks); should its send end after all, its next take proves it.
                        if left is None:
                            left = [(subscriber, since)]
                        else:
                            left.append((subscriber, since))
                        continue
            queue.append(payload)
            waiter = subscriber.waiter
            if waiter is not None:
                waiter.wake()
        if left is not None:
            for subscriber, since in left:
                # It keeps the oldest buffer_size entries and catches up the rest from history:
                # once history lets them go it alone would hold them, until it is cut (up to
                # ``overfill`` entries per non-reading client, for send_timeout).
                queue = subscriber.queue
                subscriber.prove_at = max(0, subscriber.prove_at - (len(queue) - capacity))
                del queue[capacity:]  # (the prove_at above: its next take still proves it)
                self._leave_behind(subscriber, since, skipped=True)  # this publish skips it
        return full

    def _cut_unless_taken(self, subscriber: Subscriber, now: float) -> None:
        # Found full at ``now``: its connection is cut send_timeout from now unless it takes
        # from its queue first (took() lifts it), whether or not a later publish finds it
        # full again; then it counts as dropped (see unsubscribe).
        subscriber.full_since = now
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, now + self.send_timeout)

    async def wait_for_room(self, full: list[Subscriber]) -> None:
        """Wait until each full subscriber's connection has taken its queue.

        Under the default policy, give up on one that takes nothing for
        ``stall_after`` seconds (it is left behind). Cancellation: the
        entries stay queued.
        """
        capacity = self.buffer_size
        block = self.policy == "block"
        now = anyio.current_time()
        progress = {subscriber: (subscriber.taken, now) for subscriber in full}
        while True:
            for subscriber in list(progress):
                taken, since = progress[subscriber]
                if subscriber.closed or len(subscriber.queue) <= capacity or subscriber.stalled is not None:
                    del progress[subscriber]
                elif subscriber.taken != taken:
                    progress[subscriber] = (subscriber.taken, now)
                elif not block and now - since >= self.stall_after:
                    del progress[subscriber]
                    self._leave_behind(subscriber, since)
            if not progress:
                return
            event = anyio.Event()
            for subscriber in progress:
                if subscriber.room is None:
                    subscriber.room = [event]
                else:
                    subscriber.room.append(event)
            deadline = math.inf if block else min(since for _, since in progress.values()) + self.stall_after
            try:
                with anyio.move_on_at(deadline):
                    await event.wait()
            finally:
                for subscriber in progress:  # those that did not wake it still hold it
                    room = subscriber.room
                    if room is not None and event in room:
                        room.remove(event)
            now = anyio.current_time()

    def _leave_behind(self, subscriber: Subscriber, since: float, *, skipped: bool = False) -> None:
        # Publishes no longer visit it; its connection catches up from history once it
        # has written its queue, or is cancelled send_timeout after its last progress
        # (then its watch drops the subscription, even from a send the server shields).
        # ``skipped``: the publish under way skips it.
        subscriber.stalled = since
        self.left_behind += 1  # metrics
        subscriber.skipped = subscriber.skipped or skipped
        for name in subscriber.channels:
            channel = self._channel(name)  # (alone there: publishes must skip it too)
            if channel is not None:
                channel.leave_behind(subscriber, skipped)
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, since + self.send_timeout)

    def progressed(self, subscriber: Subscriber) -> None:
        """A left-behind subscriber's connection took its queue: it is cut ``send_timeout``
        after this progress (not after the one it was left behind at), unless it rejoins."""
        now = clock(subscriber)
        subscriber.stalled = now
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = min(subscriber.close_deadline, now + self.send_timeout)

    def rejoin(self, subscriber: Subscriber) -> bool:
        """Called by a left-behind subscriber's connection once its queue is written.

        Publishes visit it again. Returns whether anything was published on
        its channels since it was left behind (the connection must then catch
        up from history). Does not await, so no event can fall between the
        catch-up and the live queue.
        """
        subscriber.stalled = None
        for name in subscriber.channels:
            channel = self._channels.get(name)
            if isinstance(channel, Channel):  # (a lone subscriber there is live already)
                channel.rejoin(subscriber)
        skipped, subscriber.skipped = subscriber.skipped, False
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = subscriber.close_deadline
        return skipped
