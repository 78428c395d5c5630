"""Before a connection subscribes: the reads of its channels, taken in by the follower.

The reads a connection needs before it subscribes go in one request with
those of the other connections that open meanwhile (one such request in
flight at a time, for up to :data:`CONNECTIONS_TOGETHER` connections; those
that open while it is out go in the next, which makes each request carry
more): a flood of connections on new channels costs a few requests, not one each. They
run outside the follower's lock: each connection takes in its own outcome
under it, so the flood does not hold up the feed of the channels already
followed; once the request is answered, its connections are woken
:data:`WOKEN_AT_ONCE` per pass of the event loop, so that the feed runs between
them. Feed entries of a channel whose first read is in flight are kept
aside meanwhile (:meth:`Preparer.set_aside`), and taken in after it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import anyio
import anyio.lowlevel

from .._base import BrokerError
from .._core import HistoryEntry
from ._batching import BatchQueue
from ._reads import Follower, Loading, ManyReader, Read, Reader, Reads, as_history
from ._wire import EngineEntry

__all__ = ["CONCURRENT_READS", "CONNECTIONS_TOGETHER", "WOKEN_AT_ONCE", "Preparer"]

#: Reads of one channel for connections about to subscribe (read again after a new
#: epoch, or by another connection meanwhile) that run at once; the others wait their turn.
CONCURRENT_READS = 128
#: Connections about to subscribe whose reads one request carries at most.
CONNECTIONS_TOGETHER = 64
#: Connections of such a request woken in one pass of the event loop, once it is answered.
WOKEN_AT_ONCE = 8


class Preparer:
    """The reads of a follower's channels for connections about to subscribe.

    What a read returns is taken in under the follower's lock, through its
    methods (``take_in``, ``catch_up``, ``new_epoch``, ``receive_one``).
    """

    def __init__(self, follower: Follower, read: Reader, read_many: ManyReader) -> None:
        self._follower = follower
        self._read = read
        self._read_many = read_many
        #: Channels of the connections being prepared (how many each): kept while they are.
        self.preparing: dict[str, int] = {}
        #: Channels whose first read is in flight.
        self._loading: dict[str, Loading] = {}
        self._reads = anyio.Semaphore(CONCURRENT_READS, fast_acquire=True)
        self._together: BatchQueue[Reads] = BatchQueue(
            self._send_reads, batch_size=CONNECTIONS_TOGETHER, senders=1
        )
        self._together.bind()  # (made in the event loop that runs the broker)

    def set_aside(self, channel: str, entry: EngineEntry) -> None:
        """Keep a feed entry of a channel not followed yet, if its first read is in flight.

        It is taken in after the read (a bounded number: past that, the gap
        shows and is read); without a read in flight, it is dropped.
        """
        loading = self._loading.get(channel)
        if loading is not None:
            loading.set_aside(channel, entry, self._follower.history.max_events)

    async def reload(self, channel: str) -> None:
        """Read ``channel`` again as a new channel (the engine's numbering of it went back).

        Called with the follower's lock held (not through :meth:`_load`).

        Raises:
            BrokerError: the engine could not be reached.
        """
        follower = self._follower
        try:
            await follower.interest.follow((channel,))  # (subscribed already, unless it was just dropped)
            epoch, newest, entries = await self._read(channel, -1, follower.history.max_events)
            loading = self._loading[channel] = Loading(follower.generation)
            try:
                await self.install(channel, loading, epoch, newest, entries)
            finally:
                if self._loading.get(channel) is loading:
                    del self._loading[channel]
                loading.finish()
        finally:
            follower.maybe_idle((channel,))  # (followed again, or only subscribed: it may be idle)

    async def prepare(
        self, channels: Sequence[str], *, within: float = math.inf, resuming: bool = True
    ) -> None:
        """Load the history of channels seen for the first time, and catch up on the others.

        Without ``resuming`` (a connection that starts from now), the channels
        already followed are not read: nothing is asked of the engine for them.

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
        follower = self._follower
        if not resuming:
            channels = [channel for channel in channels if channel not in follower.loaded]
            if not channels:
                return
        errors: list[BrokerError] = []

        async def prepare_one(channel: str) -> None:
            try:
                await self._prepare_one(channel)
            except BrokerError as exc:
                errors.append(exc)

        preparing = self.preparing
        for channel in channels:  # not forgotten before the connection subscribes
            preparing[channel] = preparing.get(channel, 0) + 1
        try:
            # No cancel scope around the reads together (a cheaper deadline each: see
            # _prepare_together), and most connections need nothing else.
            deadline = anyio.current_time() + within
            rest = await self._prepare_together(channels, errors, deadline)
            if rest:
                # What the reads together leave (read by another connection, or
                # read again after a new epoch) is prepared channel by channel.
                with anyio.CancelScope(deadline=deadline):
                    if len(rest) == 1:
                        await prepare_one(rest[0])
                    else:
                        async with anyio.create_task_group() as tg:
                            for channel in rest:
                                tg.start_soon(prepare_one, channel)
        finally:
            settled = []
            for channel in channels:
                if preparing[channel] == 1:
                    del preparing[channel]
                    settled.append(channel)
                else:
                    preparing[channel] -= 1
            follower.maybe_idle(settled)  # (if its connection does not subscribe after all)
        missing = [channel for channel in channels if channel not in follower.loaded]
        if missing:
            if errors:
                raise errors[0]
            raise BrokerError(follower.engine, f"no answer within {within:g} s (request_timeout)")

    async def _prepare_together(
        self, channels: Sequence[str], errors: list[BrokerError], deadline: float
    ) -> list[str]:
        # Read every channel that no other connection is reading in one
        # request (with other connections' reads); return the channels left
        # to prepare one by one.
        follower = self._follower
        generation = follower.generation
        loading = Loading(generation)  # (one for the channels read here for the first time)
        mine: dict[str, None] = {}
        known: dict[str, int] = {}
        rest: list[str] = []
        for channel in channels:
            if channel in follower.loaded:
                known[channel] = follower.history.last_seq.get(channel, 0)
            elif channel in self._loading:
                rest.append(channel)
            elif channel not in mine:
                mine[channel] = None
                self._loading[channel] = loading
        requests = [*((channel, -1) for channel in mine), *known.items()]
        if not requests:
            return rest
        try:
            reads = Reads(requests, deadline)
            await self._together.submit(reads, deadline)
            if not reads.done:
                return rest  # its time ran out in the queue: nothing was read (the caller fails)
            if reads.error is not None:  # (a bug)
                raise reads.error
            results = reads.results
            lock = follower.lock
            try:
                lock.acquire_nowait()
            except anyio.WouldBlock:  # (rare: another read's outcome, or a gap, being taken in)
                acquired = False
                with anyio.CancelScope(deadline=deadline):
                    await lock.acquire()
                    acquired = True
                if not acquired:
                    return rest  # not in time: what was read is left (the caller fails)
            try:
                if known or loading.has_entries():
                    with anyio.CancelScope(shield=True):  # what was read is taken in whole
                        await self._take_in(requests, results, loading, generation, rest, errors)
                else:  # first reads, and nothing from the feed meanwhile: taken in without a wait
                    for (channel, _after), result in zip(requests, results, strict=True):
                        if isinstance(result, BrokerError):
                            errors.append(result)
                            loading.errors[channel] = result
                        elif not self._install_read(channel, loading, *result):
                            rest.append(channel)
            finally:
                lock.release()
        finally:
            for channel in mine:
                if self._loading.get(channel) is loading:
                    del self._loading[channel]
            loading.finish()
        return rest

    async def _take_in(
        self,
        requests: list[tuple[str, int]],
        results: list[Read | BrokerError],
        loading: Loading,
        generation: int,
        rest: list[str],
        errors: list[BrokerError],
    ) -> None:
        # Take in the reads of a connection (the follower's lock held, shielded):
        # first reads (after -1) are installed, the others refresh a followed
        # channel; a channel to be read anew goes to `rest`, an error to `errors`.
        for (channel, after), result in zip(requests, results, strict=True):
            first = after < 0  # (read here for the first time: in `mine`)
            try:
                if isinstance(result, BrokerError):
                    raise result
                if first:
                    if not await self.install(channel, loading, *result):
                        rest.append(channel)
                elif not await self._refreshed(channel, generation, after, *result):
                    rest.append(channel)
            except BrokerError as exc:  # (also: a gap after it that could not be read)
                errors.append(exc)
                if first:
                    loading.errors[channel] = exc

    async def _send_reads(self, batch: list[Reads]) -> None:
        # The reads of the connections in `batch`, in one request (a call of the
        # read script per _READ_TOGETHER channels, sent at once), each given its
        # results. It ends by the earliest deadline of theirs: the connection
        # sending it (shielded: the others depend on it) returns in time too.
        follower = self._follower
        requests = [request for reads in batch for request in reads.requests]
        results: list[Read | BrokerError] = []
        with anyio.CancelScope(deadline=min(reads.deadline for reads in batch)):
            channels = {channel for channel, _after in requests}
            try:
                # Subscribed first: what is published after the read comes through the feed.
                await follower.interest.follow(channels)
            except BrokerError as exc:
                results = [exc] * len(requests)
            else:
                # (A connection of the batch may have gone meanwhile: its channels are subscribed
                # for nobody, and its preparation's end was looked at before.)
                follower.maybe_idle(channels)
                results = await self._read_many(requests, follower.history.max_events)
        if not results:
            late = BrokerError(follower.engine, "no answer in time (request_timeout)")
            results = [late] * len(requests)
        start = 0
        for reads in batch:  # (every outcome first: one whose deadline passes before its wake has it)
            reads.results = results[start : start + len(reads.requests)]
            start += len(reads.requests)
            reads.done = True
        for index, reads in enumerate(batch):
            if index and not index % WOKEN_AT_ONCE:
                # The connections woken take their reads in (and answer their clients)
                # before the next are woken: the feed of the channels already followed
                # runs in between, not after a whole batch of them.
                await anyio.lowlevel.checkpoint()
            reads.wake()

    async def _prepare_one(self, channel: str) -> None:
        follower = self._follower
        while True:
            if channel not in follower.loaded:
                await self._load(channel)
                return
            generation = follower.generation
            known = follower.history.last_seq.get(channel, 0)
            async with self._reads:
                epoch, newest, entries = await self._read(channel, known, follower.history.max_events)
            async with follower.lock:
                with anyio.CancelScope(shield=True):  # what was read is taken in whole
                    if await self._refreshed(channel, generation, known, epoch, newest, entries):
                        return

    async def _refreshed(
        self,
        channel: str,
        generation: int,
        known: int,
        epoch: str,
        newest: int,
        entries: Sequence[EngineEntry],
    ) -> bool:
        """Take in a read of a followed channel after ``known``; False if it must be read anew."""
        follower = self._follower
        if generation != follower.generation or channel not in follower.loaded:
            return False  # a new epoch, or forgotten meanwhile
        if epoch and epoch != follower.epoch:
            follower.new_epoch(epoch)
            return False
        after = await follower.take_in(channel, known, newest, entries)
        if after is not None:  # more than one read's worth is missing (rare)
            await follower.catch_up(channel, after)
        return True

    async def _load(self, channel: str) -> None:
        # Read a channel's history for the first time; one read per channel
        # at a time (other connections asking for it wait for its outcome).
        follower = self._follower
        while channel not in follower.loaded:
            loading = self._loading.get(channel)
            if loading is not None:
                await loading.wait()
                error = loading.errors.get(channel)
                if error is not None:
                    raise error
                continue
            loading = self._loading[channel] = Loading(follower.generation)
            try:
                await follower.interest.follow((channel,))  # (before the read: see _send_reads)
                async with self._reads:
                    epoch, newest, entries = await self._read(channel, -1, follower.history.max_events)
                async with follower.lock:
                    with anyio.CancelScope(shield=True):  # what was read is taken in whole
                        await self.install(channel, loading, epoch, newest, entries)
            except BrokerError as exc:
                loading.errors[channel] = exc
                raise
            finally:
                if self._loading.get(channel) is loading:
                    del self._loading[channel]
                loading.finish()

    async def install(
        self, channel: str, loading: Loading, epoch: str, newest: int, entries: Sequence[EngineEntry]
    ) -> bool:
        """Take in the first read of a channel; False if it must be read anew (a new epoch since)."""
        if not self._install_read(channel, loading, epoch, newest, entries):
            return False
        follower = self._follower
        for entry in loading.entries(channel):  # from the feed meanwhile
            if entry.epoch == follower.epoch:  # (an older one is history)
                await follower.receive_one(channel, entry)
        return True

    def _install_read(
        self, channel: str, loading: Loading, epoch: str, newest: int, entries: Sequence[EngineEntry]
    ) -> bool:
        # The first read of a channel as its history; False if it must be read
        # anew. The feed's entries kept meanwhile are the caller's to take in.
        follower = self._follower
        if loading.generation != follower.generation:
            return False
        if channel in follower.loaded:  # installed meanwhile (a reload): read on from its copy instead
            return False
        if epoch and epoch != follower.epoch:
            follower.new_epoch(epoch)
        run: list[HistoryEntry] = []
        for entry in entries:
            if run and entry.seq != run[-1].seq + 1:
                run = []
            run.append(as_history(channel, entry))
        follower.history.replace(channel, run, newest)
        follower.loaded[channel] = None
        if self._loading.get(channel) is loading:  # (a reload may have put its own in its place)
            del self._loading[channel]
        return True
