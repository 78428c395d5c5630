"""The spans of :func:`eventstream.otel.trace`, on OpenTelemetry's API (imported by it alone).

OpenTelemetry's messaging conventions (semantic conventions 1.44) name the
attributes; the W3C ``traceparent`` of a publish's span travels with the event
(``TRACEPARENT``) to the process that delivers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.context import Context
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    StatusCode,
    Tracer,
    TracerProvider,
    get_tracer_provider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ._trace import TRACEPARENT

__all__ = ["END_REASON", "SCHEMA", "TEMPLATE", "OtelTracing", "StreamSpan"]

#: The attribute that names a stream's channel template (OpenTelemetry's messaging conventions).
TEMPLATE = "messaging.destination.template"
#: Why a stream ended (one of ``eventstream._observe.END_REASONS``), on its span.
END_REASON = "eventstream.end_reason"
#: Messaging attributes (OpenTelemetry semantic conventions 1.44).
SCHEMA = "https://opentelemetry.io/schemas/1.44.0"
_SYSTEM = "messaging.system"
_OPERATION_TYPE = "messaging.operation.type"
_OPERATION_NAME = "messaging.operation.name"
_DESTINATION = "messaging.destination.name"
_MESSAGE_ID = "messaging.message.id"
_PROPAGATOR = TraceContextTextMapPropagator()


#: How often tracing on OpenTelemetry's global provider asks whether an SDK configured it, seconds.
_GLOBAL_CHECK_INTERVAL = 1.0


class StreamSpan:
    """A stream's span: ended with the stream's end reason."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def end(self, reason: str) -> None:
        span = self._span
        span.set_attribute(END_REASON, reason)
        if reason == "error":
            span.set_status(StatusCode.ERROR)
        span.end()


class OtelTracing:
    """The spans of one stream, on OpenTelemetry (see ``eventstream._observe._trace.Tracing``)."""

    __slots__ = ("_fixed", "_next_check", "_tracer")

    def __init__(self, tracer: Tracer, provider: TracerProvider | None) -> None:
        self._tracer = tracer
        # Whether spans are recorded, when the provider tells once and for all (a no-op one: never);
        # None: the global provider, which records once an SDK configures it (for good).
        self._fixed: bool | None = None if provider is None else not isinstance(provider, NoOpTracerProvider)
        self._next_check = 0.0

    @property
    def active(self) -> bool:
        fixed = self._fixed
        if fixed is not None:
            return fixed
        # Asking the global provider costs about 1 us (an environment lookup): once a second.
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _GLOBAL_CHECK_INTERVAL
            if not isinstance(get_tracer_provider(), ProxyTracerProvider):
                self._fixed = True
                return True
        return False

    @contextmanager
    def publish(self, channel: str, event_id: str | None) -> Iterator[Span]:
        attributes = {_SYSTEM: "eventstream", _OPERATION_TYPE: "send", _OPERATION_NAME: "publish"}
        attributes[_DESTINATION] = channel
        if event_id is not None:
            attributes[_MESSAGE_ID] = event_id
        with self._tracer.start_as_current_span(
            "publish", kind=SpanKind.PRODUCER, attributes=attributes
        ) as span:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            token = TRACEPARENT.set(carrier.get("traceparent", ""))
            try:
                yield span
            finally:
                TRACEPARENT.reset(token)

    @contextmanager
    def deliver(self, channel: str, event_id: str, traceparent: str | None) -> Iterator[Span]:
        context = Context()
        if traceparent:
            context = _PROPAGATOR.extract({"traceparent": traceparent}, context)
        attributes = {
            _SYSTEM: "eventstream",
            _OPERATION_TYPE: "process",
            _OPERATION_NAME: "deliver",
            _DESTINATION: channel,
            _MESSAGE_ID: event_id,
        }
        with self._tracer.start_as_current_span("process", context, SpanKind.CONSUMER, attributes) as span:
            yield span

    def stream(self, template: str, channels: tuple[str, ...]) -> StreamSpan:
        attributes = {_SYSTEM: "eventstream", _OPERATION_NAME: "stream", TEMPLATE: template}
        if len(channels) == 1:
            attributes[_DESTINATION] = channels[0]
        return StreamSpan(self._tracer.start_span(f"stream {template}", attributes=attributes))
