"""The process's copy of the engine's history, served synchronously to connections.

Connections read history right after subscribing, with no await in between
(:class:`~eventstream.HistoryStore` is synchronous for that reason). With a
broker, the engine holds the history; each process keeps a copy of the recent
entries of the channels it has seen, fed in order by the broker, and loaded
from the engine the first time a connection asks for a channel.

Sequence numbers are per channel and have no holes, so a run of entries
``first..last`` is complete by construction, and ``since(seq)`` is an index.
"""

from __future__ import annotations

import time
from collections import deque

from .._core import HistoryEntry, HistoryStore, origin_id

__all__ = ["SharedHistory"]


class SharedHistory(HistoryStore):
    """Recent entries per channel, each channel a run of consecutive sequence numbers.

    Args:
        epoch: The engine's epoch (the prefix of the ids it assigns).
        max_events, max_bytes, max_age: Limits per channel, as in
            :class:`~eventstream.MemoryHistory`.
    """

    #: The engine numbers each channel on its own.
    stream_wide = False

    def __init__(self, epoch: str, *, max_events: int, max_bytes: int, max_age: float) -> None:
        self.epoch = epoch
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._runs: dict[str, deque[HistoryEntry]] = {}
        self._sizes: dict[str, int] = {}
        #: The newest sequence number known per channel (also once its entries aged out).
        self.last_seq: dict[str, int] = {}

    def clear(self, epoch: str) -> None:
        """Forget everything: the engine started a new epoch."""
        self.epoch = epoch
        self._runs.clear()
        self._sizes.clear()
        self.last_seq.clear()

    def append(self, entry: HistoryEntry) -> None:
        """Add the channel's next entry; one that does not follow the run starts a new run."""
        channel = entry.channel
        run = self._runs.get(channel)
        if run is None or not run or run[-1].seq != entry.seq - 1:
            run = self._runs[channel] = deque()
            self._sizes[channel] = 0
        run.append(entry)
        self._sizes[channel] += entry.size
        self.last_seq[channel] = entry.seq
        while len(run) > self.max_events or self._sizes[channel] > self.max_bytes:
            self._sizes[channel] -= run.popleft().size

    def forget(self, channel: str) -> None:
        """Drop everything about ``channel``."""
        self._runs.pop(channel, None)
        self._sizes.pop(channel, None)
        self.last_seq.pop(channel, None)

    def replace(self, channel: str, entries: list[HistoryEntry], last_seq: int) -> None:
        """Set the channel's run to ``entries`` (consecutive, oldest first), loaded from the engine."""
        self._runs.pop(channel, None)
        self._sizes.pop(channel, None)
        for entry in entries:
            self.append(entry)
        self.last_seq[channel] = max(last_seq, self.last_seq.get(channel, 0))

    def _run(self, channel: str) -> deque[HistoryEntry] | None:
        run = self._runs.get(channel)
        if run:
            horizon = time.monotonic() - self.max_age
            while run and run[0].time < horizon:
                self._sizes[channel] -= run.popleft().size
        return run

    def last(self, channel: str) -> HistoryEntry | None:
        run = self._run(channel)
        return run[-1] if run else None

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        if seq == self.last_seq.get(channel, 0):
            return []
        run = self._run(channel)
        if seq == 0 and run and run[0].prev_id == origin_id(self.epoch):
            # Before the channel's first event, which is kept (on a cluster its
            # number is not 1: see _scripts.py).
            return list(run)
        if not run or not run[0].seq <= seq + 1 <= run[-1].seq:
            return None
        start = seq + 1 - run[0].seq
        return [run[index] for index in range(start, len(run))]

    def find(self, channel: str, event_id: str) -> int | None:
        run = self._run(channel)
        if run:
            for entry in reversed(run):
                if entry.id == event_id:
                    return entry.seq
        return None
