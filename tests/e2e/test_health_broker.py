"""Readiness and the engine-up metric with a shared broker, against a real redis-server that stops.

The broker's engine answers, stops (SIGKILL), then starts again on the same
port: readiness goes 503 while it is down and 200 once glide has reconnected;
the metrics follow, Prometheus's and OpenTelemetry's. On asyncio and trio.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from eventstream import BrokerError, EventStream, HealthEndpoint, RedisBroker
from eventstream.otel import instrument
from eventstream.prometheus import register
from eventstream.testing import open_stream

from ..support.helpers import wait_until
from ..support.redis_engine import RedisEngine

pytestmark = pytest.mark.anyio


def otel_value(reader: InMemoryMetricReader, name: str) -> float:
    """The value of the OpenTelemetry instrument ``name`` in one collection by ``reader``."""
    data = reader.get_metrics_data()
    assert data is not None
    (value,) = [
        point.value  # type: ignore[union-attr]
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
    return value


def otel_histogram(reader: InMemoryMetricReader, name: str) -> tuple[int, tuple[float, ...]]:
    """The count of the OpenTelemetry histogram ``name`` and its first two bucket bounds."""
    data = reader.get_metrics_data()
    assert data is not None
    (point,) = [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]
    return point.count, tuple(point.explicit_bounds[:2])  # type: ignore[union-attr]


def engine_up(reader: InMemoryMetricReader) -> float:
    """The value of OpenTelemetry's ``eventstream.broker.engine_up`` in one collection by ``reader``."""
    return otel_value(reader, "eventstream.broker.engine_up")


async def test_the_feed_counters_are_metrics(engine: RedisEngine, prefix: str) -> None:
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), handle_signals=False)
    registry = CollectorRegistry()
    register(stream, registry)
    reader = InMemoryMetricReader()
    instrument(stream, MeterProvider(metric_readers=[reader]))
    with anyio.fail_after(20):
        async with stream, open_stream(stream("watched")) as response:
            await stream.wait_subscribers(1, "watched")
            for n in range(3):
                await stream.publish_event("watched", {"data": n})
                await stream.publish_event("unwatched", {"data": n})
            received = 0
            while received < 3:
                received += (await response.receive_event()).event not in ("stream-open", "keep-alive")
            feed = stream.statistics().broker
            assert feed is not None
            assert (feed.feed_channels, feed.feed_messages, feed.feed_requests) == (1, 3, 1)
            expected = {"feed_channels": 1, "feed_messages": 3, "feed_dropped": 0}
            expected |= {"events_filled": 0, "feed_requests": 1}
            for name, value in expected.items():
                suffix = "" if name == "feed_channels" else "_total"
                assert registry.get_sample_value(f"eventstream_broker_{name}{suffix}") == value, name
                otel_name = "eventstream.broker." + name.replace("_", ".")
                assert otel_value(reader, otel_name) == value, otel_name
            # The feed's lag: one observation per event the feed delivered here (same machine:
            # the engine's clock and this process's agree), and every publish timed.
            lag = "eventstream_broker_feed_lag_seconds"
            assert registry.get_sample_value(f"{lag}_count") == 3
            assert registry.get_sample_value(f"{lag}_bucket", {"le": "+Inf"}) == 3
            assert 0 <= registry.get_sample_value(f"{lag}_sum") < 5  # type: ignore[operator]
            assert registry.get_sample_value("eventstream_publish_duration_seconds_count") == 6
            assert otel_histogram(reader, "eventstream.broker.feed.lag") == (3, (0.0005, 0.001))
            assert otel_histogram(reader, "eventstream.publish.duration")[0] == 6


async def test_readiness_follows_the_engine(engine: RedisEngine, prefix: str) -> None:
    broker = RedisBroker(engine.url, key_prefix=prefix, publish_timeout=1.0, request_timeout=0.5)
    stream = EventStream(broker=broker, handle_signals=False)
    registry = CollectorRegistry()
    register(stream, registry)
    reader = InMemoryMetricReader()
    instrument(stream, MeterProvider(metric_readers=[reader]))
    transport = httpx.ASGITransport(app=HealthEndpoint(stream, "ready", timeout=1.0))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = await client.get("/readyz")
        assert before.status_code == 503
        assert before.json()["checks"]["broker"].startswith("not running")
        assert registry.get_sample_value("eventstream_broker_engine_up") == 0
        assert engine_up(reader) == 0
        async with stream:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json() == {"status": "ready", "checks": {"stream": "ok", "broker": "ok"}}
            assert registry.get_sample_value("eventstream_broker_engine_up") == 1
            assert engine_up(reader) == 1
            await stream.publish_event("a", {"data": 1})
            engine.stop(kill=True)
            try:
                down = await client.get("/readyz")
                assert down.status_code == 503
                assert down.json()["checks"]["broker"] != "ok"
                assert down.json()["checks"]["stream"] == "ok"
                assert registry.get_sample_value("eventstream_broker_engine_up") == 0
                assert engine_up(reader) == 0
                with pytest.raises(BrokerError):
                    await stream.publish_event("a", {"data": 2})
                errors = registry.get_sample_value("eventstream_publish_errors_total", {"reason": "broker"})
                assert errors == 1
            finally:
                engine.start()

            async def ready_again() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await wait_until(ready_again, timeout=20)
            assert registry.get_sample_value("eventstream_broker_engine_up") == 1
            assert engine_up(reader) == 1
        after = await client.get("/readyz")
        assert after.status_code == 503
        assert after.json()["checks"] == {
            "stream": "shutting down",
            "broker": "not running: enter the stream (async with)",
        }


async def test_an_engine_gone_shows_in_the_metric_without_a_publish_or_a_probe(
    engine: RedisEngine, prefix: str
) -> None:
    # The feed's connection is watched (pinged when idle, made again when lost): an
    # engine that goes away sets eventstream_broker_engine_up to 0 by itself, and
    # readiness says the feed is down; once the feed is connected again, 1 again,
    # although the last readiness check failed.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), handle_signals=False)
    registry = CollectorRegistry()
    register(stream, registry)
    reader = InMemoryMetricReader()
    instrument(stream, MeterProvider(metric_readers=[reader]))

    def up() -> float | None:
        return registry.get_sample_value("eventstream_broker_engine_up")

    async def down() -> bool:
        return up() == 0 and engine_up(reader) == 0

    async def back() -> bool:
        return up() == 1 and engine_up(reader) == 1

    with anyio.fail_after(30):
        async with stream:
            assert up() == 1
            await anyio.to_thread.run_sync(lambda: engine.stop(kill=True))
            try:
                await wait_until(down)
                feed = stream.statistics().broker
                assert feed is not None
                assert not feed.feed_connected
                readiness = await stream.readiness(within=1.0)
                assert not readiness.ready
                assert "the feed's connection is down" in readiness.checks["broker"]
            finally:
                await anyio.to_thread.run_sync(engine.start)
            await wait_until(back, timeout=20)
            assert (await stream.readiness(within=2.0)).ready


async def test_a_flood_of_readiness_checks_sends_the_engine_one_ping_at_a_time(
    engine: RedisEngine, prefix: str
) -> None:
    # 200 probes at once (a load balancer's, or anyone's: /readyz is open) share one PING.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), handle_signals=False)
    answers: list[bool] = []

    async def probe() -> None:
        answers.append((await stream.readiness()).ready)

    with anyio.fail_after(30):
        async with stream:
            before = engine.calls("ping")
            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(probe)
            sent = engine.calls("ping") - before
            await stream.readiness()  # and the next one sends its own
            again = engine.calls("ping") - before
    assert answers == [True] * 200
    assert sent == 1
    assert again == 2
