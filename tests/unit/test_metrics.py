"""eventstream.prometheus: the collector's families, names, labels and values (in-process, both backends).

The values are read with prometheus-client's own registry, as a scrape reads them.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventstream import EventStream, HistoryEntry, MemoryHistory
from eventstream._observe import MAX_TEMPLATES, OTHER_TEMPLATE, RUN_TEMPLATE
from eventstream._stream import parts_of
from eventstream.prometheus import EventStreamCollector, MetricsEndpoint, register
from eventstream.testing import open_stream
from eventstream.types import Receive, Scope, Send

from ..support.helpers import answers_to_lifespan_and_websocket, run_python

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    """Every sample of the registry's exposition, parsed back as Prometheus would."""
    text = generate_latest(registry).decode("utf-8")
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def watched(stream: EventStream) -> CollectorRegistry:
    registry = CollectorRegistry()
    register(stream, registry)
    return registry


async def test_streams_are_counted_under_their_template_with_their_end_reason() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)
    endpoint = stream("user-{id}")
    with anyio.fail_after(5):
        async with open_stream(endpoint, path_params={"id": "7"}) as seven:
            async with open_stream(endpoint, path_params={"id": "8"}):
                await stream.wait_subscribers(2)
                assert value(registry, "eventstream_streams_open", template="user-{id}") == 2
                await stream.publish_event("user-7", {"data": "x" * 10})
                assert (await seven.receive_event()).event == "stream-open"
                assert (await seven.receive_event()).json() == "x" * 10
            await stream.wait_subscribers(1)
            left = value(registry, "eventstream_streams_closed_total", template="user-{id}", reason="client")
            assert left == 1
            await stream.aclose()
            with pytest.raises(anyio.EndOfStream):  # the stream ended
                await seven.receive_event()
    assert value(registry, "eventstream_streams_opened_total", template="user-{id}") == 2
    assert value(registry, "eventstream_streams_open", template="user-{id}") == 0
    assert value(registry, "eventstream_streams_closed_total", template="user-{id}", reason="shutdown") == 1
    for reason in ("slow", "reset", "error"):
        assert value(registry, "eventstream_streams_closed_total", template="user-{id}", reason=reason) == 0
    assert value(registry, "eventstream_events_published_total") == 1
    assert value(registry, "eventstream_events_delivered_total") == 1
    # "data: xxxxxxxxxx\nid: ...\n\n": the event's bytes as written
    written = value(registry, "eventstream_written_bytes_total", template="user-{id}")
    assert written is not None
    assert written > len("data: \n\n") + 10
    assert value(registry, "eventstream_publish_duration_seconds_count") == 1
    assert value(registry, "eventstream_publish_duration_seconds_bucket", le="+Inf") == 1
    assert value(registry, "eventstream_publish_errors_total", reason="broker") == 0


async def test_replays_and_resets_are_counted() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)
    endpoint = stream(["news", "alerts"])
    for i in range(3):
        await stream.publish_event("news", {"data": i, "id": f"n{i}"})
    with anyio.fail_after(5):
        async with open_stream(endpoint, headers={"last-event-id": "unknown-id"}) as reset:
            assert (await reset.receive_event()).event == "stream-open"
            assert (await reset.receive_event()).event == "stream-reset"
            stream_id = ""
            await stream.publish_event("alerts", {"data": "a"})
            event = await reset.receive_event()
            assert event is not None
            assert event.id is not None
            stream_id = event.id
        for i in range(3, 5):
            await stream.publish_event("news", {"data": i})
        async with open_stream(endpoint, headers={"last-event-id": stream_id}) as resumed:
            assert (await resumed.receive_event()).event == "stream-open"
            assert [(await resumed.receive_event()).json() for _ in range(2)] == [3, 4]
    template = "news,alerts"
    assert value(registry, "eventstream_events_replayed_total", template=template) == 2
    assert value(registry, "eventstream_stream_resets_total", template=template) == 1
    assert value(registry, "eventstream_streams_opened_total", template=template) == 2


async def test_a_slow_client_left_behind_then_dropped_is_counted_as_slow() -> None:
    stream = EventStream(buffer_size=1, send_timeout=0.3, keep_alive_interval=None)
    registry = watched(stream)
    with anyio.fail_after(10):
        async with open_stream(stream("feed")):  # never read: the app is held in send
            await stream.wait_subscribers(1)
            while stream.subscriber_count():  # each publish returns; the hub drops it in time
                await stream.publish_event("feed", {"data": "y" * 1000})
                await anyio.sleep(0.01)
    assert value(registry, "eventstream_streams_closed_total", template="feed", reason="slow") == 1
    assert value(registry, "eventstream_streams_closed_total", template="feed", reason="client") == 0
    assert stream.statistics().subscribers_dropped == 1
    left_behind = value(registry, "eventstream_subscribers_left_behind_total")
    assert left_behind is not None
    assert left_behind >= 1
    assert value(registry, "eventstream_streams_caught_up_total", template="feed") == 0


async def test_a_client_that_pauses_is_left_behind_then_catches_up() -> None:
    stream = EventStream(buffer_size=1, send_timeout=30, keep_alive_interval=None)
    registry = watched(stream)
    with anyio.fail_after(20):
        async with open_stream(stream("feed")) as response:
            await stream.wait_subscribers(1)
            sent = 0
            while not value(registry, "eventstream_subscribers_left_behind_total"):
                await stream.publish_event("feed", {"data": sent})  # nobody reads meanwhile
                sent += 1
                await anyio.sleep(0.01)
            assert (await response.receive_event()).event == "stream-open"
            assert [(await response.receive_event()).json() for _ in range(sent)] == list(range(sent))
    assert value(registry, "eventstream_streams_caught_up_total", template="feed") == 1
    assert value(registry, "eventstream_stream_resets_total", template="feed") == 0
    assert value(registry, "eventstream_streams_closed_total", template="feed", reason="client") == 1


class BrokenHistory(MemoryHistory):
    """A history store whose replay fails: the server's own error, reported as stream-error."""

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        raise RuntimeError("the history store failed")


async def test_a_server_error_in_the_stream_is_counted() -> None:
    stream = EventStream(keep_alive_interval=None, history=BrokenHistory())
    registry = watched(stream)
    await stream.publish_event("x", {"data": 1, "id": "x-1"})
    with anyio.fail_after(5):
        async with open_stream(stream("x"), headers={"last-event-id": "x-1"}) as response:
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).event == "stream-error"
            with pytest.raises(anyio.EndOfStream):
                await response.receive_event()
    assert value(registry, "eventstream_streams_closed_total", template="x", reason="error") == 1


async def test_hostile_request_paths_never_become_label_values_and_series_stay_bounded() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)
    endpoint = stream("user-{id}")
    hostile = [f"../{i}%2e{{id}}}} le=\\x" for i in range(200)] + ["+Inf", "(run)", "(other)", ""]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint({**scope, "path_params": {"id": scope["path"][1:]}}, receive, send)

    streamed = 0
    with anyio.fail_after(20):
        for name in hostile:
            async with open_stream(app, "/" + name) as response:
                assert response.status in (200, 400)
                streamed += response.status == 200
    channels = {f"user-{name}" for name in hostile}
    found = samples(registry)
    label_values = {v for _, labels, _ in found for k, v in labels.items() if k != "le"}
    assert not label_values & channels
    assert not label_values & set(hostile)
    templates = {labels["template"] for _, labels, _ in found if "template" in labels}
    assert templates == {"user-{id}"}
    assert len(found) < 200
    assert streamed > 200
    assert value(registry, "eventstream_streams_opened_total", template="user-{id}") == streamed


async def test_direct_runs_share_one_label_and_templates_are_capped() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        await stream.run(scope, receive, send, f"room-{scope['path'][1:]}")

    with anyio.fail_after(30):
        for i in range(3):
            async with open_stream(direct, f"/{i}"):
                pass
        # An app that builds an endpoint per request, with a concrete channel as its spec.
        for i in range(MAX_TEMPLATES + 20):
            async with open_stream(stream(f"concrete-{i}")):
                pass
    templates = {labels["template"] for _, labels, _ in samples(registry) if "template" in labels}
    assert RUN_TEMPLATE in templates
    assert OTHER_TEMPLATE in templates
    assert len(templates) == MAX_TEMPLATES + 1
    assert value(registry, "eventstream_streams_opened_total", template=RUN_TEMPLATE) == 3
    assert value(registry, "eventstream_streams_opened_total", template=OTHER_TEMPLATE) == 21


async def test_a_callable_spec_is_labelled_by_its_name() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)

    def channels_of(scope: Scope) -> str:
        path: str = scope["path"]
        return "private-" + path[1:]

    with anyio.fail_after(5):
        async with open_stream(stream(channels_of), "/secret-user-id"):
            await stream.wait_subscribers(1)
    label = f"{__name__}.test_a_callable_spec_is_labelled_by_its_name.<locals>.channels_of"
    assert value(registry, "eventstream_streams_opened_total", template=label) == 1
    assert not any("secret" in v for _, labels, _ in samples(registry) for v in labels.values())


async def test_publishes_are_timed_only_while_a_collector_watches() -> None:
    stream = EventStream()
    await stream.publish_event("a", {"data": 1})
    assert parts_of(stream).observed.timing is None  # nothing registered: nothing measured
    assert parts_of(stream).hub.feed_lag is None
    registry = CollectorRegistry()
    collector = register(stream, registry)
    for i in range(5):
        await stream.publish_event("a", {"data": i})
    assert value(registry, "eventstream_publish_duration_seconds_count") == 5
    total = value(registry, "eventstream_publish_duration_seconds_sum")
    assert total is not None
    assert total > 0
    assert value(registry, "eventstream_events_published_total") == 6
    # Cumulative buckets, as Prometheus expects.
    buckets = [v for name, labels, v in samples(registry) if name.endswith("_bucket")]
    assert buckets == sorted(buckets)
    assert buckets[-1] == 5
    registry.unregister(collector)
    assert value(registry, "eventstream_publish_duration_seconds_count") is None


def test_one_stream_per_registry() -> None:
    registry = CollectorRegistry()
    register(EventStream(), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(EventStreamCollector(EventStream()))


def test_names_follow_prometheus_conventions() -> None:
    stream = EventStream(grip="http://127.0.0.1:1/?iss=me&key=secret&token=t0ken")
    found = samples(watched(stream))
    names = {name for name, _, _ in found}
    assert all(name.startswith("eventstream_") for name in names)
    assert {
        "eventstream_events_published_total",
        "eventstream_events_delivered_total",
        "eventstream_publish_duration_seconds_bucket",
        "eventstream_grip_items_published_total",
        "eventstream_grip_failures_total",
    } <= names
    proxies = {labels["proxy"] for _, labels, _ in found if "proxy" in labels}
    assert proxies == {"http://127.0.0.1:1"}  # no key, no query token


async def test_the_metrics_endpoint_serves_the_registry_and_answers_lifespan_and_websocket() -> None:
    stream = EventStream()
    registry = watched(stream)
    await stream.publish_event("a", {"data": 1})
    endpoint = MetricsEndpoint(registry)
    transport = httpx.ASGITransport(app=endpoint)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")
        assert "\neventstream_events_published_total 1.0\n" in response.text
        openmetrics = await client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
    assert await answers_to_lifespan_and_websocket(endpoint) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


async def test_many_channels_under_one_template_make_few_series() -> None:
    stream = EventStream(keep_alive_interval=None)
    registry = watched(stream)
    endpoint = stream("user-{id}")
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def hold(user: int) -> None:
                async with open_stream(endpoint, path_params={"id": str(user)}):
                    await done.wait()

            for user in range(2000):
                tg.start_soon(hold, user % 1000)
            await stream.wait_subscribers(2000)
            assert len(stream.statistics().channels) == 1000
            found = samples(registry)
            assert len(found) < 200
            assert value(registry, "eventstream_streams_open", template="user-{id}") == 2000
            done.set()


def test_the_library_does_not_import_prometheus_client_unless_asked() -> None:
    code = (
        "import sys, eventstream\n"
        "stream = eventstream.EventStream()\n"
        "assert 'prometheus_client' not in sys.modules, 'imported by eventstream'\n"
        "assert eventstream._stream.parts_of(stream).observed.timing is None\n"
        "import eventstream.prometheus\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    run_python(code)
