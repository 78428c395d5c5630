"""Prometheus metrics of an :class:`~eventstream.EventStream` (the ``eventstream[prometheus]`` extra).

:func:`register` adds an :class:`EventStreamCollector` to a prometheus-client
registry; :class:`MetricsEndpoint` serves a registry at ``/metrics`` (on
asyncio and trio, in a raw ASGI app or as a framework's route). The collector reads the
counters the library keeps anyway, when it is scraped: nothing calls
prometheus-client per event, and a stream that no collector watches does
not even time its publishes. Every metric is named ``eventstream_...``;
streams are labelled by their endpoint's channel *template*, never by a
concrete channel (see the how-to *Monitoring with Prometheus* for the list).

Raises:
    ImportError: on import, when prometheus-client is not installed
        (``pip install 'eventstream[prometheus]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

if importlib.util.find_spec("prometheus_client") is None:  # pragma: no cover - tests install it
    raise ImportError("eventstream.prometheus needs prometheus-client: pip install 'eventstream[prometheus]'")

from prometheus_client import REGISTRY, CollectorRegistry, make_asgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ._core import Hub, LocalBroker
from ._grip import GripPublisher
from ._observe import END_REASONS, Histogram, Observed, TemplateCounters
from ._observe._broker import BrokerStatistics
from ._serve import answer_other
from ._stream import EventStream, engine_up, parts_of
from .types import Receive, Scope, Send

__all__ = ["EventStreamCollector", "MetricsEndpoint", "register"]


class EventStreamCollector(Collector):
    """A prometheus-client collector of one :class:`~eventstream.EventStream`'s metrics.

    Building it starts timing the stream's publishes (the one measurement
    taken per publish, into plain ints: a bisect and three additions);
    everything else is read from the stream's counters at scrape time, in
    time proportional to the number of channel templates, not of streams or
    channels. Register it yourself (``registry.register(collector)``) or
    with :func:`register`. One stream per registry: a second stream's
    collector in the same registry has the same metric names, and
    prometheus-client refuses it (``ValueError``).
    """

    def __init__(self, stream: EventStream) -> None:
        self.stream: EventStream = stream
        parts = parts_of(stream)
        self._timing = parts.observed.watch()
        self._feed_lag = parts.hub.watch_feed_lag()

    def describe(self) -> list[Metric]:
        """The metric families (so that a registry refuses a second collector of the same names)."""
        return list(self.collect())

    def collect(self) -> Iterator[Metric]:
        """The metric families, read now (prometheus-client calls it on each scrape)."""
        parts = parts_of(self.stream)
        observed = parts.observed
        yield from _template_families(list(observed.templates.values()))
        yield from _hub_families(parts.hub)
        yield from _publish_families(self._timing, observed)
        if not isinstance(parts.broker, LocalBroker):
            up = engine_up(parts)
            yield GaugeMetricFamily(
                "eventstream_broker_engine_up",
                "1 when the broker runs and its latest contact with the engine "
                "(a publish, a readiness check) succeeded.",
                value=1 if up else 0,
            )
            feed = parts.broker.statistics()
            if feed is not None:
                yield from _feed_families(feed)
                yield _histogram(
                    "eventstream_broker_feed_lag_seconds",
                    "From an event's publish (the engine's clock) to its delivery here from the feed "
                    "(this process's clock).",
                    self._feed_lag,
                )
        if parts.grip is not None:
            yield from _grip_families(parts.grip)
            yield _grip_streams_family(list(observed.templates.values()))


def _template_families(templates: list[TemplateCounters]) -> Iterator[Metric]:
    open_ = GaugeMetricFamily(
        "eventstream_streams_open", "Event streams open now, per channel template.", labels=["template"]
    )
    opened = CounterMetricFamily(
        "eventstream_streams_opened", "Event streams started, per channel template.", labels=["template"]
    )
    closed = CounterMetricFamily(
        "eventstream_streams_closed",
        "Event streams ended, per channel template and reason "
        "(client left, slow: dropped by the slow-consumer policy, shutdown, reset, error).",
        labels=["template", "reason"],
    )
    replayed = CounterMetricFamily(
        "eventstream_events_replayed",
        "Events replayed from history to clients that resumed with Last-Event-ID.",
        labels=["template"],
    )
    resets = CounterMetricFamily(
        "eventstream_stream_resets",
        "stream-reset events sent (history could not tell what a client missed).",
        labels=["template"],
    )
    written = CounterMetricFamily(
        "eventstream_written_bytes",
        "Bytes of events written to clients (live, replayed, caught up).",
        labels=["template"],
    )
    caught_up = CounterMetricFamily(
        "eventstream_streams_caught_up",
        "Times a stream left behind by publishes caught up from history and joined the live stream.",
        labels=["template"],
    )
    for counters in templates:
        label = [counters.label]
        open_.add_metric(label, counters.open)
        opened.add_metric(label, counters.opened)
        for reason in END_REASONS:
            closed.add_metric([counters.label, reason], counters.closed[reason])
        replayed.add_metric(label, counters.replayed)
        resets.add_metric(label, counters.resets)
        written.add_metric(label, counters.written_bytes)
        caught_up.add_metric(label, counters.caught_up)
    yield from (open_, opened, closed, replayed, resets, written, caught_up)


def _hub_families(hub: Hub) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "eventstream_subscribers", "Subscribers now (one per open stream).", value=hub.subscriber_count()
    )
    yield CounterMetricFamily(
        "eventstream_events_published",
        "Events published (publish_event calls, one per event and channel).",
        value=hub.published,
    )
    yield CounterMetricFamily(
        "eventstream_events_delivered",
        "Events written to clients, once per client (live, and caught up by clients left behind).",
        value=hub.delivered,
    )
    yield CounterMetricFamily(
        "eventstream_subscribers_left_behind",
        "Times a subscriber's buffer stayed full and publishes left it behind to catch up from history.",
        value=hub.left_behind,
    )
    yield CounterMetricFamily(
        "eventstream_events_dropped",
        "Events dropped from full buffers under the drop-oldest policy.",
        value=hub.events_dropped,
    )


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    buckets = []
    cumulative = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        cumulative += count
        buckets.append((_le(bound), cumulative))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.sum)


def _publish_families(timing: Histogram, observed: Observed) -> Iterator[Metric]:
    yield _histogram(
        "eventstream_publish_duration_seconds",
        "How long publish_event took, until every subscriber (and GRIP proxy) had the event.",
        timing,
    )
    errors = CounterMetricFamily(
        "eventstream_publish_errors",
        "Publishes that raised, by cause (broker: its engine; grip: a proxy).",
        labels=["reason"],
    )
    for reason, count in observed.publish_errors.items():
        errors.add_metric([reason], count)
    yield errors


def _feed_families(feed: BrokerStatistics) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "eventstream_broker_feed_channels",
        "Channels whose feed from the engine this process takes in (served, or lingering).",
        value=feed.feed_channels,
    )
    yield CounterMetricFamily(
        "eventstream_broker_feed_messages",
        "Messages taken in from the engine's feed (one per event of the channels taken in).",
        value=feed.feed_messages,
    )
    yield CounterMetricFamily(
        "eventstream_broker_feed_dropped",
        "Feed messages dropped because this process fell too far behind (read from history instead).",
        value=feed.feed_dropped,
    )
    yield CounterMetricFamily(
        "eventstream_broker_feed_unchecked",
        "Feed messages ignored unchecked: more a second than the engine is asked to confirm.",
        value=feed.feed_unchecked,
    )
    yield CounterMetricFamily(
        "eventstream_broker_events_filled",
        "Events delivered from reads of the engine's history: gaps in the feed filled, catch-ups.",
        value=feed.events_filled,
    )
    yield CounterMetricFamily(
        "eventstream_broker_feed_requests",
        "Subscribe and unsubscribe requests sent for the feed.",
        value=feed.feed_requests,
    )


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _grip_families(grip: GripPublisher) -> Iterator[Metric]:
    published = CounterMetricFamily(
        "eventstream_grip_items_published", "Items a GRIP proxy accepted.", labels=["proxy"]
    )
    requests = CounterMetricFamily(
        "eventstream_grip_requests", "HTTP requests to a GRIP proxy, retries included.", labels=["proxy"]
    )
    retries = CounterMetricFamily(
        "eventstream_grip_retries", "Requests to a GRIP proxy repeated after a failure.", labels=["proxy"]
    )
    failures = CounterMetricFamily(
        "eventstream_grip_failures",
        "Batches a GRIP proxy never accepted (their publishers got GripPublishError).",
        labels=["proxy"],
    )
    for proxy in grip.statistics():
        label = [urlunsplit(urlsplit(proxy.control_uri)._replace(query=""))]  # no query: no tokens
        published.add_metric(label, proxy.items_published)
        requests.add_metric(label, proxy.requests)
        retries.add_metric(label, proxy.retries)
        failures.add_metric(label, proxy.failures)
    yield from (published, requests, retries, failures)


def _grip_streams_family(templates: list[TemplateCounters]) -> Metric:
    opened = CounterMetricFamily(
        "eventstream_grip_streams_opened",
        "Event streams opened through a GRIP proxy, per channel template: hold instructions sent "
        "(not next-link fetches). The proxy holds them; it does not tell when they end.",
        labels=["template"],
    )
    for counters in templates:
        opened.add_metric([counters.label], counters.grip_opened)
    return opened


def register(stream: EventStream, registry: CollectorRegistry = REGISTRY) -> EventStreamCollector:
    """Build an :class:`EventStreamCollector` of ``stream`` and register it in ``registry``.

    ``registry`` defaults to prometheus-client's global one (what
    ``make_asgi_app()`` serves by default). Returns the collector
    (``registry.unregister(collector)`` removes it).

    Raises:
        ValueError: ``registry`` already has these metric names (another
            stream's collector).
    """
    collector = EventStreamCollector(stream)
    registry.register(collector)
    return collector


class MetricsEndpoint:
    """An ASGI app that serves ``registry`` in Prometheus's text format (mount it at ``/metrics``).

    HTTP requests get prometheus-client's own exposition (``make_asgi_app``:
    the format the ``Accept`` header asks for, gzip when accepted). As an
    endpoint of this library does, it also answers the ``lifespan`` protocol
    and closes ``websocket`` connections, so it can be a raw ASGI app's
    route, a server's top-level app, or a framework's route (a class
    instance, so Starlette's ``Route`` treats it as an ASGI app).
    """

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry: CollectorRegistry = registry
        self._app = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._app(scope, receive, send)
        else:
            await answer_other(scope, receive, send)
