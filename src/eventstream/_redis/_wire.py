"""How a published entry travels through the engine, as bytes (no I/O).

The publish script writes one message per event, used both as the pub/sub
payload and as the ``m`` field of the channel's history stream::

    {epoch}\\n{seq}\\n{id}\\n{prev_id}\\n{milliseconds}\\n{event fields}

``seq`` counts the channel's events from 1 without holes (one ``INCR`` per
publish), so an entry's predecessor is always ``seq - 1``: a process tells
from the numbers alone whether it missed something.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._history import HistoryEntry, new_entry

__all__ = ["EngineEntry", "decode_entry"]


@dataclass(frozen=True, slots=True)
class EngineEntry:
    """One event as the engine numbered it."""

    epoch: str
    seq: int
    id: str
    prev_id: str
    #: The engine's clock when it was published (ms since the Unix epoch).
    published_ms: int
    body: bytes

    def to_history(self, channel: str, now: float) -> HistoryEntry:
        """The entry as connections queue it (``now``: ``time.monotonic()`` at publish)."""
        return new_entry(
            channel,
            self.seq,
            self.seq - 1,
            self.id,
            self.prev_id,
            self.body + b"id: " + self.id.encode("utf-8") + b"\n\n",
            len(self.body),
            now,
        )


def decode_entry(message: bytes) -> EngineEntry:
    """Read one message written by the publish script.

    Raises:
        ValueError: the message is not in that format (another writer on the
            same keys, or a corrupted value).
    """
    parts = bytes(message).split(b"\n", 5)
    if len(parts) != 6:
        raise ValueError("not an eventstream entry: too few fields")
    epoch, seq, event_id, prev_id, published, body = parts
    if not (seq.isdigit() and published.isdigit()) or not epoch:
        raise ValueError("not an eventstream entry: bad sequence number or time")
    try:
        return EngineEntry(
            epoch=epoch.decode("ascii"),
            seq=int(seq),
            id=event_id.decode("utf-8"),
            prev_id=prev_id.decode("utf-8"),
            published_ms=int(published),
            body=body,
        )
    except UnicodeDecodeError as exc:
        raise ValueError(f"not an eventstream entry: {exc}") from None
