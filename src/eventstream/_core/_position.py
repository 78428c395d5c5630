"""Where a resuming client stands: the one reader of the ids a client sends back.

Every path that resumes a client (a direct stream, a GRIP proxy's hold and
its next link, whatever the broker) reads the id with
:func:`resume_positions`, into a sequence number per channel. An id is one
of:

- an id the stream assigned, ``{epoch}-{seq}``: position ``seq``;
- the combined id of a connection on several channels,
  ``{epoch}-{digest}-{seq_1}.{seq_2}...{seq_n}`` (see ``_serve/_connection.py``):
  position ``seq_k`` on the k-th channel;
- any other id (the caller's own): the position of the event with that id,
  if history still holds it.

Sequence numbers are ASCII digits, at most 18 of them (``int()`` also
accepts other scripts' digits, such as ``'٣'``, and would read 5,000 of
them). An id longer than :data:`MAX_ID` characters is not looked up.

One id names a position on *every* channel of a connection only when
sequence numbers come from one counter for all channels (the in-process
broker's, :attr:`HistoryStore.stream_wide`): a client that got event ``n``
through a GRIP proxy got every event of its channels numbered before ``n``
(the proxy gets them in numbering order). Otherwise such an id is a position
on the channel that holds it alone, and the other channels' are unknown.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from ._store import HistoryEntry, HistoryStore

__all__ = [
    "MAX_ID",
    "assigned_id",
    "channels_digest",
    "combined_id",
    "combined_prefix",
    "origin_id",
    "own_seq",
    "replay",
    "resume_positions",
]

#: Ids longer than this are not ours: they are not even looked up.
MAX_ID = 4096
_SEQ = re.compile(r"[0-9]{1,18}")  # ASCII digits only: int() accepts '²' and '٣'


def assigned_id(epoch: str, seq: int) -> str:
    """The id the stream gives event ``seq`` of history ``epoch`` when it has none of its own."""
    return f"{epoch}-{seq}"


def origin_id(epoch: str) -> str:
    """The id before a channel's first event (GRIP's ``prev-id`` of an empty channel)."""
    return assigned_id(epoch, 0)


def channels_digest(channels: Sequence[str]) -> str:
    """A short hash of a connection's channel list (the same list gives the same digest)."""
    return hashlib.blake2b("\n".join(channels).encode("utf-8"), digest_size=4).hexdigest()


def combined_prefix(epoch: str, channels: Sequence[str]) -> str:
    """What the ids of a connection on ``channels`` (several) start with: ``{epoch}-{digest}-``."""
    return f"{epoch}-{channels_digest(channels)}-"


def combined_id(prefix: str, channels: Sequence[str], positions: Mapping[str, int]) -> str:
    """The id of a connection on several ``channels`` at ``positions``.

    ``prefix`` is the connection's :func:`combined_prefix`.
    """
    return prefix + ".".join([str(positions[name]) for name in channels])


def own_seq(event_id: str, epoch: str) -> int | None:
    """The sequence number in ``event_id`` when it is an id assigned under ``epoch``, else ``None``."""
    prefix = f"{epoch}-"
    if event_id.startswith(prefix) and _SEQ.fullmatch(event_id, len(prefix)):
        return int(event_id[len(prefix) :])
    return None


def _combined(event_id: str, epoch: str, channels: Sequence[str]) -> dict[str, int] | None:
    prefix = combined_prefix(epoch, channels)
    if not event_id.startswith(prefix):
        return None
    parts = event_id[len(prefix) :].split(".")
    if len(parts) != len(channels) or not all(_SEQ.fullmatch(part) for part in parts):
        return None
    return dict(zip(channels, map(int, parts), strict=True))


def resume_positions(
    history: HistoryStore | None, epoch: str, channels: Sequence[str], event_id: str
) -> dict[str, int] | None:
    """The sequence number a client that last got ``event_id`` stands at on each of ``channels``.

    ``None`` when history cannot tell (no history, an id of another epoch or
    process, an id history no longer holds, a malformed or overlong id, or,
    with sequence numbers per channel, an id of one event on a connection
    of several channels): the client must then be told to reset. An id of
    the caller's own held by several of the channels stands for the oldest
    of those events (the client may get one twice, never miss one). Never
    raises for any ``event_id``.
    """
    if history is None or len(event_id) > MAX_ID:
        return None
    if len(channels) > 1:
        combined = _combined(event_id, epoch, channels)
        if combined is not None:
            return combined
    seq = own_seq(event_id, epoch)
    if seq is None:
        found = [found for name in channels if (found := history.find(name, event_id)) is not None]
        if not found:
            return None
        seq = min(found)
    if len(channels) > 1 and not history.stream_wide:
        return None
    return dict.fromkeys(channels, seq)


def replay(history: HistoryStore | None, positions: Mapping[str, int]) -> tuple[list[HistoryEntry], bool]:
    """The events after ``positions`` (a sequence number per channel) merged in publishing order, and
    whether history still holds all of them (``False``: what it holds, the client must reset).

    With no history, nothing is held (but nothing is missing when ``positions`` is empty).
    """
    merged: list[HistoryEntry] = []
    complete = True
    for name, seq in positions.items():
        entries = history.since(name, seq) if history is not None else None
        if entries is None:
            complete = False
        else:
            merged.extend(entries)
    merged.sort(key=lambda entry: entry.seq)
    return merged, complete
