"""OpenTelemetry metrics of an :class:`~eventstream.EventStream` (the ``eventstream[otel]`` extra).

:func:`instrument` creates observable instruments on an OpenTelemetry meter
whose callbacks read the counters the library keeps anyway (the ones
``eventstream.prometheus`` reads): nothing is recorded per event, and when
no OpenTelemetry SDK is configured the API's meter is a no-op whose
callbacks never run. Instruments are named ``eventstream.*``; streams carry
their endpoint's channel template as ``messaging.destination.template`` (an
OpenTelemetry messaging attribute), never a concrete channel.

:func:`trace` makes spans, with OpenTelemetry's messaging conventions
(semantic conventions 1.44, ``messaging.*``): one per publish (kind
``PRODUCER``, named ``publish``), one per event a shared broker delivers
from its engine's feed (kind ``CONSUMER``, named ``process``, the child of
the publish's span, whichever process published: the span's W3C
``traceparent`` travels with the event), and one per stream's life (kind
``INTERNAL``, named ``stream {template}``, ended with its end reason).

Raises:
    ImportError: on import, when opentelemetry-api is not installed
        (``pip install 'eventstream[otel]'``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Sequence

if importlib.util.find_spec("opentelemetry") is None:  # pragma: no cover - tests install it
    raise ImportError("eventstream.otel needs opentelemetry-api: pip install 'eventstream[otel]'")

from opentelemetry.metrics import (
    CallbackOptions,
    Instrument,
    Meter,
    MeterProvider,
    NoOpHistogram,
    Observation,
    get_meter,
)
from opentelemetry.trace import TracerProvider, get_tracer

from . import __version__
from ._core import Hub, LocalBroker
from ._observe import (
    END_REASONS,
    FEED_LAG_BUCKETS,
    PUBLISH_BUCKETS,
    Histogram,
    Observed,
    TemplateCounters,
    _otel,
)
from ._observe._broker import BrokerStatistics
from ._observe._otel import SCHEMA, OtelTracing
from ._serve import Serving
from ._stream import EventStream, Publisher, engine_up, parts_of

__all__ = ["END_REASON", "TEMPLATE", "instrument", "trace"]

#: The attribute that names a stream's channel template (OpenTelemetry's messaging conventions).
TEMPLATE = _otel.TEMPLATE
#: Why a stream ended (one of ``eventstream._observe.END_REASONS``), on its span and its metric.
END_REASON = _otel.END_REASON
_Callback = Callable[[CallbackOptions], Iterable[Observation]]


def trace(stream: EventStream | Publisher, tracer_provider: TracerProvider | None = None) -> None:
    """Have ``stream`` make spans with the ``eventstream`` tracer of ``tracer_provider``.

    ``stream`` may also be a :class:`~eventstream.Publisher`: its publishes
    make ``publish`` spans, whose context the events carry to the processes
    that deliver them.

    ``tracer_provider`` defaults to OpenTelemetry's global one (a no-op
    until ``opentelemetry.trace.set_tracer_provider`` configures an SDK).
    While nothing would record them (that no-op, or a ``NoOpTracerProvider``),
    no span is begun: a publish pays one check. Spans begin within a second
    of an SDK's configuring the global provider. Spans:

    - ``publish`` (``PRODUCER``), around each :meth:`~eventstream.EventStream.publish_event`:
      ``messaging.destination.name`` is the channel; the span records the
      error a publish raised. With a :class:`~eventstream.RedisBroker`, its
      ``traceparent`` is sent with the event.
    - ``process`` (``CONSUMER``), with a shared broker: the delivery of an
      event from the engine's feed to this process's subscribers, the child
      of the ``publish`` span that sent it (in this process or another).
    - ``stream {template}`` (``INTERNAL``): a stream's life, with its
      endpoint's ``messaging.destination.template`` and, when it ends,
      ``eventstream.end_reason`` (status ``ERROR`` for ``error``).

    A later call replaces the earlier one's tracer.
    """
    tracing = OtelTracing(
        get_tracer("eventstream", __version__, tracer_provider, schema_url=SCHEMA), tracer_provider
    )
    if isinstance(stream, Publisher):
        stream.tracing = tracing
    else:
        parts_of(stream).hub.tracing = tracing


def instrument(stream: EventStream, meter_provider: MeterProvider | None = None) -> Sequence[Instrument]:
    """Create ``stream``'s instruments on the ``eventstream`` meter of ``meter_provider``.

    ``meter_provider`` defaults to OpenTelemetry's global one (what
    ``opentelemetry.metrics.set_meter_provider`` configured; a no-op until
    then). The counters and gauges are observable: read when the SDK's
    reader collects, in time proportional to the number of channel
    templates. Two histograms are recorded as things happen:
    ``eventstream.publish.duration`` (each publish is then timed) and, with
    a shared broker, ``eventstream.broker.feed.lag`` (each event its feed
    delivers here: from the engine's clock at publish to this process's at
    delivery, so clocks apart add to it). Call it once per
    stream and provider: a second call makes a second set of callbacks
    (the SDK warns of duplicate instruments). Returns the instruments.
    """
    meter = get_meter("eventstream", __version__, meter_provider=meter_provider)
    parts = parts_of(stream)
    return [
        *_template_instruments(meter, parts.observed),
        *_hub_instruments(meter, parts.hub, parts.observed),
        *_histograms(meter, parts),
        *_broker_instruments(meter, parts),
        *_grip_instruments(meter, parts),
    ]


def _histograms(meter: Meter, parts: Serving) -> list[Instrument]:
    # Recorded as they happen (OpenTelemetry has no observable histogram): each publish, and each
    # event a shared broker's feed delivers here.
    found = [
        _recorded(
            meter,
            "eventstream.publish.duration",
            "How long publish_event took, until every subscriber (and GRIP proxy) had the event.",
            PUBLISH_BUCKETS,
            parts.observed.watch,
        )
    ]
    if not isinstance(parts.broker, LocalBroker):
        found.append(
            _recorded(
                meter,
                "eventstream.broker.feed.lag",
                "From an event's publish (the engine's clock) to its delivery here from the feed.",
                FEED_LAG_BUCKETS,
                parts.hub.watch_feed_lag,
            )
        )
    return found


def _recorded(
    meter: Meter, name: str, description: str, bounds: Sequence[float], watch: Callable[[], Histogram]
) -> Instrument:
    # A histogram in seconds that each observation of what `watch` starts is recorded on; a no-op
    # meter's (no SDK) starts nothing, so nothing is timed for it.
    histogram = meter.create_histogram(name, "s", description, explicit_bucket_boundaries_advisory=bounds)
    if not isinstance(histogram, NoOpHistogram):
        watch().sinks.append(histogram.record)
    return histogram


def _template_instruments(meter: Meter, observed: Observed) -> list[Instrument]:
    # The streams' counters, one observation per channel template.
    def per_template(read: Callable[[TemplateCounters], int]) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(read(counters), {TEMPLATE: counters.label})
                for counters in list(observed.templates.values())
            ]

        return callback

    def closed(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(counters.closed[reason], {TEMPLATE: counters.label, END_REASON: reason})
            for counters in list(observed.templates.values())
            for reason in END_REASONS
        ]

    return [
        meter.create_observable_up_down_counter(
            "eventstream.streams.open",
            [per_template(lambda c: c.open)],
            "{stream}",
            "Event streams open now.",
        ),
        meter.create_observable_counter(
            "eventstream.streams.opened",
            [per_template(lambda c: c.opened)],
            "{stream}",
            "Event streams started.",
        ),
        meter.create_observable_counter(
            "eventstream.streams.closed",
            [closed],
            "{stream}",
            "Event streams ended, by eventstream.end_reason.",
        ),
        meter.create_observable_counter(
            "eventstream.events.replayed",
            [per_template(lambda c: c.replayed)],
            "{event}",
            "Events replayed from history to clients that resumed with Last-Event-ID.",
        ),
        meter.create_observable_counter(
            "eventstream.stream_resets",
            [per_template(lambda c: c.resets)],
            "{event}",
            "stream-reset events sent.",
        ),
        meter.create_observable_counter(
            "eventstream.written",
            [per_template(lambda c: c.written_bytes)],
            "By",
            "Bytes of events written to clients.",
        ),
        meter.create_observable_counter(
            "eventstream.streams.caught_up",
            [per_template(lambda c: c.caught_up)],
            "{stream}",
            "Times a stream left behind by publishes caught up from history.",
        ),
    ]


def _hub_instruments(meter: Meter, hub: Hub, observed: Observed) -> list[Instrument]:
    # The hub's totals (one observation each) and the publish errors, by error type.
    def total(read: Callable[[], int]) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(read())]

        return callback

    def errors(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, {"error.type": reason}) for reason, count in observed.publish_errors.items()
        ]

    return [
        meter.create_observable_up_down_counter(
            "eventstream.subscribers", [total(hub.subscriber_count)], "{subscriber}", "Subscribers now."
        ),
        meter.create_observable_counter(
            "eventstream.events.published",
            [total(lambda: hub.published)],
            "{event}",
            "Events published (one per event and channel).",
        ),
        meter.create_observable_counter(
            "eventstream.events.delivered",
            [total(lambda: hub.delivered)],
            "{event}",
            "Events written to clients, once per client (live, and caught up by clients left behind).",
        ),
        meter.create_observable_counter(
            "eventstream.subscribers.left_behind",
            [total(lambda: hub.left_behind)],
            "{subscriber}",
            "Times publishes left a subscriber whose buffer stayed full behind.",
        ),
        meter.create_observable_counter(
            "eventstream.events.dropped",
            [total(lambda: hub.events_dropped)],
            "{event}",
            "Events dropped from full buffers under the drop-oldest policy.",
        ),
        meter.create_observable_counter(
            "eventstream.publish.errors", [errors], "{publish}", "Publishes that raised, by error.type."
        ),
    ]


def _grip_instruments(meter: Meter, parts: Serving) -> list[Instrument]:
    # With GRIP: the streams opened through the proxy, per channel template (it holds them).
    if parts.grip is None:
        return []
    observed = parts.observed

    def opened(options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(counters.grip_opened, {TEMPLATE: counters.label})
            for counters in list(observed.templates.values())
        ]

    return [
        meter.create_observable_counter(
            "eventstream.grip.streams.opened",
            [opened],
            "{stream}",
            "Event streams opened through a GRIP proxy (hold instructions sent; not next-link fetches).",
        )
    ]


def _broker_instruments(meter: Meter, parts: Serving) -> list[Instrument]:
    # A shared broker's engine, up or down (none for the in-process broker).
    if isinstance(parts.broker, LocalBroker):
        return []

    def up(options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1 if engine_up(parts) else 0)]

    def feed(read: Callable[[BrokerStatistics], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            stats = parts.broker.statistics()
            return [Observation(read(stats))] if stats is not None else []

        return observe

    return [
        meter.create_observable_gauge(
            "eventstream.broker.engine_up", [up], "1", "1 while the broker's engine answers."
        ),
        meter.create_observable_up_down_counter(
            "eventstream.broker.feed.channels",
            [feed(lambda s: s.feed_channels)],
            "{channel}",
            "Channels whose feed from the engine this process takes in.",
        ),
        meter.create_observable_counter(
            "eventstream.broker.feed.messages",
            [feed(lambda s: s.feed_messages)],
            "{message}",
            "Messages taken in from the engine's feed.",
        ),
        meter.create_observable_counter(
            "eventstream.broker.feed.dropped",
            [feed(lambda s: s.feed_dropped)],
            "{message}",
            "Feed messages dropped because this process fell too far behind.",
        ),
        meter.create_observable_counter(
            "eventstream.broker.feed.unchecked",
            [feed(lambda s: s.feed_unchecked)],
            "{message}",
            "Feed messages ignored unchecked: more a second than the engine is asked to confirm.",
        ),
        meter.create_observable_counter(
            "eventstream.broker.events.filled",
            [feed(lambda s: s.events_filled)],
            "{event}",
            "Events delivered from reads of the engine's history (gaps filled, catch-ups).",
        ),
        meter.create_observable_counter(
            "eventstream.broker.feed.requests",
            [feed(lambda s: s.feed_requests)],
            "{request}",
            "Subscribe and unsubscribe requests sent for the feed.",
        ),
    ]
