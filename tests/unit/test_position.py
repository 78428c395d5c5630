"""The one owner of ids and positions (_position.py): what it writes reads back, and the replay merge.

Both the direct path (_serve/_connection.py) and GRIP's hold (_grip/_hold.py) replay through
:func:`replay`; their behaviour is tested end to end in test_resume.py and test_grip_hold.py.
"""

from __future__ import annotations

from eventstream import MemoryHistory, ServerSentEvent
from eventstream._core import (
    assigned_id,
    combined_id,
    combined_prefix,
    new_entry,
    origin_id,
    own_seq,
    replay,
    resume_positions,
)
from eventstream._sse import encode, with_id


def _history(channels: str) -> MemoryHistory:
    """A history with event ``n`` (from 1) on channel ``channels[n - 1]``, ids assigned."""
    history = MemoryHistory()
    epoch = history.epoch
    for seq, channel in enumerate(channels, 1):
        body = ServerSentEvent(data=seq)._body
        event_id = assigned_id(epoch, seq)
        entry = new_entry(
            channel, seq, 0, event_id, origin_id(epoch), with_id(body, event_id), len(body), 1e18
        )
        history.append(entry)
    return history


def test_the_ids_written_read_back_as_their_positions() -> None:
    history = _history("abab")
    epoch = history.epoch
    assert own_seq(assigned_id(epoch, 3), epoch) == 3
    assert own_seq(origin_id(epoch), epoch) == 0
    assert resume_positions(history, epoch, ["a"], origin_id(epoch)) == {"a": 0}
    pair = ["a", "b"]
    connection_id = combined_id(combined_prefix(epoch, pair), pair, {"a": 3, "b": 2})
    assert resume_positions(history, epoch, pair, connection_id) == {"a": 3, "b": 2}


def test_an_id_line_added_later_is_the_one_an_event_built_with_it_has() -> None:
    event = ServerSentEvent(event="e", data={"x": "é"})
    assert with_id(event._body, "é-7") == encode(ServerSentEvent(event="e", data={"x": "é"}, id="é-7"))


def test_replay_merges_channels_in_publishing_order() -> None:
    history = _history("abab")
    entries, complete = replay(history, {"a": 0, "b": 2})
    assert complete
    assert [(entry.channel, entry.seq) for entry in entries] == [("a", 1), ("a", 3), ("b", 4)]


def test_replay_says_what_history_no_longer_holds() -> None:
    history = _history("ab")
    # A position no event had (a forged id): history cannot prove the client missed nothing.
    entries, complete = replay(history, {"a": 0, "b": 99})
    assert not complete
    assert [entry.seq for entry in entries] == [1]  # what it holds, for GRIP's hold body
    assert replay(None, {"a": 0}) == ([], False)
    assert replay(None, {}) == ([], True)
