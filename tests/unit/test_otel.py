"""eventstream.otel: observable instruments read the stream's counters, collected by the real
OpenTelemetry SDK's in-memory reader (both backends); nothing runs without an SDK. Spans, with the
SDK's in-memory exporter (across processes through a broker: tests/e2e/test_otel_broker.py)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

from eventstream import EventStream
from eventstream._stream import parts_of
from eventstream.otel import END_REASON, TEMPLATE, instrument, trace
from eventstream.testing import open_stream

from ..support.helpers import run_python

pytestmark = pytest.mark.anyio


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Metric name -> [(attributes, value)] of one collection."""
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[tuple[dict[str, Any], float]]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "eventstream"
            for metric in scope.metrics:
                found[metric.name] = [
                    # A histogram's point: its count.
                    (dict(point.attributes or {}), point.count if hasattr(point, "count") else point.value)
                    for point in metric.data.data_points
                ]
    return found


def one(found: dict[str, list[tuple[dict[str, Any], float]]], name: str, **attributes: str) -> float:
    (value,) = [value for attrs, value in found[name] if attrs == attributes]
    return value


async def test_the_instruments_read_the_counters_under_the_template() -> None:
    stream = EventStream(keep_alive_interval=None)
    reader = InMemoryMetricReader()
    instrument(stream, MeterProvider(metric_readers=[reader]))
    endpoint = stream("user-{id}")
    with anyio.fail_after(5):
        async with open_stream(endpoint, path_params={"id": "7"}) as seven:
            async with open_stream(endpoint, path_params={"id": "8"}):
                await stream.wait_subscribers(2)
                found = points(reader)
                assert one(found, "eventstream.streams.open", **{TEMPLATE: "user-{id}"}) == 2
                assert one(found, "eventstream.subscribers") == 2
                await stream.publish_event("user-7", {"data": "x" * 10})
                assert (await seven.receive_event()).event == "stream-open"
                assert (await seven.receive_event()).json() == "x" * 10
            await stream.wait_subscribers(1)
        await stream.wait_subscribers(0)
    found = points(reader)
    template = {TEMPLATE: "user-{id}"}
    assert one(found, "eventstream.streams.opened", **template) == 2
    assert one(found, "eventstream.streams.open", **template) == 0
    assert one(found, "eventstream.streams.closed", **template, **{"eventstream.end_reason": "client"}) == 2
    assert one(found, "eventstream.streams.closed", **template, **{"eventstream.end_reason": "slow"}) == 0
    assert one(found, "eventstream.events.published") == 1
    assert one(found, "eventstream.events.delivered") == 1
    assert one(found, "eventstream.written", **template) > len("data: \n\n") + 10
    assert one(found, "eventstream.publish.errors", **{"error.type": "broker"}) == 0
    assert one(found, "eventstream.publish.duration") == 1  # a histogram: publishes timed
    assert "eventstream.broker.feed.lag" not in found  # no shared broker, no feed
    assert "eventstream.broker.engine_up" not in found  # no shared broker
    # Labels stay bounded: the concrete channels are nowhere.
    assert not any("user-7" in str(attrs) for series in found.values() for attrs, _ in series)


async def test_without_an_sdk_no_callback_runs() -> None:
    """The API's no-op provider (what an app without an SDK gets) takes the instruments and never reads."""
    stream = EventStream(keep_alive_interval=None)
    instruments = instrument(stream, NoOpMeterProvider())
    assert len(instruments) == 14
    assert all(type(each).__name__.startswith("NoOp") for each in instruments)  # nothing holds a callback
    await stream.publish_event("news", {"data": 1})  # nothing to observe, nothing fails
    assert parts_of(stream).observed.timing is None  # nor are publishes timed for nothing
    assert stream.statistics().events_published == 1


def tracer() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_a_publish_is_a_producer_span_with_the_messaging_attributes() -> None:
    stream = EventStream(keep_alive_interval=None)
    provider, exporter = tracer()
    trace(stream, provider)
    await stream.publish_event("news", {"data": 1, "id": "n-1"})
    (span,) = exporter.get_finished_spans()
    assert (span.name, span.kind, span.status.status_code) == ("publish", SpanKind.PRODUCER, StatusCode.UNSET)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "eventstream"
    assert span.instrumentation_scope.schema_url == "https://opentelemetry.io/schemas/1.44.0"
    assert dict(span.attributes or {}) == {
        "messaging.system": "eventstream",
        "messaging.operation.type": "send",
        "messaging.operation.name": "publish",
        "messaging.destination.name": "news",
        "messaging.message.id": "n-1",
    }
    with pytest.raises(ValueError, match="channel"):
        await stream.publish_event("bad channel\n", {"data": 1})  # refused before any span
    assert len(exporter.get_finished_spans()) == 1


async def test_a_stream_is_a_span_under_its_template_ended_with_its_reason() -> None:
    stream = EventStream(keep_alive_interval=None)
    provider, exporter = tracer()
    trace(stream, provider)
    with anyio.fail_after(5):
        async with open_stream(stream("user-{id}"), path_params={"id": "7"}) as seven:
            await stream.wait_subscribers(1)
            assert not [s for s in exporter.get_finished_spans() if s.name.startswith("stream")]
            await stream.publish_event("user-7", {"data": 1})
            assert (await seven.receive_event()).event == "stream-open"
            assert (await seven.receive_event()).json() == 1
        await stream.wait_subscribers(0)
    (span,) = [s for s in exporter.get_finished_spans() if s.name != "publish"]
    assert (span.name, span.kind) == ("stream user-{id}", SpanKind.INTERNAL)
    assert dict(span.attributes or {}) == {
        "messaging.system": "eventstream",
        "messaging.operation.name": "stream",
        TEMPLATE: "user-{id}",
        "messaging.destination.name": "user-7",
        END_REASON: "client",
    }


async def test_without_tracing_or_without_an_sdk_no_span_is_made() -> None:
    stream = EventStream(keep_alive_interval=None)
    assert parts_of(stream).hub.tracing is None  # the default: one `is None` check per publish
    await stream.publish_event("news", {"data": 1})
    trace(stream, NoOpTracerProvider())  # the API alone, as an app without an SDK has it
    tracing = parts_of(stream).hub.tracing
    assert tracing is not None
    assert not tracing.active  # nothing would record: no span is begun (benchmarks/tracing.py: +0.3 us)
    with anyio.fail_after(5):
        async with open_stream(stream("news")) as response:
            await stream.wait_subscribers(1)
            await stream.publish_event("news", {"data": 2})
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).json() == 2
    assert stream.statistics().events_published == 2


def test_with_the_global_provider_spans_begin_once_an_sdk_configures_it() -> None:
    """In a process of its own: OpenTelemetry's global provider is set once per process."""
    code = (
        "import time\n"
        "import anyio\n"
        "from opentelemetry import trace as api\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from eventstream import EventStream\n"
        "from eventstream._stream import parts_of\n"
        "from eventstream.otel import trace\n"
        "stream = EventStream(keep_alive_interval=None, handle_signals=False)\n"
        "trace(stream)\n"
        "tracing = parts_of(stream).hub.tracing\n"
        "assert not tracing.active, 'no SDK yet: nothing would record'\n"
        "anyio.run(stream.publish_event, 'news', {'data': 1})\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "api.set_tracer_provider(provider)\n"
        "deadline = time.monotonic() + 10\n"  # it is asked once a second
        "while not tracing.active:\n"
        "    assert time.monotonic() < deadline, 'the SDK was not noticed'\n"
        "    time.sleep(0.05)\n"
        "anyio.run(stream.publish_event, 'news', {'data': 2})\n"
        "assert [span.name for span in exporter.get_finished_spans()] == ['publish']\n"
    )
    run_python(code)
