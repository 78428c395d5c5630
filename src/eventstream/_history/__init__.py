"""What is kept for clients that resume: the history of each channel (``_store``: the entries, the
store interface, the in-process store) and positions in it (``_position``: the one reader and writer
of the ids a client resumes from, and the replay merge)."""

from ._position import (
    MAX_ID,
    assigned_id,
    channels_digest,
    combined_id,
    combined_prefix,
    origin_id,
    own_seq,
    replay,
    resume_positions,
)
from ._store import _ENTRY_OVERHEAD, HistoryEntry, HistoryStore, MemoryHistory, new_entry

__all__ = [
    "MAX_ID",
    "_ENTRY_OVERHEAD",
    "HistoryEntry",
    "HistoryStore",
    "MemoryHistory",
    "assigned_id",
    "channels_digest",
    "combined_id",
    "combined_prefix",
    "new_entry",
    "origin_id",
    "own_seq",
    "replay",
    "resume_positions",
]
