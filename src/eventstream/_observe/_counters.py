"""The counters behind the metrics: plain ints, kept per channel template, read at scrape time.

A stream's counters are labelled by its endpoint's channel *template*, the
channel spec as the app wrote it (``"user-{id}"``, ``["news", "alerts"]``,
or the name of a channels callable), never by a concrete channel or
anything from the request: a million users make one series, not a million.
Streams served by :meth:`EventStream.run` (concrete channels, no template)
share the label ``(run)``. An app that builds endpoints per request (so
each spec is a concrete name) gets at most :data:`MAX_TEMPLATES` labels;
streams of any further spec count under ``(other)``.

Nothing here calls a metrics library: a connection adds to its template's
ints where it already does the work (once per write, not per event), and a
collector reads them when it is scraped.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from typing import Final

from .._base import BrokerError, GripPublishError

__all__ = [
    "END_REASONS",
    "FEED_LAG_BUCKETS",
    "MAX_TEMPLATES",
    "OTHER_TEMPLATE",
    "PUBLISH_BUCKETS",
    "RUN_TEMPLATE",
    "UNCOUNTED",
    "Observed",
    "Histogram",
    "TemplateCounters",
]

#: Why a stream ended: its client left; it was disconnected for taking nothing
#: (``send_timeout``, the slow-consumer policy); the event stream was closed
#: (shutdown); the broker's engine lost its data, so the stream was ended for its
#: client to reconnect and reset; or a server error (``stream-error`` was sent).
END_REASONS: Final = ("client", "slow", "shutdown", "reset", "error")
#: The most distinct template labels one stream counts under; beyond, ``OTHER_TEMPLATE``.
MAX_TEMPLATES: Final = 100
#: The label of streams served by ``EventStream.run`` (concrete channels, no template).
RUN_TEMPLATE: Final = "(run)"
#: The label of the templates beyond ``MAX_TEMPLATES``.
OTHER_TEMPLATE: Final = "(other)"
#: Publish-duration histogram bounds, seconds (Prometheus ``le``; +Inf is implied).
PUBLISH_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Feed-lag histogram bounds, seconds: from an event's publish to its delivery from the feed.
FEED_LAG_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class TemplateCounters:
    """The counters of the streams of one channel template."""

    __slots__ = (
        "caught_up", "closed", "grip_opened", "label", "opened", "replayed", "resets", "written_bytes",
    )  # fmt: skip

    def __init__(self, label: str) -> None:
        self.label: str = label
        #: Streams that started (their response began).
        self.opened: int = 0
        #: Streams that ended, per reason (``END_REASONS``).
        self.closed: dict[str, int] = dict.fromkeys(END_REASONS, 0)
        #: Events written from history to clients that resumed with ``Last-Event-ID``.
        self.replayed: int = 0
        #: ``stream-reset`` events sent (history could not tell what a client missed).
        self.resets: int = 0
        #: Bytes of events written (live, replayed and caught up; not headers nor keep-alives).
        self.written_bytes: int = 0
        #: Times a stream that publishes had left behind caught up from history (or got
        #: ``stream-reset`` when history no longer had what it missed) and joined the live stream.
        self.caught_up: int = 0
        #: Streams opened through a GRIP proxy: hold instructions sent for a client's request (not for
        #: the proxy's next-link requests). The proxy holds them, so they are in none of the counts
        #: above, and this process is not told when they end.
        self.grip_opened: int = 0

    @property
    def open(self) -> int:
        """Streams open now."""
        return self.opened - sum(self.closed.values())


#: Where a connection built outside an endpoint counts (nothing reads it).
UNCOUNTED: Final = TemplateCounters("")


class Histogram:
    """Durations counted per bucket, kept while a collector watches (publishes, the feed's lag)."""

    __slots__ = ("bounds", "clock", "count", "counts", "sinks", "sum")

    def __init__(self, bounds: tuple[float, ...] = PUBLISH_BUCKETS) -> None:
        #: The buckets' upper bounds, seconds, ascending (+Inf is implied).
        self.bounds: tuple[float, ...] = bounds
        #: What durations are measured with (where the observer measures them).
        self.clock: Callable[[], float] = time.perf_counter
        #: Observations per bucket of ``bounds`` (not cumulative), the last for +Inf.
        self.counts: list[int] = [0] * (len(bounds) + 1)
        self.count: int = 0
        self.sum: float = 0.0
        #: Also given each observation: OpenTelemetry histograms' ``record`` (``eventstream.otel``).
        self.sinks: list[Callable[[float], object]] = []

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds
        for sink in self.sinks:
            sink(seconds)


class Observed:
    """One event stream's counters for monitoring (``parts_of(stream).observed``)."""

    __slots__ = ("engine_up", "publish_errors", "templates", "timing")

    def __init__(self) -> None:
        #: Per template label (at most ``MAX_TEMPLATES`` and ``OTHER_TEMPLATE``).
        self.templates: dict[str, TemplateCounters] = {}
        #: Set while a collector watches: then each publish is timed.
        self.timing: Histogram | None = None
        #: Publishes that raised, by cause: the broker's engine, or a GRIP proxy.
        self.publish_errors: dict[str, int] = {"broker": 0, "grip": 0}
        #: Whether the latest contact with a shared broker's engine (a publish, a
        #: readiness check) succeeded; ``None`` before any.
        self.engine_up: bool | None = None

    def watch(self) -> Histogram:
        """Start timing publishes (a collector was registered); idempotent."""
        if self.timing is None:
            self.timing = Histogram(PUBLISH_BUCKETS)
        return self.timing

    def opened(self, label: str) -> TemplateCounters:
        """Count a stream that starts, under its endpoint's template ``label`` (:data:`RUN_TEMPLATE` for
        concrete channels); return the template's counters."""
        counters = self.template(label)
        counters.opened += 1
        return counters

    def template(self, label: str) -> TemplateCounters:
        counters = self.templates.get(label)
        if counters is None:
            if len(self.templates) >= MAX_TEMPLATES:
                label = OTHER_TEMPLATE
                counters = self.templates.get(label)
            if counters is None:
                counters = self.templates[label] = TemplateCounters(label)
        return counters

    def publish_failed(self, error: BaseException) -> None:
        if isinstance(error, BrokerError):
            self.publish_errors["broker"] += 1
            self.engine_up = False
        elif isinstance(error, GripPublishError):
            self.publish_errors["grip"] += 1
