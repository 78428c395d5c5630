"""eventstream.otel: observable instruments read the stream's counters, collected by the real
OpenTelemetry SDK's in-memory reader (both backends); nothing runs without an SDK."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eventstream import EventStream
from eventstream.otel import TEMPLATE, instrument
from eventstream.testing import open_stream

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
                    (dict(point.attributes or {}), point.value)  # type: ignore[union-attr]
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
    assert "eventstream.broker.engine_up" not in found  # no shared broker
    # Labels stay bounded: the concrete channels are nowhere.
    assert not any("user-7" in str(attrs) for series in found.values() for attrs, _ in series)


async def test_without_an_sdk_no_callback_runs() -> None:
    """The API's no-op provider (what an app without an SDK gets) takes the instruments and never reads."""
    stream = EventStream(keep_alive_interval=None)
    instruments = instrument(stream, NoOpMeterProvider())
    assert len(instruments) == 13
    assert all(type(each).__name__.startswith("NoOp") for each in instruments)  # nothing holds a callback
    await stream.publish_event("news", {"data": 1})  # nothing to observe, nothing fails
    assert stream.statistics().events_published == 1
