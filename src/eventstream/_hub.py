"""The fan-out core: channels, subscribers and their bounded buffers.

Each subscriber owns a bounded queue of published entries (the event encoded
once, shared by every subscriber) and one reusable :class:`~._backends.Waiter`
that its connection sleeps on. A publish appends the entry to every
subscriber's queue and wakes the connections that wait; nothing is created
per event or per wait. What happens to a subscriber whose queue is full is the
slow-consumer policy:

``disconnect`` (default)
    The publish waits for full subscribers, all together, *as long as they
    make progress* (their connection takes what is queued, so honest readers
    get backpressure and lose nothing). A subscriber that takes nothing for
    ``stall_after`` seconds (``min(send_timeout, 0.1)``) is *left behind*:
    publishes stop waiting for it and skip it (the events are in history),
    and its connection, once it has written what it holds, catches up from
    history (``stream-reset`` if history no longer has every event it missed)
    and joins the live stream again. One left behind for ``send_timeout``
    seconds without taking anything is disconnected: its connection is
    cancelled, the client reconnects and resumes from history.

    Until a subscriber is *proven* to read, publishes do not wait for it
    while its connection is held in a send (a client that never reads holds
    it there for good): it holds more entries instead, up to ``stall_after``
    seconds' worth or ``16 * max(buffer_size, 32)``, then it is left behind;
    unless that send ends, its connection is cancelled ``send_timeout`` after
    its queue was first found full, whether more is published or not.
    It is proven once its connection takes from a queue that grew well past
    ``buffer_size`` while a send held it: that send ended, so its client
    reads (a transport that takes a few writes before it fills up proves
    nothing). Publishes wait for proven subscribers as described above, and
    for any whose connection is not in a send (it has not run since it was
    woken).

    The trade-off: a new client that never reads costs publishers nothing
    (and a client that reads, then stops, at most ``stall_after`` once), not
    ``send_timeout`` per publish, so a stream of new non-reading clients
    cannot throttle publishing; a reading client that pauses longer than
    ``stall_after`` (a slow link), or before it is proven for longer than
    its extra entries last, catches up from history instead of holding the
    publisher, and gets ``stream-reset`` if the pause outlasts history. A
    subscriber not yet proven may hold up to ``16 * max(buffer_size, 32)``
    entries (references to entries shared by every subscriber).
``drop-oldest``
    The oldest event in the full buffer is dropped to make room, and the
    client gets ``stream-reset`` before its next events. Publishers never wait.
``block``
    Pure backpressure: the publish waits, without deadline, until every
    subscriber has room. One stalled client stalls the channel.

Cancellation of a waiting publish leaves its entry queued for the subscribers
it was offered to (the queue may then hold a few entries beyond
``buffer_size``: at most one per publish in flight).
"""

from __future__ import annotations

import math
import types
from collections.abc import Awaitable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

import anyio
import anyio.lowlevel

from ._history import HistoryEntry

if TYPE_CHECKING:
    from ._backends import Waiter
    from ._grip import GripProxyStatistics

SlowConsumerPolicy = Literal["disconnect", "drop-oldest", "block"]
_YIELD_EVERY = 32


class _Done:
    """An awaitable that is done at once: awaiting it neither yields nor builds a coroutine."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return _EXHAUSTED


# An iterator that is already exhausted stays so: every await of _DONE shares it.
_EXHAUSTED: Generator[None, None, None] = (None for _ in ())
next(_EXHAUSTED, None)
_DONE: Final = _Done()
_POLICIES = ("disconnect", "drop-oldest", "block")
#: The longest a publish waits for a full subscriber that takes nothing (disconnect policy).
STALL_AFTER = 0.1
#: How many times ``buffer_size`` (at least 32) entries a subscriber not yet known to read may hold.
OVERFILL = 16

__all__ = ["CancelScopeLike", "EventStreamStatistics", "Hub", "Subscriber"]


class CancelScopeLike(Protocol):
    """What the hub needs of a connection's cancel scope (anyio's, or trio's on trio)."""

    deadline: float

    def cancel(self) -> None:
        """Cancel the connection now."""


@dataclass(frozen=True)
class EventStreamStatistics:
    """A snapshot of an :class:`~eventstream.EventStream`'s state and counters."""

    #: Open subscriptions (one per streaming connection).
    subscribers: int
    #: Subscribers per channel, for channels that have any.
    channels: Mapping[str, int]
    #: Calls to ``publish_event`` (one per event and channel).
    events_published: int
    #: Events written to clients, counted once per client.
    events_delivered: int
    #: Subscribers disconnected because their buffer stayed full past ``send_timeout``.
    subscribers_dropped: int
    #: Events dropped from full buffers under the ``drop-oldest`` policy.
    events_dropped: int = 0
    #: Counters per GRIP proxy, when GRIP is configured.
    grip: tuple[GripProxyStatistics, ...] = field(default=())


class Subscriber:
    """One connection's subscription: its channels and its queue of encoded events.

    The hub appends to :attr:`queue` and wakes :attr:`waiter`; the connection
    takes everything queued with :meth:`take`.
    """

    __slots__ = (
        "_room",
        "cancel_scope",
        "channels",
        "close_deadline",
        "closed",
        "finished",
        "full_since",
        "prove_at",
        "proven",
        "queue",
        "reset_pending",
        "sending",
        "skipped",
        "stalled",
        "taken",
        "waiter",
    )

    def __init__(self, channels: tuple[str, ...]) -> None:
        self.channels: tuple[str, ...] = channels
        #: Entries to write, oldest first (at most ``buffer_size``, plus one per publish in
        #: flight). A list, not a deque: an empty one is 56 bytes, not 600, and the
        #: connection renders it whole, then clears it (the same list for life).
        self.queue: list[HistoryEntry] = []
        #: Set by the connection while it reads; woken after every append.
        self.waiter: Waiter | None = None
        #: No more entries will come: the stream ends once the queue is written.
        self.closed: bool = False
        #: Set by the connection once its response is over (shutdown waits for it).
        self.finished: bool = False
        #: Set by the connection; the hub moves its deadline to disconnect it.
        self.cancel_scope: CancelScopeLike | None = None
        #: The deadline set when the stream was closed (shutdown grace).
        self.close_deadline: float = math.inf
        #: Events were dropped from the buffer (drop-oldest): send stream-reset first.
        self.reset_pending: bool = False
        #: When it was left behind (its last progress), while publishes skip it; else None.
        self.stalled: float | None = None
        #: A publish skipped it while it was left behind: catch up from history.
        self.skipped: bool = False
        #: How many times the connection took from the queue (its progress).
        self.taken: int = 0
        #: Set by the connection while it sends what it took (a client that does not read
        #: holds it there).
        self.sending: bool = False
        #: Its client reads: a send that held it while its buffer was full has ended. Until
        #: then, publishes do not wait for it (see the module's docstring).
        self.proven: bool = False
        #: When its buffer was found full while its connection was held in a send and it
        #: is not proven (it holds more meanwhile).
        self.full_since: float | None = None
        #: How many entries it must hold when its connection next takes to be proven: the
        #: send held it while many more were queued (not a transport taking a few writes).
        self.prove_at: int = 0
        self._room: list[anyio.Event] | None = None

    def take(self) -> list[HistoryEntry]:
        """Everything queued, oldest first (empty if nothing is); the queue is emptied."""
        batch = self.queue[:]
        self.took()
        return batch

    def took(self) -> None:
        """The connection has taken the whole queue (it clears it here): wake waiting publishers."""
        if self.full_since is not None:
            self.full_since = None
            if len(self.queue) >= self.prove_at:
                self.proven = True  # the send that held it while its queue grew has ended
            scope = self.cancel_scope
            if scope is not None and self.stalled is None:  # (rejoin() restores a left-behind one's)
                scope.deadline = self.close_deadline
        self.queue.clear()
        self.taken += 1
        if self._room is not None:
            self._wake_publishers()

    def _wake_publishers(self) -> None:
        room, self._room = self._room, None
        for event in room or ():
            event.set()

    def _end(self) -> None:
        self.closed = True
        self._wake_publishers()
        if self.waiter is not None:
            self.waiter.wake()


def _now(subscriber: Subscriber) -> float:
    """The event loop's clock, from the subscriber's waiter when its connection has one.

    A waiter reads its loop's clock directly; ``anyio.current_time()`` first
    finds which library runs (sniffio), which on asyncio cost publishers half
    their time while non-reading clients were left behind on every publish.
    """
    waiter = subscriber.waiter
    return waiter.time() if waiter is not None else anyio.current_time()


class Hub:
    """Channels and their subscribers. Not thread-safe: use it from one event loop."""

    def __init__(
        self, *, buffer_size: int, send_timeout: float, policy: SlowConsumerPolicy = "disconnect"
    ) -> None:
        if policy not in _POLICIES:
            raise ValueError(f"slow_consumer must be one of {', '.join(_POLICIES)}, not {policy!r}")
        self.policy = policy
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, not {buffer_size!r}")
        if not send_timeout > 0 or math.isinf(send_timeout):
            raise ValueError(f"send_timeout must be a positive number of seconds, not {send_timeout!r}")
        self.buffer_size = buffer_size
        self.send_timeout: float = float(send_timeout)
        #: How long a publish waits for a full subscriber that takes nothing.
        self.stall_after: float = min(self.send_timeout, STALL_AFTER)
        #: The most entries a subscriber not yet proven to read holds (see the module's docstring).
        self.overfill: int = max(buffer_size, _YIELD_EVERY) * OVERFILL
        #: What it must hold when its connection takes to be proven (see Subscriber.prove_at).
        self.prove_at: int = 2 * (buffer_size + _YIELD_EVERY)
        self._channels: dict[str, dict[Subscriber, None]] = {}
        self._subscribers: set[Subscriber] = set()
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._events_dropped = 0
        self._left_behind = 0  # metrics: subscribers left behind (read by eventstream.prometheus)
        self._since_yield = 0
        self.closed: bool = False

    # -- subscriptions ---------------------------------------------------

    def subscribe(self, channels: Iterable[str]) -> Subscriber:
        """Register a new subscriber on ``channels`` (already validated, no duplicates).

        Raises:
            anyio.ClosedResourceError: the hub has been closed.
        """
        if self.closed:
            raise anyio.ClosedResourceError("the event stream has been closed")
        subscriber = Subscriber(tuple(channels))
        for channel in subscriber.channels:
            self._channels.setdefault(channel, {})[subscriber] = None
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
        for channel in subscriber.channels:
            members = self._channels.get(channel)
            if members is not None:
                members.pop(subscriber, None)
                if not members:
                    del self._channels[channel]
        stalled = subscriber.stalled if subscriber.stalled is not None else subscriber.full_since
        if stalled is not None:
            if now is None:
                now = anyio.current_time()
            if now >= stalled + self.send_timeout:
                self._dropped += 1  # disconnected for taking nothing
        subscriber._end()

    def drop_if_overdue(self, subscriber: Subscriber, now: float | None = None) -> None:
        """Unsubscribe ``subscriber`` if it was left behind ``send_timeout`` ago or more.

        Its connection is cancelled at that deadline; this also frees the
        subscription when the server does not let the connection's ``send``
        be cancelled (hypercorn's trio worker shields socket writes). ``now``
        is the event loop's clock, read here when not given.
        """
        stalled = subscriber.stalled
        if stalled is None:
            return
        if now is None:
            now = anyio.current_time()
        if now >= stalled + self.send_timeout:
            self.unsubscribe(subscriber, now)

    def count_delivered(self, count: int) -> None:
        self._delivered += count

    def subscriber_count(self, channel: str | None = None) -> int:
        """Subscribers of ``channel``, or of the whole hub when it is ``None``."""
        if channel is None:
            return len(self._subscribers)
        return len(self._channels.get(channel, ()))

    def statistics(self) -> EventStreamStatistics:
        return EventStreamStatistics(
            subscribers=len(self._subscribers),
            channels=types.MappingProxyType({name: len(members) for name, members in self._channels.items()}),
            events_published=self._published,
            events_delivered=self._delivered,
            subscribers_dropped=self._dropped,
            events_dropped=self._events_dropped,
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
        holds it, or was left behind (see the module's docstring: it then
        catches up from history). Cancelling it while it waits for full
        subscribers leaves the payload queued for them. Most publishes have
        nothing to wait for and no checkpoint due: they get an awaitable that
        is done at once, and build no coroutine.
        """
        full = self.put(channel, payload)
        if full:
            return self.wait_for_room(full)
        # A publish yields to other tasks (and checks for cancellation) only every
        # _YIELD_EVERY publishes: a burst then reaches subscribers' buffers before
        # their connections wake, and each connection wakes once for many events
        # instead of once per event. A publisher that never waits still lets the
        # rest of the program run, and a cancelled one stops within _YIELD_EVERY
        # publishes. In between, no check at all: anyio's checkpoint_if_cancelled
        # costs, on asyncio, as much as a delivery to one subscriber (per-user
        # channels publish one event per subscriber).
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            return anyio.lowlevel.checkpoint()
        return _DONE

    def put(self, channel: str, payload: HistoryEntry) -> list[Subscriber] | None:
        """Put ``payload`` in the queue of every subscriber of ``channel``; never waits.

        Returns the subscribers whose buffer was already full (it now holds
        one entry more), or None: the caller awaits :meth:`wait_for_room` for
        them before it puts more, as :meth:`publish` does. For a batch taken
        in at once (the broker's feed): it yields to subscribers once per
        batch, so each wakes once for the batch.
        """
        self._published += 1
        members = self._channels.get(channel)
        if not members:
            return None  # nobody listens: constant time, whatever else is connected
        capacity = self.buffer_size
        full: list[Subscriber] | None = None
        overdue: list[Subscriber] | None = None
        now: float | None = None  # read once per publish, when needed: it costs as much as a delivery
        for subscriber in members:
            if subscriber.stalled is not None:
                subscriber.skipped = True  # left behind: it catches up from history
                if overdue is None:
                    overdue = [subscriber]
                else:
                    overdue.append(subscriber)
                continue
            queue = subscriber.queue
            if len(queue) >= capacity:
                if self.policy == "drop-oldest":
                    del queue[0]  # drop-oldest only: at most buffer_size entries to move
                    self._events_dropped += 1
                    subscriber.reset_pending = True
                elif subscriber.proven or not subscriber.sending or self.policy == "block":
                    # Known to read, or its connection has not run since it was woken (it is
                    # not held in a send): the publish waits for it.
                    if full is None:
                        full = [subscriber]
                    else:
                        full.append(subscriber)
                else:  # held in a send, not yet known to read: it holds more, nobody waits for it
                    if now is None:
                        now = _now(subscriber)
                    since = subscriber.full_since
                    if since is None:
                        subscriber.full_since = now
                        subscriber.prove_at = self.prove_at
                        # Cut send_timeout from now unless its send ends (took() lifts it),
                        # whether or not a later publish finds it full again.
                        scope = subscriber.cancel_scope
                        if scope is not None:
                            scope.deadline = min(scope.deadline, now + self.send_timeout)
                    elif now - since >= self.stall_after or len(queue) >= self.overfill:
                        # Left behind; should its send end after all, its next take proves it.
                        subscriber.skipped = True
                        self._leave_behind(subscriber, since)
                        continue
            queue.append(payload)
            waiter = subscriber.waiter
            if waiter is not None:
                waiter.wake()
        if overdue is not None:
            if now is None:
                now = _now(overdue[0])
            for subscriber in overdue:
                self.drop_if_overdue(subscriber, now)
        return full

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
                if subscriber._room is None:
                    subscriber._room = [event]
                else:
                    subscriber._room.append(event)
            deadline = math.inf if block else min(since for _, since in progress.values()) + self.stall_after
            try:
                with anyio.move_on_at(deadline):
                    await event.wait()
            finally:
                for subscriber in progress:  # those that did not wake it still hold it
                    room = subscriber._room
                    if room is not None and event in room:
                        room.remove(event)
            now = anyio.current_time()

    def _leave_behind(self, subscriber: Subscriber, since: float) -> None:
        # Publishes skip it from now on; its connection catches up from history
        # once it has written its queue, or is cancelled send_timeout after its
        # last progress.
        subscriber.stalled = since
        self._left_behind += 1  # metrics
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, since + self.send_timeout)

    def rejoin(self, subscriber: Subscriber) -> bool:
        """Called by a left-behind subscriber's connection once its queue is written.

        Publishes no longer skip it. Returns whether any were skipped (the
        connection must then catch up from history). Does not await, so no
        event can fall between the catch-up and the live queue.
        """
        subscriber.stalled = None
        skipped, subscriber.skipped = subscriber.skipped, False
        scope = subscriber.cancel_scope
        if scope is not None:
            scope.deadline = subscriber.close_deadline
        return skipped
