"""The slowest subscribers of a hub, found when statistics are asked for (never per publish).

:func:`slowest_subscribers` walks the hub's subscribers once, at call time, and
keeps the :data:`SLOWEST_LIMIT` most behind: those left behind by publishes
first (they catch up from history), then those whose buffer was found full,
each by how long ago that began, then by how many entries they hold.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .._core import Subscriber

__all__ = ["SLOWEST_LIMIT", "SubscriberLag", "slowest_subscribers"]

#: How many subscribers ``statistics().slowest`` lists at most.
SLOWEST_LIMIT: Final = 10


@dataclass(frozen=True)
class SubscriberLag:
    """How far one subscriber is behind, when :meth:`~eventstream.EventStream.statistics` was called."""

    #: The channels it streams (concrete names, as the connection subscribed them).
    channels: tuple[str, ...]
    #: Entries queued for it and not yet taken by its connection: at most ``buffer_size``, but
    #: for one not yet proven to read whose connection is held in a send (it holds more: see
    #: ``slow_consumer``).
    queued: int
    #: Seconds since it fell behind: since publishes left it behind (its buffer stayed full),
    #: or since its buffer was found full while its connection was held in a send; 0.0
    #: when neither holds.
    seconds_behind: float
    #: Publishes left it behind: it catches up from history when it reads again (or is
    #: disconnected after ``send_timeout``).
    left_behind: bool


def slowest_subscribers(
    subscribers: Collection[Subscriber], now: Callable[[Subscriber], float], limit: int = SLOWEST_LIMIT
) -> tuple[SubscriberLag, ...]:
    """The ``limit`` subscribers most behind, most behind first; those with nothing queued and
    not behind are left out. ``now(subscriber)`` reads the event loop's clock (asked only when
    some subscriber is behind). Time proportional to the number of subscribers."""
    lags: list[tuple[bool, float, int, SubscriberLag]] = []
    clock_now: float | None = None
    for subscriber in subscribers:
        since = subscriber.stalled if subscriber.stalled is not None else subscriber.full_since
        queued = len(subscriber.queue)
        if since is None and queued == 0:
            continue
        seconds = 0.0
        if since is not None:
            if clock_now is None:
                clock_now = now(subscriber)
            seconds = max(0.0, clock_now - since)
        left_behind = subscriber.stalled is not None
        lag = SubscriberLag(subscriber.channels, queued, seconds, left_behind)
        lags.append((left_behind, seconds, queued, lag))
    return tuple(entry[3] for entry in heapq.nlargest(limit, lags, key=lambda entry: entry[:3]))
