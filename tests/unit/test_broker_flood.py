"""The broker's feed and reads under a flood: gathering only real bursts, reads the collector forgets.

A burst is gathered (each batch wakes every subscriber once, so bigger batches
cost less); paced traffic is not, even when a busy event loop lets a few of its
messages in between two takes: gathering then added up to 10 ms to every
message under a flood of new streams.
"""

from __future__ import annotations

import gc

import pytest

from eventstream._redis._reader import came_fast, decode_entries


@pytest.mark.parametrize(
    ("count", "seconds"),
    [
        (4, 0.020),  # 200 events/s, taken after a 20 ms pass of a busy loop
        (1, 0.001),  # one message within a millisecond (a wait that found the next one)
        (0, 0.0005),  # nothing came while waiting
    ],
)
def test_paced_messages_are_no_burst_however_long_the_loop_took(count: int, seconds: float) -> None:
    assert not came_fast(count, seconds)


@pytest.mark.parametrize(("count", "seconds"), [(100, 0.005), (2, 0.0008), (1024, 0.05)])
def test_messages_one_per_half_millisecond_or_faster_are_a_burst(count: int, seconds: float) -> None:
    assert came_fast(count, seconds)


def test_a_new_channel_s_read_leaves_nothing_for_the_collector_to_watch() -> None:
    # A flood of new channels reads thousands a second, each answered with no entry; the
    # read (the engine's epoch, the newest number, the entries) lives until its connection
    # subscribed. With an empty list in it, the collector kept watching both.
    read = ("1700000000000", 0, decode_entries("new", []))
    gc.collect()
    assert not gc.is_tracked(read)
    # As the publish script writes an entry: epoch, number, id, previous id, time, body.
    entry = b"e1\n1\ne1-1\ne1-0\n1700000000000\ndata: x\n"
    assert [kept.id for kept in decode_entries("old", [b"not an entry", entry])] == ["e1-1"]
