"""The hub's records: a connection's subscription, a channel's members, the statistics.

A :class:`Subscriber` is what the hub (:mod:`._hub`) and a connection share:
the queue the hub appends to, the waiter the connection sleeps on, and the
state of the slow-consumer policy (left behind, proven to read, ...). A
:class:`Channel` holds a channel's subscribers in two sets: the live ones,
which a publish visits, and those left behind, which it does not (they catch
up from history when they rejoin); a channel with a single subscriber, live,
has none (the hub holds the subscriber itself). :class:`EventStreamStatistics` is the
snapshot of the hub's counts and counters that the stream hands out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import anyio

from .._observe._broker import BrokerStatistics
from .._observe._lag import SubscriberLag
from ._store import HistoryEntry

if TYPE_CHECKING:
    from .._backends import Waiter
    from .._grip import GripProxyStatistics

__all__ = ["CancelScopeLike", "Channel", "EventStreamStatistics", "Subscriber", "clock"]


class CancelScopeLike(Protocol):
    """What the hub needs of a connection's cancel scope (anyio's, or trio's on trio)."""

    deadline: float

    def cancel(self) -> None:
        """Cancel the connection now."""


class Subscriber:
    """One connection's subscription: its channels and its queue of encoded events.

    The hub appends to :attr:`queue` and wakes :attr:`waiter`; the connection
    takes everything queued with :meth:`take`.
    """

    __slots__ = (
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
        "room",
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
        #: Its connection's response is over (shutdown waits for it): see finish().
        self.finished: bool = False
        #: Its connection's (see watch()); the hub moves its deadline to disconnect it.
        self.cancel_scope: CancelScopeLike | None = None
        #: The deadline set when the stream was closed (shutdown grace).
        self.close_deadline: float = math.inf
        #: Events were dropped from the buffer (drop-oldest): send stream-reset first.
        self.reset_pending: bool = False
        #: When it was left behind (its last progress), while publishes skip it; else None.
        self.stalled: float | None = None
        #: Something was published on one of its channels while it was left behind:
        #: catch up from history.
        self.skipped: bool = False
        #: How many times the connection took from the queue (its progress).
        self.taken: int = 0
        #: Set by the connection while it sends what it took (a client that does not read
        #: holds it there).
        self.sending: bool = False
        #: Its client reads: a send that held it while its buffer was full has ended. Until
        #: then, publishes do not wait for it (see the _core package's docstring).
        self.proven: bool = False
        #: When its buffer was found full while its connection was held in a send and it
        #: is not proven (it holds more meanwhile).
        self.full_since: float | None = None
        #: How many entries it must hold when its connection next takes to be proven: the
        #: send held it while many more were queued (not a transport taking a few writes).
        self.prove_at: int = 0
        #: The events of publishes waiting for room in its queue: set when the connection takes.
        self.room: list[anyio.Event] | None = None

    def watch(self, scope: CancelScopeLike) -> None:
        """The connection's cancel scope: the hub moves its deadline to disconnect it."""
        self.cancel_scope = scope

    def finish(self) -> None:
        """The connection's response is over (shutdown waits for it)."""
        self.cancel_scope = None  # the scope refers to the connection: no cycle
        self.finished = True

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
        if self.room is not None:
            self._wake_publishers()

    def _wake_publishers(self) -> None:
        room, self.room = self.room, None
        for event in room or ():
            event.set()

    def end(self) -> None:
        """No more entries will come: wake its connection and the publishes waiting for it."""
        self.closed = True
        self._wake_publishers()
        if self.waiter is not None:
            self.waiter.wake()


def clock(subscriber: Subscriber) -> float:
    """The event loop's clock, from the subscriber's waiter when its connection has one.

    A waiter reads its loop's clock directly; ``anyio.current_time()`` first
    finds which library runs (sniffio), which on asyncio cost publishers half
    their time while non-reading clients were left behind on every publish.
    """
    waiter = subscriber.waiter
    return waiter.time() if waiter is not None else anyio.current_time()


class Channel(dict["Subscriber", None]):
    """The subscribers of one channel: the live ones are its keys, those left behind are apart.

    A publish visits the live ones only (iterating the channel, and its
    ``len()``, cover them alone); :meth:`count` covers both: a channel whose
    subscribers are all left behind is still subscribed. One object per
    channel, not a record and a dict, and only for a channel with more than
    one subscriber or one left behind (see the hub's ``_channels``).
    """

    __slots__ = ("behind", "unmarked")

    def __init__(self) -> None:
        super().__init__()
        #: Those left behind (publishes skip them); None when there are none.
        self.behind: dict[Subscriber, None] | None = None
        #: Those left behind since the last publish on the channel: the next one marks
        #: them :attr:`Subscriber.skipped` (once each, not on every publish).
        self.unmarked: dict[Subscriber, None] | None = None

    def count(self) -> int:
        """Its subscribers, live or left behind."""
        return len(self) + (len(self.behind) if self.behind is not None else 0)

    def members(self) -> list[Subscriber]:
        """Its subscribers, live or left behind."""
        return [*self, *(self.behind or ())]

    def leave_behind(self, subscriber: Subscriber, skipped: bool) -> None:
        """Move a live ``subscriber`` to those left behind.

        ``skipped``: the publish under way skips it (else the next one on the
        channel marks it).
        """
        if subscriber not in self:
            return  # already left behind, or gone
        del self[subscriber]
        if self.behind is None:
            self.behind = {}
        self.behind[subscriber] = None
        if not skipped:
            if self.unmarked is None:
                self.unmarked = {}
            self.unmarked[subscriber] = None

    def mark_skipped(self) -> None:
        """A publish on the channel: those left behind since the last one miss it."""
        unmarked, self.unmarked = self.unmarked, None
        for subscriber in unmarked or ():
            subscriber.skipped = True

    def rejoin(self, subscriber: Subscriber) -> None:
        """Move a left-behind ``subscriber`` back to the live ones."""
        if self.behind is not None and subscriber in self.behind:
            self._forget_behind(subscriber)
            self[subscriber] = None

    def remove(self, subscriber: Subscriber) -> None:
        """Take ``subscriber`` out of the channel, live or left behind."""
        if subscriber in self:
            del self[subscriber]
        elif self.behind is not None and subscriber in self.behind:
            self._forget_behind(subscriber)

    def _forget_behind(self, subscriber: Subscriber) -> None:
        behind = self.behind
        if behind is not None:
            del behind[subscriber]
            if not behind:
                self.behind = None
        unmarked = self.unmarked
        if unmarked is not None and subscriber in unmarked:
            del unmarked[subscriber]
            if not unmarked:
                self.unmarked = None


@dataclass(frozen=True)
class EventStreamStatistics:
    """A snapshot of an :class:`~eventstream.EventStream`'s state and counters."""

    #: Open subscriptions (one per streaming connection).
    subscribers: int
    #: Subscribers per channel, for channels that have any.
    channels: Mapping[str, int]
    #: Calls to ``publish_event`` (one per event and channel).
    events_published: int
    #: Events written to clients, counted once per client: live ones, and those a client left
    #: behind caught up on from history (not those replayed to a client that resumed with
    #: ``Last-Event-ID``: metrics count those as replayed).
    events_delivered: int
    #: Subscribers disconnected because their buffer stayed full past ``send_timeout``.
    subscribers_dropped: int
    #: Events dropped from full buffers under the ``drop-oldest`` policy.
    events_dropped: int = 0
    #: Counters per GRIP proxy, when GRIP is configured.
    grip: tuple[GripProxyStatistics, ...] = field(default=())
    #: The subscribers most behind now (at most 10, most behind first): left behind by
    #: publishes, or with a full buffer, or with entries queued. Computed when
    #: ``statistics()`` is called, in time proportional to the number of subscribers.
    slowest: tuple[SubscriberLag, ...] = field(default=())
    #: A shared broker's feed counters (``None`` with the in-process broker).
    broker: BrokerStatistics | None = None
    #: Streams opened through a GRIP proxy (its hold instructions sent for a client's request; not its
    #: next-link requests). The proxy holds them, so they are not in ``subscribers``; it does not tell
    #: when they end, so this counts streams opened, not streams open.
    grip_streams_opened: int = 0
