"""Following the engine: this process's copy of history, kept in step and fed to the hub.

Entries come from the pub/sub feed, from reads of a channel's history when a
connection needs it, and from catch-up reads when a gap shows. They are
handled one at a time (under one lock), and each is kept in history and
queued for subscribers with no await in between, so a connection that
subscribes meanwhile finds it in one place or the other.

The reads a connection needs before it subscribes are a :class:`Preparer`'s
(``_prepare.py``): they go together, outside the lock, and each outcome is
taken in under it, through this follower's methods.

Because sequence numbers are per channel and without holes, an entry whose
number is not the next one reveals a gap: the missing entries are read from
the engine's history and delivered first. Where the engine no longer has
them, the channel's open streams are ended (after what they hold is
written): their clients reconnect with their last id, and get ``stream-reset``.

A feed message is trusted as it is only when it is the next one expected;
that one, when nothing else is being taken in (the lock is free), is
delivered by the feed's own task as it comes (:meth:`EngineFollower.receive_now`),
without waking the feed's reader.
Anyone who may publish on the engine can put anything on the feed (a forged
entry, another program's message), so a message of another epoch, or one
that announces a number beyond the next, is checked against the engine
first: a new epoch is believed when the engine has it, a gap when the
engine's history fills it; a message the engine contradicts is ignored (it
never moves a channel's position, so no later event is dropped for it).
A message under a number already delivered that is not the entry delivered
(or the first of a channel) is checked too: if the engine's numbering went
back (every key of the channel deleted), the channel's streams end. Such
checks are bounded per second (``_suspects.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._core import HistoryEntry, Hub, Subscriber, origin_id
from ._history import SharedHistory
from ._idle import IdleChannels
from ._interest import FeedInterest
from ._prepare import Preparer
from ._reads import ManyReader, Reader, as_history
from ._suspects import CheckBudget
from ._wire import EngineEntry

if TYPE_CHECKING:
    from .._observe._trace import Tracing

__all__ = ["EngineFollower"]

logger = logging.getLogger("eventstream")


class EngineFollower:
    """Keeps :attr:`history` in step with the engine and delivers new entries to ``hub``.

    The reads for connections about to subscribe are its :class:`Preparer`'s,
    which takes their outcomes in under :attr:`lock`, through :meth:`take_in`,
    :meth:`catch_up`, :meth:`new_epoch` and :meth:`receive_one`.
    """

    def __init__(
        self,
        hub: Hub,
        history: SharedHistory,
        read: Reader,
        *,
        engine: str,
        read_many: ManyReader,
        interest: FeedInterest,
        linger: float,
    ) -> None:
        self.hub = hub
        #: The feed's subscriptions: every followed channel's feed is subscribed to.
        self.interest = interest
        self._idle = IdleChannels(linger)
        hub.take_vacated()  # (from now on, the hub notes the channels left: see _idle.py)
        #: Entries delivered from reads of the engine's history (gaps in the feed filled).
        self.filled = 0
        self.history = history
        self._read = read
        self.engine = engine
        #: Channels whose history is followed (read once, then kept in step).
        #: (A dict of None, not a set: a dict of strings only is not tracked by the garbage
        #: collector, whose full passes would otherwise walk every channel followed.)
        self.loaded: dict[str, None] = {}
        #: Held while entries are taken in (feed, reads). Uncontended, taking it does
        #: not yield: what the feed and each read for a new stream do under it runs
        #: without a pass of the event loop, so hundreds of new streams do not queue
        #: the feed behind them.
        self.lock = anyio.Lock(fast_acquire=True)
        #: Counts the engine's new epochs: a read begun before one is stale.
        self.generation = 0
        #: How many feed messages a second may each cost a read to be checked.
        self.suspects = CheckBudget(engine)
        self._preparer = Preparer(self, read, read_many)
        #: Full subscribers of an entry :meth:`receive_now` delivered, not yet waited for.
        self._owed: list[Subscriber] | None = None

    @property
    def epoch(self) -> str:
        return self.history.epoch

    def maybe_idle(self, names: Iterable[str]) -> None:
        """Have the next check look at whether ``names`` are idle (``_idle.py``)."""
        self._idle.maybe_idle(names)

    async def channels_to_check(self) -> list[str]:
        """Channels with local subscribers whose history is followed; stops following idle ones
        (``_idle.py``)."""
        await self._idle.forget(self, self._preparer.preparing)
        return [name for name in self.hub.channel_names() if name in self.loaded]

    def unfollowed(self) -> list[str]:
        """Channels with local subscribers that are not followed, nor being prepared.

        None, unless a channel was dropped in the moment between a
        connection's preparation and its subscription (an await there): the
        periodic check follows them again.
        """
        preparing = self._preparer.preparing
        return [
            name for name in self.hub.channel_names() if name not in self.loaded and name not in preparing
        ]

    # -- entries from the feed ----------------------------------------------------

    def receive_now(self, channel: str, entry: EngineEntry) -> bool:
        """Deliver a feed entry at once if it is simply the next of a followed channel; False if not.

        Nothing is changed when it returns False: the entry then goes through
        :meth:`receive` (a gap, a duplicate, another epoch, a channel not
        followed, the lock held, tracing on, or full subscribers of an earlier
        entry delivered here not yet waited for). Full subscribers are not waited
        for here (it never blocks): the next :meth:`receive` waits for them
        first, as a delivery through it would have right away.
        """
        if self._owed is not None or self.lock.locked():
            return False
        if entry.epoch != self.epoch or channel not in self.loaded:
            return False
        known = self.history.last_seq.get(channel)
        tracing = self.hub.tracing
        if known is None or entry.seq != known + 1 or (tracing is not None and tracing.active):
            return False
        self._observe_lag(entry)
        self._owed = self._put(channel, entry.to_history(channel, time.monotonic()))
        return True

    async def receive(self, entries: Sequence[tuple[str, EngineEntry]]) -> None:
        """Handle entries of the pub/sub feed, in order (gaps first filled from history).

        The entries reach subscribers' queues before it yields (unless one is
        full, or a gap needs a read): each subscriber wakes once per batch.
        """
        async with self.lock:
            owed, self._owed = self._owed, None
            if owed:  # (from receive_now: until they took, or were left behind)
                await self.hub.wait_for_room(owed)
            for channel, entry in entries:
                await self.receive_one(channel, entry)
        await anyio.lowlevel.checkpoint()

    async def receive_one(self, channel: str, entry: EngineEntry) -> None:
        """Handle one entry of the feed (or one kept aside during a first read); the lock is held."""
        suspects = self.suspects
        if entry.epoch != self.epoch and not (
            suspects.take(channel) and await self._confirm_epoch(channel, entry)
        ):
            return
        if channel not in self.loaded:
            # No connection here ever asked for it: nobody to deliver to, and
            # its history is read from the engine when one does. If that read
            # is in flight, the entry is taken in after it.
            self._preparer.set_aside(channel, entry)
            return
        known = self.history.last_seq.get(channel)
        if known is not None and entry.seq <= known:
            kept = self.history.since(channel, entry.seq - 1)
            if kept and (kept[0].id, kept[0].prev_id, kept[0].body) == (entry.id, entry.prev_id, entry.body):
                return  # already delivered (read from history meanwhile)
            if (kept is not None or entry.seq == 1) and self.suspects.take(channel):
                # Not the entry delivered under that number, or a channel that starts
                # again: did the engine's numbering go back (its keys deleted)?
                await self._check_went_back(channel, entry.seq, known, differs=kept is not None)
            return
        if known is not None and entry.seq > known + 1 and not (known == 0 and self._starts(entry)):
            if not self.suspects.take(channel):
                return  # (a real gap: the periodic check fills it)
            await self.catch_up(channel, known)
            known = self.history.last_seq.get(channel)
            if (known is not None and entry.seq <= known) or channel not in self.loaded:
                return
            # The engine numbered nothing after `known` (a real entry's number
            # is on the engine before it is on the feed): not one of its entries.
            logger.warning(
                "broker: ignoring a feed message for event %d of channel %r: the engine %s has "
                "events up to %s only (a message that the publish script did not send)",
                entry.seq, channel, self.engine, known,
            )  # fmt: skip
            return
        self._observe_lag(entry)
        tracing = self.hub.tracing
        if tracing is None or not tracing.active:
            await self._deliver(channel, entry.to_history(channel, time.monotonic()))
        else:
            await self._deliver_traced(tracing, channel, entry, entry.to_history(channel, time.monotonic()))

    def _starts(self, entry: EngineEntry) -> bool:
        """Whether ``entry`` is the first of its channel (nothing before it is missed).

        On a cluster a channel's numbers start from the engine's clock, not 1
        (see ``_scripts.py``): its first event is known by its predecessor,
        the origin.
        """
        return entry.prev_id == origin_id(self.epoch)

    async def _check_went_back(self, channel: str, seq: int, known: int, *, differs: bool) -> None:
        """End the channel's streams and reload it if the engine's newest number is below ``known``.

        ``seq``: the number of the feed message that raised the doubt.
        ``differs``: the message is not the entry kept under its number (else it
        is the first of the channel, and no longer kept here: a late copy is fine).
        Called with the feed's lock held (from :meth:`receive`).
        """
        epoch, newest, _entries = await self._read(channel, -1, 1)
        if epoch and epoch != self.epoch:
            self.new_epoch(epoch)
            return
        if newest >= known:
            if not differs:
                return
            logger.warning(
                "broker: ignoring a feed message for event %d of channel %r: it is not the one the "
                "engine %s numbered so (a message that the publish script did not send)",
                seq, channel, self.engine,
            )  # fmt: skip
            return
        logger.error(
            "broker: channel %r went back from event %d to %d on the engine %s (its keys were deleted); "
            "its streams end and their clients get stream-reset",
            channel, known, newest, self.engine,
        )  # fmt: skip
        self.history.forget(channel)
        self.loaded.pop(channel, None)
        try:
            await self._preparer.reload(channel)  # read again as a new channel
        finally:  # (its streams end even when the engine cannot be read now)
            self._end_streams(channel)

    async def _confirm_epoch(self, channel: str, entry: EngineEntry) -> bool:
        """Whether a feed message of another epoch is to be handled: the engine has that epoch.

        The engine's epoch is read: if it is new, this process starts it (its
        streams end); a message whose epoch the engine does not have is ignored.
        """
        epoch, _newest, _entries = await self._read(channel, -1, 1)
        if epoch and epoch != self.epoch:
            self.new_epoch(epoch)
        if epoch == entry.epoch:
            return True
        logger.warning(
            "broker: ignoring a feed message of channel %r with epoch %r: the engine %s has epoch %r "
            "(a message that the publish script did not send)",
            channel, entry.epoch, self.engine, epoch,
        )  # fmt: skip
        return False

    async def _deliver_traced(
        self, tracing: Tracing, channel: str, entry: EngineEntry, kept: HistoryEntry
    ) -> None:
        # tracing: delivered in a span whose parent is the publish's (another process's, maybe)
        with tracing.deliver(channel, entry.id, entry.traceparent):
            await self._deliver(channel, kept)

    def _observe_lag(self, entry: EngineEntry) -> None:
        lag = self.hub.feed_lag
        if lag is not None:  # metrics: from the engine's clock at publish to this process's now
            lag.observe(max(0.0, time.time() - entry.published_ms / 1000))

    def _put(self, channel: str, entry: HistoryEntry) -> list[Subscriber] | None:
        # Kept and queued with no await in between; the full subscribers are the caller's to wait for.
        self.history.append(entry)
        return self.hub.put(channel, entry)

    async def _deliver(self, channel: str, entry: HistoryEntry) -> None:
        full = self._put(channel, entry)
        if full:
            await self.hub.wait_for_room(full)

    def new_epoch(self, epoch: str) -> None:
        """Start the engine's new ``epoch``: history is cleared, every stream ends, reads are stale."""
        # The engine lost its data (a restart without persistence, a flush):
        # every position clients hold is meaningless now.
        logger.error(
            "broker engine %s has a new epoch (%s, was %s): its history was lost; "
            "every open stream ends and its client gets stream-reset when it reconnects",
            self.engine, epoch, self.epoch,
        )  # fmt: skip
        self.history.clear(epoch)
        self.loaded.clear()
        self.generation += 1  # reads in flight are read again
        for channel in list(self.hub.channel_names()):
            self._end_streams(channel)

    def _end_streams(self, channel: str) -> None:
        # Ending a stream (after what it holds is written) makes its client
        # reconnect with its last id; history then tells it to reset.
        self.hub.end_channel(channel)

    async def catch_up(self, channel: str, known: int) -> None:
        """Deliver what the engine has after ``known``; end the channel's streams where it has not."""
        while True:
            epoch, newest, entries = await self._read(channel, known, self.history.max_events)
            if epoch and epoch != self.epoch:
                self.new_epoch(epoch)
                return
            after = await self.take_in(channel, known, newest, entries)
            if after is None:
                return
            if after <= known:  # nothing taken in: the same read again would take in nothing either
                logger.warning(
                    "broker: channel %r cannot catch up after event %d (the engine's newest is %d): "
                    "its streams end and their clients get stream-reset",
                    channel, known, newest,
                )  # fmt: skip
                self._end_streams(channel)
                return
            known = after

    async def take_in(
        self, channel: str, known: int, newest: int, entries: Sequence[EngineEntry]
    ) -> int | None:
        """Deliver what a read after ``known`` returned; the position to read on from, or None if done."""
        history = self.history
        known = max(known, history.last_seq.get(channel, 0))  # the feed may have delivered more since
        if newest <= known:
            return None
        if not entries or (entries[0].seq > known + 1 and not (known == 0 and self._starts(entries[0]))):
            logger.warning(
                "broker: events %d..%d of channel %r are no longer in the engine's history; "
                "its streams end and their clients get stream-reset",
                known + 1, (entries[0].seq - 1) if entries else newest, channel,
            )  # fmt: skip
            history.replace(channel, [], entries[0].seq - 1 if entries else newest)
            self._end_streams(channel)
            if not entries:
                return None
        tracing = self.hub.tracing
        if tracing is not None and not tracing.active:
            tracing = None  # (nothing would record the spans)
        for entry in entries:
            expected = history.last_seq.get(channel, 0) + 1
            # (on a cluster, a channel's first number is the engine's clock: see _starts)
            if entry.seq == expected or (expected == 1 and self._starts(entry)):
                self.filled += 1
                if tracing is None:
                    await self._deliver(channel, as_history(channel, entry))
                else:  # (a catch-up: the entry came from history, with its publish's traceparent)
                    await self._deliver_traced(tracing, channel, entry, as_history(channel, entry))
        known = history.last_seq.get(channel, 0)
        if known >= newest:
            return None
        return known

    # -- before a connection subscribes ----------------------------------------

    async def prepare(
        self, channels: Sequence[str], *, within: float = math.inf, resuming: bool = True
    ) -> None:
        """Load the history of channels seen for the first time, and catch up on the others.

        See :meth:`Preparer.prepare`: the channels are read together with
        other connections', and the call returns within ``within`` seconds.

        Raises:
            BrokerError: the engine could not be reached (or did not answer
                within ``within``) and a channel was never loaded.
        """
        await self._preparer.prepare(channels, within=within, resuming=resuming)

    # -- the periodic check ------------------------------------------------------

    async def check(self, epoch: str | None, newest: dict[str, int]) -> None:
        """Catch up on channels whose newest sequence number on the engine is ahead of ours.

        A channel the engine has no number for while this process has delivered
        some (its keys deleted, and nothing published since) is checked for a
        numbering that went back: its streams end even if it stays quiet.
        """
        async with self.lock:
            if epoch is not None and epoch != self.epoch:
                self.new_epoch(epoch)
                return
            for name, seq in newest.items():
                known = self.history.last_seq.get(name, 0)
                if name not in self.loaded:
                    continue
                if seq > known:
                    await self.catch_up(name, known)
                elif seq == 0 < known:  # (a number never goes back to none but when deleted)
                    await self._check_went_back(name, 0, known, differs=False)
