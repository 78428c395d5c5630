"""When the broker's feed gathers messages before they reach the hub: in a burst only.

A burst is gathered (each batch wakes every subscriber once, so bigger batches
cost less); paced traffic is not, even when a busy event loop lets a few of its
messages in between two takes: gathering then added up to 10 ms to every
message under a flood of new streams.
"""

from __future__ import annotations

import pytest

from eventstream._redis._reader import came_fast


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
