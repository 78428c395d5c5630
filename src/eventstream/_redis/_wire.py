"""How a published entry travels through the engine, as bytes (no I/O).

The publish script writes one message per event, used both as the pub/sub
payload and as the ``m`` field of the channel's history stream::

    {epoch}\\n{seq}\\n{id}\\n{prev_id}\\n{milliseconds}[ {traceparent}]\\n{event fields}

``seq`` counts the channel's events from 1 without holes (one ``INCR`` per
publish), so an entry's predecessor is always ``seq - 1``: a process tells
from the numbers alone whether it missed something.

A publish made inside a span (tracing on) carries the span's W3C
``traceparent`` after the time, so the process that delivers the event
continues its trace. The engine passes it on unread; a reader takes it
only when it is exactly a ``traceparent`` (55 characters, lowercase hex
fields), and ignores anything else there: anyone who may publish on the
engine can write this line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._core import HistoryEntry, new_entry

__all__ = ["EngineEntry", "decode_entry", "traced_mark"]

#: A W3C traceparent: version, trace id, parent id, flags (all-zero ids are the propagator's to refuse).
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_TRACEPARENT_LENGTH = 55


def traced_mark(channel_mark: bytes, traceparent: str | None) -> bytes:
    """The channel index line of a publish argument, with ``traceparent`` for the engine to pass on.

    ``channel_mark``: ``b"{index}\\n"``. A ``traceparent`` that is not one
    (empty, too long, other characters) is left out.
    """
    if not traceparent or len(traceparent) != _TRACEPARENT_LENGTH:
        return channel_mark
    raw = traceparent.encode("ascii", "replace")
    if _TRACEPARENT.fullmatch(raw) is None:
        return channel_mark
    return channel_mark[:-1] + b" " + raw + b"\n"


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
    #: The W3C ``traceparent`` of the publish's span, when it was traced.
    traceparent: str | None = None

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
    traceparent: str | None = None
    if b" " in published:
        published, carried = published.split(b" ", 1)
        if len(carried) == _TRACEPARENT_LENGTH and _TRACEPARENT.fullmatch(carried) is not None:
            traceparent = carried.decode("ascii")
    if not (seq.isdigit() and published.isdigit()) or not epoch:
        raise ValueError("not an eventstream entry: bad sequence number or time")
    # (The engine's numbers fit 64 bits and its times are ms: longer ones no script wrote, and
    # a time of 400 digits overflowed a float in the lag metric, which ended the feed.)
    if len(seq) > 19 or len(published) > 15:
        raise ValueError("not an eventstream entry: sequence number or time out of range")
    try:
        return EngineEntry(
            epoch=epoch.decode("ascii"),
            seq=int(seq),
            id=event_id.decode("utf-8"),
            prev_id=prev_id.decode("utf-8"),
            published_ms=int(published),
            body=body,
            traceparent=traceparent,
        )
    except UnicodeDecodeError as exc:
        raise ValueError(f"not an eventstream entry: {exc}") from None
