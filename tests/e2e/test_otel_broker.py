"""OpenTelemetry spans across processes through a real private redis-server (the SDK's in-memory exporter).

Each EventStream with its own RedisBroker and its own TracerProvider stands
for a process: a publish's span in one is the parent of the delivery's span
in the other, through the traceparent the event carries on the engine's
feed. A feed message whose traceparent is not one is delivered all the same,
in a span of its own trace.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventstream import EventStream, Publisher, RedisBroker
from eventstream._core import _ENTRY_OVERHEAD
from eventstream._redis._scripts import PUBLISH
from eventstream.otel import trace
from eventstream.testing import open_stream

from ..support.helpers import wait_until
from ..support.redis_engine import RedisEngine

pytestmark = pytest.mark.anyio


def process(
    engine: RedisEngine, prefix: str, max_bytes: int = 256 * 1024
) -> tuple[EventStream, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stream = EventStream(
        broker=RedisBroker(engine.url, key_prefix=prefix, max_bytes=max_bytes), keep_alive_interval=None
    )
    trace(stream, provider)
    return stream, exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def finished(exporter: InMemorySpanExporter, name: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(named(exporter, name)) >= count

    return check


async def test_a_publish_span_in_one_process_is_the_parent_of_the_delivery_in_another(
    engine: RedisEngine, prefix: str
) -> None:
    a, a_spans = process(engine, prefix)
    b, b_spans = process(engine, prefix)
    with anyio.fail_after(20):
        async with a, b, open_stream(b("news")) as response:
            await b.wait_subscribers(1)
            await a.publish_event("news", {"data": 1})
            assert (await response.receive_event()).event == "stream-open"
            event = await response.receive_event()
            assert event.json() == 1
            await wait_until(finished(b_spans, "process", 1))
    (publish,) = named(a_spans, "publish")
    (delivery,) = named(b_spans, "process")
    assert publish.kind == SpanKind.PRODUCER
    assert delivery.kind == SpanKind.CONSUMER
    assert delivery.parent is not None
    assert delivery.parent.is_remote
    assert (delivery.context.trace_id, delivery.parent.span_id) == (
        publish.context.trace_id,
        publish.context.span_id,
    )
    assert dict(delivery.attributes or {}) == {
        "messaging.system": "eventstream",
        "messaging.operation.type": "process",
        "messaging.operation.name": "deliver",
        "messaging.destination.name": "news",
        "messaging.message.id": event.id,
    }
    assert not named(a_spans, "process")  # nobody listens to "news" in a: nothing delivered there


async def test_a_publisher_s_span_is_the_parent_of_the_delivery(engine: RedisEngine, prefix: str) -> None:
    """A Publisher (a worker that serves no streams) traced as a stream is."""
    b, b_spans = process(engine, prefix)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    publisher = Publisher(broker=RedisBroker(engine.url, key_prefix=prefix))
    trace(publisher, provider)
    with anyio.fail_after(20):
        async with b, publisher, open_stream(b("news")) as response:
            await b.wait_subscribers(1)
            event_id = await publisher.publish_event("news", {"data": 1})
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).id == event_id
            await wait_until(finished(b_spans, "process", 1))
    (publish,) = named(exporter, "publish")
    (delivery,) = named(b_spans, "process")
    assert publish.kind == SpanKind.PRODUCER
    assert delivery.parent is not None
    assert (delivery.context.trace_id, delivery.parent.span_id) == (
        publish.context.trace_id,
        publish.context.span_id,
    )


async def test_a_malformed_traceparent_on_the_feed_is_ignored(engine: RedisEngine, prefix: str) -> None:
    b, b_spans = process(engine, prefix)
    with anyio.fail_after(20):
        async with b, open_stream(b("news")) as response:
            await b.wait_subscribers(1)
            await b.publish_event("news", {"data": 1})
            assert (await response.receive_event()).event == "stream-open"
            event = await response.receive_event()
            assert event.json() == 1
            # Another writer on the engine: the next entry, with garbage where the traceparent goes.
            assert event.id is not None
            epoch = event.id.removesuffix("-1")
            forged = f"{epoch}\n2\n{epoch}-2\n{epoch}-1\n1700000000000 00-{'g' * 32}-{'0' * 16}-01\ndata: 2\n"
            engine.command("PUBLISH", f"{prefix}|ch:0:news", forged)
            assert (await response.receive_event()).json() == 2
            await wait_until(finished(b_spans, "process", 2))
    (publish,) = named(b_spans, "publish")
    first, second = sorted(named(b_spans, "process"), key=lambda span: span.start_time or 0)
    assert first.parent is not None
    assert first.parent.span_id == publish.context.span_id  # its own publish, through the engine
    assert second.parent is None  # the garbage was not taken for a context
    assert second.context.trace_id != publish.context.trace_id


async def test_a_publish_the_broker_refuses_ends_its_span_with_the_error(
    engine: RedisEngine, prefix: str
) -> None:
    a, a_spans = process(engine, prefix, max_bytes=2000)
    with anyio.fail_after(20):
        async with a:
            with pytest.raises(ValueError, match="max_bytes"):
                await a.publish_event("news", {"data": "x" * 5000})
    (span,) = named(a_spans, "publish")
    assert span.status.status_code == StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


async def test_an_event_missed_on_the_feed_is_delivered_from_history_under_its_publish(
    engine: RedisEngine, prefix: str
) -> None:
    """An entry the feed did not bring is caught up from the engine's history, with its traceparent."""
    b, b_spans = process(engine, prefix)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with anyio.fail_after(20):
        async with b, open_stream(b("news")) as response:
            await b.wait_subscribers(1)
            # The publish script, run as the broker runs it but announcing on a channel nobody
            # follows: the entry is numbered and kept, and b's feed never sees it.
            keys = [f"{prefix}|state", f"{prefix}|batch:missed", f"{prefix}|seq:news", f"{prefix}|last:news"]
            keys.append(f"{prefix}|h:news")
            arguments = ["ep0", "1000", "60000", "262144", str(_ENTRY_OVERHEAD), "0", "60000", "0"]
            arguments += ["elsewhere:", f"0 {traceparent}\n\ndata: 1\n"]
            engine.command("EVAL", PUBLISH, str(len(keys)), *keys, *arguments)
            await b.publish_event("news", {"data": 2})  # numbered 2: b's follower reads 1 from history
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).json() == 1
            assert (await response.receive_event()).json() == 2
            await wait_until(finished(b_spans, "process", 2))
    caught_up, live = sorted(named(b_spans, "process"), key=lambda span: span.start_time or 0)
    (publish,) = named(b_spans, "publish")
    assert caught_up.parent is not None
    assert f"{caught_up.parent.trace_id:032x}-{caught_up.parent.span_id:016x}" in traceparent
    assert live.parent is not None
    assert live.parent.span_id == publish.context.span_id
