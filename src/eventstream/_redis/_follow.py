"""Following the engine: this process's copy of history, kept in step and fed to the hub.

Entries come from the pub/sub feed, from reads of a channel's history when a
connection needs it, and from catch-up reads when a gap shows. They are
handled one at a time (under one lock), and each is kept in history and
queued for subscribers with no await in between, so a connection that
subscribes meanwhile finds it in one place or the other.

The reads a connection needs before it subscribes go in one request with
those of the other connections that open meanwhile (two such requests in
flight at most, each for up to :data:`CONNECTIONS_TOGETHER` connections): a
flood of connections on new channels costs a few requests, not one each. They
run outside the lock: each connection takes in its own outcome under it, so
the flood does not hold up the feed of the channels already followed. Feed
entries of a channel whose first read is in flight are kept aside meanwhile,
and taken in after it.

Because sequence numbers are per channel and without holes, an entry whose
number is not the next one reveals a gap: the missing entries are read from
the engine's history and delivered first. Where the engine no longer has
them, the channel's open streams are ended (after what they hold is
written): their clients reconnect with their last id, and get ``stream-reset``.

A feed message is trusted as it is only when it is the next one expected.
Anyone who may publish on the engine can put anything on the feed (a forged
entry, another program's message), so a message of another epoch, or one
that announces a number beyond the next, is checked against the engine
first: a new epoch is believed when the engine has it, a gap when the
engine's history fills it; a message the engine contradicts is ignored (it
never moves a channel's position, so no later event is dropped for it).
A message under a number already delivered that is not the entry delivered
(or the first of a channel) is checked too: if the engine's numbering went
back (every key of the channel deleted), the channel's streams end.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio
import anyio.lowlevel

from .._exceptions import BrokerError
from .._history import HistoryEntry
from .._hub import Hub
from ._batching import BatchQueue, Queued
from ._history import SharedHistory
from ._wire import EngineEntry

__all__ = [
    "CONCURRENT_READS",
    "CONNECTIONS_TOGETHER",
    "FORGET_AT_ONCE",
    "EngineFollower",
    "ManyReader",
    "Reader",
]

logger = logging.getLogger("eventstream")

#: ``read(channel, after, count)``: the engine's epoch, the channel's newest
#: sequence number, and up to ``count`` entries after ``after`` (``-1``: the newest).
Reader = Callable[[str, int, int], Awaitable[tuple[str, int, list[EngineEntry]]]]
#: ``read_many([(channel, after), ...], count)``: what ``read`` returns for each, or
#: the :class:`BrokerError` of that read, in the same order, read together (one request).
ManyReader = Callable[
    [Sequence[tuple[str, int]], int], Awaitable[list[tuple[str, int, list[EngineEntry]] | BrokerError]]
]
#: Reads of one channel for connections about to subscribe (read again after a new
#: epoch, or by another connection meanwhile) that run at once; the others wait their turn.
CONCURRENT_READS = 128
#: Connections about to subscribe whose reads one request carries at most.
CONNECTIONS_TOGETHER = 64
#: Idle channels forgotten between two passes of the event loop by the periodic check.
FORGET_AT_ONCE = 512


class _Loading:
    """A channel's first read, in flight: feed entries that arrive meanwhile, and its outcome."""

    __slots__ = ("_done", "entries", "error", "finished", "generation")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        #: Feed entries that arrived meanwhile (made for the first: most reads get none).
        self.entries: list[EngineEntry] | None = None
        self.error: BrokerError | None = None
        self.finished = False
        self._done: anyio.Event | None = None  # made for a waiter only: most reads have none

    def finish(self) -> None:
        """The read is over (taken in, failed or abandoned): wake the waiters."""
        self.finished = True
        if self._done is not None:
            self._done.set()

    async def wait(self) -> None:
        """Return once :meth:`finish` was called."""
        if not self.finished:
            if self._done is None:
                self._done = anyio.Event()
            await self._done.wait()


class _Reads(Queued):
    """A connection's reads, queued to be sent with other connections' (in one request)."""

    __slots__ = ("deadline", "requests", "results")

    def __init__(self, requests: list[tuple[str, int]], deadline: float) -> None:
        super().__init__()
        self.requests = requests
        #: When (``anyio.current_time()``) the connection stops waiting: its request ends by then.
        self.deadline = deadline
        self.results: list[tuple[str, int, list[EngineEntry]] | BrokerError] = []


class EngineFollower:
    """Keeps :attr:`history` in step with the engine and delivers new entries to ``hub``."""

    def __init__(
        self, hub: Hub, history: SharedHistory, read: Reader, *, engine: str, read_many: ManyReader
    ) -> None:
        self.hub = hub
        self.history = history
        self._read = read
        self._read_many = read_many
        self.engine = engine
        self._loaded: set[str] = set()
        # Uncontended, taking it does not yield: what the feed and each read
        # for a new stream do under it runs without a pass of the event loop,
        # so hundreds of new streams do not queue the feed behind them.
        self._lock = anyio.Lock(fast_acquire=True)
        #: Channels of the connections being prepared (how many each): kept while they are.
        self._preparing: dict[str, int] = {}
        #: Channels whose first read is in flight.
        self._loading: dict[str, _Loading] = {}
        #: Counts the engine's new epochs: a read begun before one is stale.
        self._generation = 0
        self._reads = anyio.Semaphore(CONCURRENT_READS, fast_acquire=True)
        self._together: BatchQueue[_Reads] = BatchQueue(
            self._send_reads, batch_size=CONNECTIONS_TOGETHER, senders=2
        )
        self._together.bind()  # (made in the event loop that runs the broker)

    @property
    def epoch(self) -> str:
        return self.history.epoch

    async def channels_to_check(self) -> list[str]:
        """Channels with local subscribers whose history is followed; forgets idle others.

        A followed channel without subscribers whose newest event is older
        than the history's ``max_age`` (and no connection being prepared for
        it) is no longer followed (its copy is
        dropped; a connection that asks for it again reads it from the engine).
        The idle channels are forgotten :data:`FORGET_AT_ONCE` at a time, with a
        pass of the event loop in between: thousands of them do not hold up the feed.
        """
        hub = self.hub
        subscribed = hub.statistics().channels
        idle = [name for name in self._loaded if name not in subscribed]
        for start in range(0, len(idle), FORGET_AT_ONCE):
            if start:
                await anyio.lowlevel.checkpoint()  # (a channel may have gained a subscriber since)
            for name in idle[start : start + FORGET_AT_ONCE]:
                if (
                    name in self._loaded
                    and name not in self._preparing
                    and not hub.subscriber_count(name)
                    and self.history.last(name) is None
                ):
                    self._loaded.discard(name)
                    self.history.forget(name)
        return [name for name in hub.statistics().channels if name in self._loaded]

    # -- entries from the feed ----------------------------------------------------

    async def receive(self, entries: Sequence[tuple[str, EngineEntry]]) -> None:
        """Handle entries of the pub/sub feed, in order (gaps first filled from history).

        The entries reach subscribers' queues before it yields (unless one is
        full, or a gap needs a read): each subscriber wakes once per batch.
        """
        async with self._lock:
            for channel, entry in entries:
                await self._receive_one(channel, entry)
        await anyio.lowlevel.checkpoint()

    async def _receive_one(self, channel: str, entry: EngineEntry) -> None:
        if entry.epoch != self.epoch and not await self._confirm_epoch(channel, entry):
            return
        if channel not in self._loaded:
            # No connection here ever asked for it: nobody to deliver to, and
            # its history is read from the engine when one does. If that read
            # is in flight, the entry is taken in after it (a bounded number:
            # past that, the gap shows and is read).
            loading = self._loading.get(channel)
            if loading is not None:
                if loading.entries is None:
                    loading.entries = [entry]
                elif len(loading.entries) < self.history.max_events:
                    loading.entries.append(entry)
            return
        known = self.history.last_seq.get(channel)
        if known is not None and entry.seq <= known:
            kept = self.history.since(channel, entry.seq - 1)
            if kept and (kept[0].id, kept[0].prev_id, kept[0].body) == (entry.id, entry.prev_id, entry.body):
                return  # already delivered (read from history meanwhile)
            if kept is not None or entry.seq == 1:
                # Not the entry delivered under that number, or a channel that starts
                # again: did the engine's numbering go back (its keys deleted)?
                await self._check_went_back(channel, entry.seq, known, differs=kept is not None)
            return
        if known is not None and entry.seq > known + 1:
            await self._catch_up(channel, known)
            known = self.history.last_seq.get(channel)
            if (known is not None and entry.seq <= known) or channel not in self._loaded:
                return
            # The engine numbered nothing after `known` (a real entry's number
            # is on the engine before it is on the feed): not one of its entries.
            logger.warning(
                "broker: ignoring a feed message for event %d of channel %r: the engine %s has "
                "events up to %s only (a message that the publish script did not send)",
                entry.seq, channel, self.engine, known,
            )  # fmt: skip
            return
        await self._deliver(channel, entry.to_history(channel, time.monotonic()))

    async def _check_went_back(self, channel: str, seq: int, known: int, *, differs: bool) -> None:
        """End the channel's streams and reload it if the engine's newest number is below ``known``.

        ``seq``: the number of the feed message that raised the doubt.
        ``differs``: the message is not the entry kept under its number (else it
        is the first of the channel, and no longer kept here: a late copy is fine).
        Called with the feed's lock held (from :meth:`receive`).
        """
        epoch, newest, _entries = await self._read(channel, -1, 1)
        if epoch and epoch != self.epoch:
            self._new_epoch(epoch)
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
        self._loaded.discard(channel)
        # Read it again as a new channel (the feed's lock is held: not through _load).
        epoch, newest, entries = await self._read(channel, -1, self.history.max_events)
        loading = self._loading[channel] = _Loading(self._generation)
        try:
            await self._install(channel, loading, epoch, newest, entries)
        finally:
            if self._loading.get(channel) is loading:
                del self._loading[channel]
            loading.finish()
        self._end_streams(channel)

    async def _confirm_epoch(self, channel: str, entry: EngineEntry) -> bool:
        """Whether a feed message of another epoch is to be handled: the engine has that epoch.

        The engine's epoch is read: if it is new, this process starts it (its
        streams end); a message whose epoch the engine does not have is ignored.
        """
        epoch, _newest, _entries = await self._read(channel, -1, 1)
        if epoch and epoch != self.epoch:
            self._new_epoch(epoch)
        if epoch == entry.epoch:
            return True
        logger.warning(
            "broker: ignoring a feed message of channel %r with epoch %r: the engine %s has epoch %r "
            "(a message that the publish script did not send)",
            channel, entry.epoch, self.engine, epoch,
        )  # fmt: skip
        return False

    async def _deliver(self, channel: str, entry: HistoryEntry) -> None:
        self.history.append(entry)
        full = self.hub.put(channel, entry)
        if full:
            await self.hub.wait_for_room(full)

    def _new_epoch(self, epoch: str) -> None:
        # The engine lost its data (a restart without persistence, a flush):
        # every position clients hold is meaningless now.
        logger.error(
            "broker engine %s has a new epoch (%s, was %s): its history was lost; "
            "every open stream ends and its client gets stream-reset when it reconnects",
            self.engine, epoch, self.epoch,
        )  # fmt: skip
        self.history.clear(epoch)
        self._loaded.clear()
        self._generation += 1  # reads in flight are read again
        for channel in list(self.hub.statistics().channels):
            self._end_streams(channel)

    def _end_streams(self, channel: str) -> None:
        # Ending a stream (after what it holds is written) makes its client
        # reconnect with its last id; history then tells it to reset.
        for subscriber in list(self.hub._channels.get(channel, ())):
            self.hub.unsubscribe(subscriber)

    def _as_history(self, channel: str, entry: EngineEntry) -> HistoryEntry:
        # Place the entry on this process's clock by its age on the engine's.
        age = max(0.0, time.time() - entry.published_ms / 1000)
        return entry.to_history(channel, time.monotonic() - age)

    async def _catch_up(self, channel: str, known: int) -> None:
        """Deliver what the engine has after ``known``; end the channel's streams where it has not."""
        while True:
            epoch, newest, entries = await self._read(channel, known, self.history.max_events)
            if epoch and epoch != self.epoch:
                self._new_epoch(epoch)
                return
            after = await self._take_in(channel, known, newest, entries)
            if after is None:
                return
            known = after

    async def _take_in(self, channel: str, known: int, newest: int, entries: list[EngineEntry]) -> int | None:
        """Deliver what a read after ``known`` returned; the position to read on from, or None if done."""
        history = self.history
        known = max(known, history.last_seq.get(channel, 0))  # the feed may have delivered more since
        if newest <= known:
            return None
        if not entries or entries[0].seq > known + 1:
            logger.warning(
                "broker: events %d..%d of channel %r are no longer in the engine's history; "
                "its streams end and their clients get stream-reset",
                known + 1, (entries[0].seq - 1) if entries else newest, channel,
            )  # fmt: skip
            history.replace(channel, [], entries[0].seq - 1 if entries else newest)
            self._end_streams(channel)
            if not entries:
                return None
        for entry in entries:
            if entry.seq == history.last_seq.get(channel, 0) + 1:
                await self._deliver(channel, self._as_history(channel, entry))
        known = history.last_seq.get(channel, 0)
        if known >= newest:
            return None
        return known

    # -- before a connection subscribes ----------------------------------------

    async def prepare(self, channels: Sequence[str], *, within: float = math.inf) -> None:
        """Load the history of channels seen for the first time, and catch up on the others.

        The channels are read together (one request), concurrently with
        other connections' reads (:data:`CONCURRENT_READS` requests at once); the
        feed of the channels already followed goes on meanwhile. It returns
        within ``within`` seconds: a followed channel whose read is not
        answered by then is served from this process's copy.

        Raises:
            BrokerError: the engine could not be reached (or did not answer
                within ``within``) and a channel was never loaded (a channel
                loaded before is served from this process's copy; the periodic
                check fills it in later).
        """
        errors: list[BrokerError] = []

        async def prepare_one(channel: str) -> None:
            try:
                await self._prepare_one(channel)
            except BrokerError as exc:
                errors.append(exc)

        preparing = self._preparing
        for channel in channels:  # not forgotten before the connection subscribes
            preparing[channel] = preparing.get(channel, 0) + 1
        try:
            with anyio.move_on_after(within) as scope:
                # What the reads together leave (read by another connection, or
                # read again after a new epoch) is prepared channel by channel.
                rest = await self._prepare_together(channels, errors, scope.deadline)
                if len(rest) == 1:
                    await prepare_one(rest[0])
                elif rest:
                    async with anyio.create_task_group() as tg:
                        for channel in rest:
                            tg.start_soon(prepare_one, channel)
        finally:
            for channel in channels:
                if preparing[channel] == 1:
                    del preparing[channel]
                else:
                    preparing[channel] -= 1
        missing = [channel for channel in channels if channel not in self._loaded]
        if missing:
            if errors:
                raise errors[0]
            raise BrokerError(self.engine, f"no answer within {within:g} s (request_timeout)")

    async def _prepare_together(
        self, channels: Sequence[str], errors: list[BrokerError], deadline: float
    ) -> list[str]:
        # Read every channel that no other connection is reading in one
        # request (with other connections' reads); return the channels left
        # to prepare one by one.
        generation = self._generation
        mine: dict[str, _Loading] = {}
        known: dict[str, int] = {}
        rest: list[str] = []
        for channel in channels:
            if channel in self._loaded:
                known[channel] = self.history.last_seq.get(channel, 0)
            elif channel in self._loading:
                rest.append(channel)
            else:
                mine[channel] = self._loading[channel] = _Loading(generation)
        requests = [*((channel, -1) for channel in mine), *known.items()]
        if not requests:
            return rest
        try:
            reads = _Reads(requests, deadline)
            await self._together.submit(reads)
            if reads.error is not None:  # (a bug)
                raise reads.error
            results = reads.results
            async with self._lock:
                with anyio.CancelScope(shield=True):  # what was read is taken in whole
                    for (channel, after), result in zip(requests, results, strict=True):
                        loading = mine.get(channel)
                        try:
                            if isinstance(result, BrokerError):
                                raise result
                            if loading is not None:
                                if not await self._install(channel, loading, *result):
                                    rest.append(channel)
                            elif not await self._refreshed(channel, generation, after, *result):
                                rest.append(channel)
                        except BrokerError as exc:  # (also: a gap after it that could not be read)
                            errors.append(exc)
                            if loading is not None:
                                loading.error = exc
        finally:
            for channel, loading in mine.items():
                if self._loading.get(channel) is loading:
                    del self._loading[channel]
                loading.finish()
        return rest

    async def _send_reads(self, batch: list[_Reads]) -> None:
        # The reads of the connections in `batch`, in one request (a call of the
        # read script per _READ_TOGETHER channels, sent at once), each given its
        # results. It ends by the earliest deadline of theirs: the connection
        # sending it (shielded: the others depend on it) returns in time too.
        requests = [request for reads in batch for request in reads.requests]
        results: list[tuple[str, int, list[EngineEntry]] | BrokerError] = []
        with anyio.CancelScope(deadline=min(reads.deadline for reads in batch)):
            results = await self._read_many(requests, self.history.max_events)
        if not results:
            late = BrokerError(self.engine, "no answer in time (request_timeout)")
            results = [late] * len(requests)
        start = 0
        for reads in batch:
            reads.results = results[start : start + len(reads.requests)]
            start += len(reads.requests)
            reads.done = True
            reads.wake()

    async def _prepare_one(self, channel: str) -> None:
        while True:
            if channel not in self._loaded:
                await self._load(channel)
                return
            generation = self._generation
            known = self.history.last_seq.get(channel, 0)
            async with self._reads:
                epoch, newest, entries = await self._read(channel, known, self.history.max_events)
            async with self._lock:
                with anyio.CancelScope(shield=True):  # what was read is taken in whole
                    if await self._refreshed(channel, generation, known, epoch, newest, entries):
                        return

    async def _refreshed(
        self, channel: str, generation: int, known: int, epoch: str, newest: int, entries: list[EngineEntry]
    ) -> bool:
        """Take in a read of a followed channel after ``known``; False if it must be read anew."""
        if generation != self._generation or channel not in self._loaded:
            return False  # a new epoch, or forgotten meanwhile
        if epoch and epoch != self.epoch:
            self._new_epoch(epoch)
            return False
        after = await self._take_in(channel, known, newest, entries)
        if after is not None:  # more than one read's worth is missing (rare)
            await self._catch_up(channel, after)
        return True

    async def _load(self, channel: str) -> None:
        # Read a channel's history for the first time; one read per channel
        # at a time (other connections asking for it wait for its outcome).
        while channel not in self._loaded:
            loading = self._loading.get(channel)
            if loading is not None:
                await loading.wait()
                if loading.error is not None:
                    raise loading.error
                continue
            loading = self._loading[channel] = _Loading(self._generation)
            try:
                async with self._reads:
                    epoch, newest, entries = await self._read(channel, -1, self.history.max_events)
                async with self._lock:
                    with anyio.CancelScope(shield=True):  # what was read is taken in whole
                        await self._install(channel, loading, epoch, newest, entries)
            except BrokerError as exc:
                loading.error = exc
                raise
            finally:
                if self._loading.get(channel) is loading:
                    del self._loading[channel]
                loading.finish()

    async def _install(
        self, channel: str, loading: _Loading, epoch: str, newest: int, entries: list[EngineEntry]
    ) -> bool:
        """Take in the first read of a channel; False if it must be read anew (a new epoch since)."""
        if loading.generation != self._generation:
            return False
        if epoch and epoch != self.epoch:
            self._new_epoch(epoch)
        run: list[HistoryEntry] = []
        for entry in entries:
            if run and entry.seq != run[-1].seq + 1:
                run = []
            run.append(self._as_history(channel, entry))
        self.history.replace(channel, run, newest)
        self._loaded.add(channel)
        del self._loading[channel]
        for entry in loading.entries or ():  # from the feed meanwhile
            if entry.epoch == self.epoch:  # (an older one is history)
                await self._receive_one(channel, entry)
        return True

    # -- the periodic check ------------------------------------------------------

    async def check(self, epoch: str | None, newest: dict[str, int]) -> None:
        """Catch up on channels whose newest sequence number on the engine is ahead of ours."""
        async with self._lock:
            if epoch is not None and epoch != self.epoch:
                self._new_epoch(epoch)
                return
            for name, seq in newest.items():
                known = self.history.last_seq.get(name, 0)
                if seq > known and name in self._loaded:
                    await self._catch_up(name, known)
