"""The events a stream sends of its own (besides the app's): their bytes, built once where they can be.

``stream-open`` starts every stream (with the reconnection delay, if any);
``keep-alive`` fills silences (and is GRIP's ``Grip-Keep-Alive`` content);
``stream-reset`` tells a resuming client that history cannot tell what it
missed; ``stream-error`` ends a stream the server failed (its id ``error``
makes a resuming client's request refused, not replayed); ``stream-expired``
ends a stream whose credentials expired (no id: the client's last id stays
its last event's, so it resumes with new credentials and loses nothing).
"""

from __future__ import annotations

from typing import Final

from ._event import ServerSentEvent, encode

__all__ = ["KEEP_ALIVE", "STREAM_ERROR", "STREAM_EXPIRED", "STREAM_RESET", "stream_open", "stream_reset"]

KEEP_ALIVE: Final = encode(ServerSentEvent(event="keep-alive"))
STREAM_RESET: Final = encode(ServerSentEvent(event="stream-reset"))
STREAM_ERROR: Final = encode(
    ServerSentEvent(event="stream-error", id="error", data={"reason": "server error"})
)
STREAM_EXPIRED: Final = encode(ServerSentEvent(event="stream-expired", data={"reason": "token expired"}))
_STREAM_OPEN: Final = encode(ServerSentEvent(event="stream-open"))


def stream_open(retry: int | None) -> bytes:
    """``stream-open``, with ``retry`` (ms) when given.

    Raises:
        ValueError: ``retry`` is not an int from 0 to ``MAX_RETRY``.
    """
    return _STREAM_OPEN if retry is None else encode(ServerSentEvent(event="stream-open", retry=retry))


def stream_reset(event_id: str | None) -> bytes:
    """``stream-reset`` with ``event_id`` (where the client stands now), or without an id."""
    return STREAM_RESET if event_id is None else encode(ServerSentEvent(event="stream-reset", id=event_id))
