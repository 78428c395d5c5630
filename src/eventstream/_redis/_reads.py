"""What a read of channels' histories is (``_prepare.py``): its signatures, what it holds in flight.

:data:`Reader` and :data:`ManyReader`: the reads themselves (``_reader.py``
sends them); :class:`Follower`: what takes in what they return, and
:func:`as_history`: how an entry read is kept.

:class:`Loading`: the record of a first read (of one channel, or of the
channels a connection reads together), with the feed entries that arrive
meanwhile and its outcome, which other connections asking for those channels
wait for. :class:`Reads`: a connection's reads, queued to go in one request
with other connections'.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio

from .._base import BrokerError
from .._core import HistoryEntry
from ._batching import Queued
from ._wire import EngineEntry

if TYPE_CHECKING:
    from ._history import SharedHistory
    from ._interest import FeedInterest

__all__ = ["Follower", "Loading", "ManyReader", "Read", "Reader", "Reads", "as_history"]

#: What a read of a channel returns: the engine's epoch, the channel's newest sequence
#: number, and the entries asked for.
Read = tuple[str, int, Sequence[EngineEntry]]
#: ``read(channel, after, count)``: up to ``count`` entries after ``after`` (``-1``: the newest).
Reader = Callable[[str, int, int], Awaitable[Read]]
#: ``read_many([(channel, after), ...], count)``: what ``read`` returns for each, or
#: the :class:`BrokerError` of that read, in the same order, read together (one request).
ManyReader = Callable[[Sequence[tuple[str, int]], int], Awaitable[list[Read | BrokerError]]]


class Follower(Protocol):
    """What a :class:`Preparer` reads and calls of the follower it prepares for
    (``_follow.EngineFollower``: the follower makes its preparer, not the other way)."""

    engine: str
    history: SharedHistory
    interest: FeedInterest
    loaded: dict[str, None]
    lock: anyio.Lock
    generation: int

    @property
    def epoch(self) -> str: ...

    def new_epoch(self, epoch: str) -> None: ...

    def maybe_idle(self, names: Iterable[str]) -> None: ...

    async def receive_one(self, channel: str, entry: EngineEntry) -> None: ...

    async def catch_up(self, channel: str, known: int) -> None: ...

    async def take_in(
        self, channel: str, known: int, newest: int, entries: Sequence[EngineEntry]
    ) -> int | None: ...


def as_history(channel: str, entry: EngineEntry) -> HistoryEntry:
    """``entry`` of ``channel`` as kept in history, on this process's clock by its age on the engine's."""
    age = max(0.0, time.time() - entry.published_ms / 1000)
    return entry.to_history(channel, time.monotonic() - age)


class Loading:
    """First reads in flight (a channel's, or a connection's read together): feed entries that
    arrive meanwhile, and the outcome. One per read, not per channel: under a flood of new
    channels, thousands a second lived through the collector's passes into its oldest generation.
    """

    __slots__ = ("_done", "_entries", "errors", "finished", "generation")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        #: Feed entries that arrived meanwhile, per channel (made for the first: most reads get none).
        self._entries: dict[str, list[EngineEntry]] | None = None
        #: Why the read of a channel failed, per channel.
        self.errors: dict[str, BrokerError] = {}
        self.finished = False
        self._done: anyio.Event | None = None  # made for a waiter only: most reads have none

    def set_aside(self, channel: str, entry: EngineEntry, most: int) -> None:
        """Keep a feed entry of ``channel`` that came during the read (``most`` at most)."""
        if self._entries is None:
            self._entries = {channel: [entry]}
        else:
            kept = self._entries.setdefault(channel, [])
            if len(kept) < most:
                kept.append(entry)

    def has_entries(self) -> bool:
        """Whether feed entries were kept for any of its channels."""
        return self._entries is not None

    def entries(self, channel: str) -> list[EngineEntry]:
        """The feed entries of ``channel`` kept meanwhile."""
        return [] if self._entries is None else self._entries.get(channel, [])

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


class Reads(Queued):
    """A connection's reads, queued to be sent with other connections' (in one request)."""

    __slots__ = ("deadline", "requests", "results")

    def __init__(self, requests: list[tuple[str, int]], deadline: float) -> None:
        super().__init__()
        self.requests = requests
        #: When (``anyio.current_time()``) the connection stops waiting: its request ends by then.
        self.deadline = deadline
        self.results: list[Read | BrokerError] = []
