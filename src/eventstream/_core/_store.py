"""Event ids and per-channel history, so a reconnecting client misses nothing.

Every published event gets a *sequence number* from a counter shared by all
channels of an :class:`~eventstream.EventStream` (so it is monotonic per
channel), and an *id*: the caller's own, or ``"{epoch}-{seq}"``. The epoch is
random per store, so ids from before a restart are recognised as unknown.

A history store keeps recent events per channel. Entries are linked by
``prev_seq`` (the sequence number of the previous event on the same channel),
so the store can tell whether it still holds *every* event after a position
or whether there is a gap, in which case the client gets ``stream-reset``.

The interface (:class:`HistoryStore`) is synchronous on purpose: it is called
on the publish path and right after a subscription is registered, and no
other task may run in between, or an event could fall between the replay and
the live stream. A persistent store implements the same methods against an
in-process copy of recent events and persists writes in the background (for
example to a Redis stream), loading its copy and its ``epoch`` at start.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

__all__ = ["HistoryEntry", "HistoryStore", "MemoryHistory"]

# Bytes of Python objects around one entry's payload (measured with tracemalloc).
_ENTRY_OVERHEAD = 400
# Bytes of a channel's ring in MemoryHistory besides its entries: the ring, its deque, its slots
# in the dict and the order (tracemalloc: 100,000 channels of one 20-byte event each held 110 MB).
_RING_OVERHEAD = 680

logger = logging.getLogger("eventstream")


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One published event as stored and as queued for subscribers."""

    #: The channel it was published on.
    channel: str
    #: Its sequence number (monotonic per event stream, so per channel).
    seq: int
    #: The sequence number of the previous event on this channel (0: unknown or none).
    prev_seq: int
    #: The event id on the wire.
    id: str
    #: The id of the previous event on this channel (GRIP's ``prev-id``); for the
    #: first one, an id that stands for the start of the channel.
    prev_id: str
    #: The complete event, as a connection on this one channel sends it: the
    #: event's fields, then its ``id`` line, then the blank line.
    wire: bytes
    #: How many bytes of ``wire`` come before the ``id`` line.
    body_length: int
    #: When it was published (``time.monotonic()``).
    time: float = field(compare=False)

    @property
    def body(self) -> bytes:
        """The event's fields without the ``id`` line and the final blank line."""
        return self.wire[: self.body_length]

    @property
    def size(self) -> int:
        """What the entry counts against ``max_bytes``: its bytes and its bookkeeping."""
        return len(self.wire) + _ENTRY_OVERHEAD


def _entry_maker() -> Callable[[str, int, int, str, str, bytes, int, float], HistoryEntry]:
    # A frozen dataclass's __init__ sets each field through object.__setattr__:
    # about 1.8 µs for HistoryEntry's eight, once per publish. Setting the slots
    # through their descriptors does the same (there is no __post_init__) in
    # about a third of the time.
    new = object.__new__
    fields = ("channel", "seq", "prev_seq", "id", "prev_id", "wire", "body_length", "time")
    s0, s1, s2, s3, s4, s5, s6, s7 = (HistoryEntry.__dict__[name].__set__ for name in fields)

    def make(
        channel: str,
        seq: int,
        prev_seq: int,
        event_id: str,
        prev_id: str,
        wire: bytes,
        body_length: int,
        published: float,
    ) -> HistoryEntry:
        entry: HistoryEntry = new(HistoryEntry)
        s0(entry, channel)
        s1(entry, seq)
        s2(entry, prev_seq)
        s3(entry, event_id)
        s4(entry, prev_id)
        s5(entry, wire)
        s6(entry, body_length)
        s7(entry, published)
        return entry

    return make


#: ``HistoryEntry(...)`` with its fields in order, faster (on the publish path).
new_entry = _entry_maker()


class HistoryStore:
    """The interface of a history store. Subclass it to plug in another store.

    Every method runs on the event loop and must not block.
    """

    #: Distinguishes this store's assigned ids from those of another process or run.
    epoch: str
    #: Sequence numbers come from one counter for all channels (the in-process
    #: broker's): a position on one channel is then a position on every channel,
    #: so one event id tells where a client stands on all of its channels.
    stream_wide: bool = True

    def append(self, entry: HistoryEntry) -> None:
        """Keep ``entry`` (the newest event of its channel)."""
        raise NotImplementedError

    def last(self, channel: str) -> HistoryEntry | None:
        """The newest entry of ``channel``, or ``None``."""
        raise NotImplementedError

    def newest(self, channel: str) -> tuple[int, str] | None:
        """The sequence number and id of ``channel``'s newest entry, or ``None``.

        Asked on every publish (the new event links to it). This one asks
        :meth:`last`; override it where the store can answer without
        building an entry.
        """
        entry = self.last(channel)
        return None if entry is None else (entry.seq, entry.id)

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        """Every entry of ``channel`` published after position ``seq``, oldest first.

        ``seq`` is a sequence number: of an event of ``channel``, or, when
        :attr:`stream_wide`, of any channel (the client has every event of
        ``channel`` numbered up to it). ``[]`` when the channel has no event
        after ``seq``; ``None`` when the store cannot prove it holds every
        event after ``seq`` (trimmed, or never seen): the client must then be
        told to reset.
        """
        raise NotImplementedError

    def find(self, channel: str, event_id: str) -> int | None:
        """The sequence number of the newest entry of ``channel`` with id ``event_id``."""
        raise NotImplementedError


class MemoryHistory(HistoryStore):
    """The default store: a bounded ring of recent events per channel, in memory.

    Args:
        max_events: Events kept per channel.
        max_bytes: Encoded bytes kept per channel.
        max_age: Seconds an event is kept.
        max_total_bytes: Bytes kept over every channel (each entry counts its
            encoded bytes and about 400 bytes of bookkeeping, each channel
            another 680), or ``None``: no bound but the others. Past it, the
            channels published least recently are forgotten whole (to within
            64 publishes), and their reconnecting clients get
            ``stream-reset``; the first time, a warning is logged. The channel
            just published keeps its events (up to ``max_bytes``) even when
            that alone is more. It bounds
            what publishing to many channels, such as one per visitor, can
            hold: the default, 256 MiB, is about 240,000 channels of one
            small event each.

    Raises:
        ValueError: a limit is not positive.
    """

    # An entry is kept as a plain tuple of numbers, strings and bytes, not as
    # the HistoryEntry it came in: the garbage collector stops tracking such a
    # tuple at its first collection, so a process keeping many channels'
    # history does not make every full collection (which walks every tracked
    # object) longer and more frequent. Readers get HistoryEntry objects back.

    def __init__(
        self,
        *,
        max_events: int = 256,
        max_bytes: int = 256 * 1024,
        max_age: float = 300.0,
        max_total_bytes: int | None = 256 * 1024 * 1024,
    ) -> None:
        if max_events < 1 or max_bytes < 1 or not max_age > 0:
            raise ValueError("history limits must be positive")
        if max_total_bytes is not None and max_total_bytes < 1:
            raise ValueError("history limits must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_total_bytes = max_total_bytes
        self._total = 0  # the bytes kept over every channel, as max_total_bytes counts them
        self._budget = sys.maxsize if max_total_bytes is None else max_total_bytes
        self._warned = False
        self.epoch: str = os.urandom(4).hex()
        self._rings: dict[str, _Ring] = {}
        self._sweep: Iterator[str] = iter(())
        # The channels, published least recently first (to within a turn of 64 appends): a
        # channel published in a later turn than its last move goes to the back.
        self._order: OrderedDict[str, None] = OrderedDict()
        self._turn = 0
        self._appends = 0
        # Channels whose whole history was forgotten (aged out): the newest sequence number each
        # had, so a client on it knows whether it missed any (a channel never published has none
        # to miss); past _GONE_KEPT of them, the oldest are folded into _unknown, the newest
        # number forgotten of a channel no longer remembered.
        # (Ordered: the oldest is taken from the front, which a dict, whose deleted slots stay
        # until it grows, reaches by walking every one deleted since.)
        self._gone: OrderedDict[str, int] = OrderedDict()
        self._unknown = 0
        self._newest = 0  # the newest sequence number appended: positions after it are forged

    def append(self, entry: HistoryEntry) -> None:
        ring = self._rings.get(entry.channel)
        if ring is None:
            floor = self._gone.pop(entry.channel, None)
            ring = self._rings[entry.channel] = _Ring(self._unknown if floor is None else floor, self._turn)
            self._total += _RING_OVERHEAD
            self._order[entry.channel] = None
        elif ring.turn != self._turn:
            ring.turn = self._turn
            self._order.move_to_end(entry.channel)
        wire = entry.wire
        ring.entries.append(
            (entry.seq, entry.prev_seq, entry.id, entry.prev_id, wire, entry.body_length, entry.time)
        )
        size = len(wire) + _ENTRY_OVERHEAD
        ring.size += size
        self._total += size
        if entry.seq > self._newest:
            self._newest = entry.seq
        while len(ring.entries) > self.max_events or ring.size > self.max_bytes:
            self._forget(ring)
        self._appends += 1
        if self._appends % 64 == 0:
            self._turn += 1
            self._sweep_some(entry.time)
        if self._total > self._budget:
            self._evict(self._budget, entry.channel)

    def _evict(self, budget: int, keep: str) -> None:
        # Forget whole channels, published least recently first, until what is kept fits the
        # budget; never `keep`'s, whose event was just appended (it keeps up to max_bytes), and
        # those published in this turn only once every other one is gone.
        rings, order = self._rings, self._order
        if not self._warned:
            self._warned = True
            logger.warning(
                "history: max_total_bytes (%d) reached: the history of the channels published "
                "least recently is forgotten (their reconnecting clients get stream-reset)",
                budget,
            )
        passed = 0
        while self._total > budget and len(rings) > 1:
            channel = next(iter(order))
            if channel == keep or (rings[channel].turn == self._turn and passed < len(rings)):
                order.move_to_end(channel)  # (published in this turn: the others go first)
                passed += 1
                continue
            del order[channel]
            ring = rings.pop(channel)
            while ring.entries:
                self._forget(ring)
            self._gone_whole(channel, ring)

    def _sweep_some(self, now: float) -> None:
        # Amortised: age out a few other channels on every 64th append, so
        # channels that went quiet do not keep their events forever.
        for _ in range(64):
            name = next(self._sweep, None)
            if name is None:
                self._sweep = iter(list(self._rings))
                return
            ring = self._rings.get(name)
            if ring is not None:
                self._expire(name, ring, now)

    def _expire(self, channel: str, ring: _Ring, now: float) -> None:
        horizon = now - self.max_age
        entries = ring.entries
        while entries and entries[0][_TIME] < horizon:
            self._forget(ring)
        if not entries:
            del self._rings[channel]
            self._order.pop(channel, None)
            self._gone_whole(channel, ring)

    def _gone_whole(self, channel: str, ring: _Ring) -> None:
        # Remember the newest number a channel whose ring went had (see _gone).
        self._total -= _RING_OVERHEAD
        gone = self._gone
        gone[channel] = ring.lost
        if len(gone) > _GONE_KEPT:
            self._unknown = max(self._unknown, gone.popitem(last=False)[1])

    def _forget(self, ring: _Ring) -> None:
        kept = ring.entries.popleft()
        size = len(kept[_WIRE]) + _ENTRY_OVERHEAD
        ring.size -= size
        self._total -= size
        ring.lost = kept[_SEQ]

    def _ring(self, channel: str) -> _Ring | None:
        ring = self._rings.get(channel)
        if ring is None:
            return None
        entries, now = ring.entries, time.monotonic()
        if not entries or entries[0][_TIME] < now - self.max_age:  # empty, or the oldest expired
            self._expire(channel, ring, now)
            return self._rings.get(channel)
        return ring

    def last(self, channel: str) -> HistoryEntry | None:
        ring = self._ring(channel)
        return new_entry(channel, *ring.entries[-1]) if ring else None

    def newest(self, channel: str) -> tuple[int, str] | None:
        ring = self._ring(channel)
        if ring is None:
            return None
        kept = ring.entries[-1]
        return kept[_SEQ], kept[_ID]

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        if seq > self._newest:
            return None  # a position no event has had yet
        ring = self._ring(channel)
        if ring is None:
            # Nothing kept: the channel had no event after seq unless one was forgotten.
            gone = self._gone.get(channel)
            return [] if seq >= (self._unknown if gone is None else gone) else None
        entries = ring.entries
        if entries[-1][_SEQ] <= seq:
            return []
        for index, kept in enumerate(entries):
            if kept[_SEQ] > seq:
                # The first event after seq: the client has the one before it (or there
                # was none), unless that one was forgotten (a gap) or came after seq.
                if kept[_PREV_SEQ] > seq or seq < ring.floor:
                    return None
                return [new_entry(channel, *kept) for kept in list(entries)[index:]]
        return None

    def find(self, channel: str, event_id: str) -> int | None:
        ring = self._ring(channel)
        if ring is None:
            return None
        for kept in reversed(ring.entries):
            if kept[_ID] == event_id:
                return kept[_SEQ]
        return None


#: Channels whose whole history aged out that MemoryHistory remembers by name (see _gone).
_GONE_KEPT: Final = 65_536

#: An entry as MemoryHistory keeps it: HistoryEntry's fields after ``channel``, in order.
_Kept = tuple[int, int, str, str, bytes, int, float]
_SEQ: Final = 0
_PREV_SEQ: Final = 1
_ID: Final = 2
_WIRE: Final = 4
_TIME: Final = 6


class _Ring:
    __slots__ = ("entries", "floor", "lost", "size", "turn")

    def __init__(self, floor: int, turn: int) -> None:
        self.entries: deque[_Kept] = deque()
        self.size = 0
        #: MemoryHistory's turn when it was made or last moved to the back of its order.
        self.turn = turn
        #: The newest sequence number of this channel forgotten so far (its whole history, when
        #: the ring goes).
        self.lost = floor
        #: The newest sequence number of this channel forgotten before this ring started
        #: (or of a channel no longer remembered): a client older than that may have missed
        #: events of this channel.
        self.floor = floor
