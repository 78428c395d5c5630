"""What a read of channels' histories holds while it is in flight (``_prepare.py``).

:class:`Loading`: the record of a first read (of one channel, or of the
channels a connection reads together), with the feed entries that arrive
meanwhile and its outcome, which other connections asking for those channels
wait for. :class:`Reads`: a connection's reads, queued to go in one request
with other connections'.
"""

from __future__ import annotations

import anyio

from .._base import BrokerError
from ._batching import Queued
from ._wire import EngineEntry

__all__ = ["Loading", "Reads"]


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
        self.results: list[tuple[str, int, list[EngineEntry]] | BrokerError] = []
