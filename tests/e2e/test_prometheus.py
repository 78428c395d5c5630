"""A real Prometheus scrapes the metrics of an app under real servers, and its HTTP API has the series.

A private Prometheus (Debian's package, tests/support/prometheus.py) is started
once for the module, before the apps, with one target per server kind (ports
chosen in advance); each test starts tests/apps/metrics_app.py on its kind's
port, runs traffic (streams opened and left, publishes, a client that stops
reading and is dropped, a shutdown) and queries Prometheus for the series,
with a deadline. uvicorn and hypercorn's asyncio worker run the app on
asyncio, hypercorn's trio worker on trio. With a broker (a private
redis-server), Prometheus sees its engine go down and come back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack

import anyio
import httpx
import pytest

from ..support.helpers import open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.prometheus import Prometheus, run_prometheus
from ..support.redis_engine import RedisEngine
from ..support.servers import free_port, run_server
from .test_stalled_clients import open_non_reader

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

KINDS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
BROKER_KINDS = ("hypercorn-trio", "uvicorn")
#: The targets: one per server kind, and one per kind of the app with a broker (a target of
#: its own per run: a counter that restarts on a port that served another run could read stale).
TARGETS = (*KINDS, *(f"broker-{kind}" for kind in BROKER_KINDS))


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {target: free_port() for target in TARGETS}


@pytest.fixture(scope="module")
def prometheus(ports: dict[str, int]) -> Iterator[Prometheus]:
    with run_prometheus([f"127.0.0.1:{port}" for port in ports.values()]) as server:
        yield server


@pytest.mark.parametrize("kind", KINDS)
async def test_prometheus_scrapes_the_metrics_after_traffic(
    kind: str, ports: dict[str, int], prometheus: Prometheus
) -> None:
    run = f"r{uuid.uuid4().hex[:8]}-"
    template = run + "user-{id}"
    port = ports[kind]
    instance = f'instance="127.0.0.1:{port}"'
    env = {"EVENTSTREAM_RUN": run}
    with (
        run_server(kind, "tests.apps.metrics_app:app", env=env, port=port) as server,
        ExitStack() as attackers,
        anyio.fail_after(90),
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            base = server.base_url
            assert (await client.get(f"{base}/readyz")).json() == {
                "status": "ready",
                "checks": {"stream": "ok"},
            }
            async with (
                open_events(client, f"{base}/events/1") as one,
                open_events(client, f"{base}/events/3"),
            ):
                async with open_events(client, f"{base}/events/2") as two:
                    assert (await two.next()).event == "stream-open"
                assert (await one.next()).event == "stream-open"
                (await client.post(f"{base}/publish/1?count=5")).raise_for_status()
                assert [(await one.next()).json() for _ in range(5)] == ["x" * 10] * 5
                # A client that stops reading: held in send, left behind, dropped after send_timeout.
                open_non_reader(attackers, port, "slow")

                async def subscribed() -> bool:
                    text = (await client.get(f"{base}/metrics")).text
                    return "\neventstream_subscribers 3.0\n" in text

                await wait_until(subscribed)

                async def dropped() -> bool:  # publishes leave it behind, then drop it
                    (await client.post(f"{base}/publish/slow?count=20&size=65536")).raise_for_status()
                    text = (await client.get(f"{base}/metrics")).text
                    return "\neventstream_subscribers 2.0\n" in text

                await wait_until(dropped, timeout=30)
                # hypercorn's trio worker shields socket writes: the hub has dropped the
                # subscriber, and the response ends once its socket does.
                attackers.close()

                def series(name: str, **labels: str) -> str:
                    chosen = ",".join(
                        [instance, f'template="{template}"', *(f'{k}="{v}"' for k, v in labels.items())]
                    )
                    return f"{name}{{{chosen}}}"

                await prometheus.wait_for(
                    client, series("eventstream_streams_closed_total", reason="slow"), 1
                )
                await prometheus.wait_for(client, series("eventstream_streams_opened_total"), 4)
                await prometheus.wait_for(client, series("eventstream_streams_open"), 2)
                await prometheus.wait_for(
                    client, series("eventstream_streams_closed_total", reason="client"), 1
                )
                published = f"eventstream_events_published_total{{{instance}}}"
                assert float((await prometheus.query(client, published))[0]["value"][1]) >= 25
                # Every publish was timed (the same scrape has both).
                timed = f"eventstream_publish_duration_seconds_count{{{instance}}} - {published}"
                await prometheus.wait_for(client, timed, 0)
                left = await prometheus.query(
                    client, f"eventstream_subscribers_left_behind_total{{{instance}}}"
                )
                assert float(left[0]["value"][1]) >= 1
                written = await prometheus.query(client, series("eventstream_written_bytes_total"))
                assert float(written[0]["value"][1]) >= 5 * len("data: xxxxxxxxxx\n\n")
                # The process shuts its streams: readiness answers 503 at once, the streams end.
                (await client.post(f"{base}/close")).raise_for_status()
                not_ready = await client.get(f"{base}/readyz")
                assert not_ready.status_code == 503
                assert not_ready.json()["checks"]["stream"] == "shutting down"
                await prometheus.wait_for(
                    client, series("eventstream_streams_closed_total", reason="shutdown"), 2
                )
                await prometheus.wait_for(client, series("eventstream_streams_open"), 0)
            await prometheus.wait_for(client, f"up{{{instance}}}", 1)
            # Every series of the app carries a bounded label: the template, never a channel.
            answer = await prometheus.query(client, f'{{__name__=~"eventstream_.*",{instance}}}')
            templates = {result["metric"].get("template") for result in answer} - {None}
            assert templates == {template}
            assert not any(
                f"{run}user-" in value for r in answer for value in r["metric"].values() if value != template
            )


@pytest.mark.parametrize("kind", BROKER_KINDS)
async def test_prometheus_sees_the_engine_go_down_and_come_back(
    kind: str, ports: dict[str, int], prometheus: Prometheus, engine: RedisEngine
) -> None:
    port = ports[f"broker-{kind}"]
    up = f'eventstream_broker_engine_up{{instance="127.0.0.1:{port}"}}'
    errors = f'eventstream_publish_errors_total{{instance="127.0.0.1:{port}",reason="broker"}}'
    env = {"EVENTSTREAM_RUN": f"r{uuid.uuid4().hex[:8]}-", "EVENTSTREAM_BROKER": engine.url}
    with run_server(kind, "tests.apps.metrics_app:app", env=env, port=port) as server, anyio.fail_after(90):
        async with httpx.AsyncClient(timeout=30) as client:
            base = server.base_url
            assert (await client.post(f"{base}/publish/1")).status_code == 204
            await prometheus.wait_for(client, up, 1)
            engine.stop(kill=True)
            try:
                assert (await client.post(f"{base}/publish/1")).status_code == 503
                not_ready = await client.get(f"{base}/readyz")
                assert not_ready.status_code == 503
                assert not_ready.json()["checks"]["broker"] != "ok"
                await prometheus.wait_for(client, up, 0)
                await prometheus.wait_for(client, errors, 1)
            finally:
                engine.start()

            async def ready() -> bool:
                return (await client.get(f"{base}/readyz")).status_code == 200

            await wait_until(ready, timeout=30)
            await prometheus.wait_for(client, up, 1)
            assert (await client.post(f"{base}/publish/1")).status_code == 204
