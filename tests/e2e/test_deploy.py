"""What deploy/ ships works against the real thing: the Prometheus alert rules pass ``promtool``
(syntax, and unit tests of when each alert fires), and every PromQL expression of the Grafana
dashboard runs on a real Prometheus that scrapes tests/apps/metrics_app.py, the main panels with
data after traffic. The ``--workers`` recipe of docs/howto/metrics.md (one process per port, each
scraped, summed in PromQL) runs as documented.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from ..support.helpers import open_events
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.prometheus import Prometheus, require_prometheus, run_prometheus
from ..support.servers import ROOT, free_port, run_server

pytestmark = pytest.mark.server

RULES = ROOT / "deploy" / "prometheus" / "eventstream-rules.yml"
RULES_TESTS = Path(__file__).parent / "data" / "eventstream-rules-test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "eventstream.json"
PROMTOOL = "/usr/bin/promtool"
#: The panels that show data once streams opened, closed and events were published.
MAIN_PANELS = {
    "Streams open",
    "Streams opened / s",
    "Streams closed / s, by reason",
    "Events published and delivered / s",
    "Publish duration",
    "Bytes written / s",
}
TARGETS = ("dashboard", "worker-1", "worker-2")


def test_rules_pass_promtool() -> None:
    """The rules file is valid, and its alerts fire on the series they are for, and not on others."""
    require_prometheus()
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 8 rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", RULES_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=RULES_TESTS.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the dashboard, Grafana's variables filled in:
    every instance, a 1-minute rate window."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expression = target["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
            assert "$" not in expression, expression  # no Grafana variable left unfilled
            queries.append((panel["title"], expression))
    return queries


def test_dashboard_has_the_main_panels() -> None:
    titles = {title for title, _ in dashboard_queries()}
    assert titles >= MAIN_PANELS
    assert len(dashboard_queries()) >= 15


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {target: free_port() for target in TARGETS}


@pytest.fixture(scope="module")
def prometheus(ports: dict[str, int]) -> Iterator[Prometheus]:
    with run_prometheus([f"127.0.0.1:{port}" for port in ports.values()]) as server:
        yield server


@pytest.mark.anyio
@CLIENT_ON_ASYNCIO
async def test_dashboard_queries_run_on_prometheus(ports: dict[str, int], prometheus: Prometheus) -> None:
    """Every expression of the dashboard is valid PromQL for a real Prometheus; after traffic
    (streams opened and left, publishes), the main panels have data."""
    run = f"r{uuid.uuid4().hex[:8]}-"
    env = {"EVENTSTREAM_RUN": run}
    port = ports["dashboard"]
    with (
        run_server("uvicorn", "tests.apps.metrics_app:app", env=env, port=port) as server,
        anyio.fail_after(90),
    ):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            async with open_events(client, "/events/1") as staying:
                async with open_events(client, "/events/2") as leaving:
                    for reader in (staying, leaving):
                        assert (await reader.next()).event == "stream-open"
                    assert (await client.post("/publish/1?count=5")).status_code == 204
                    assert (await client.post("/publish/2?count=3")).status_code == 204
                    assert (await leaving.next()).json() == "x" * 10
                for _ in range(5):
                    assert (await staying.next()).json() == "x" * 10
                # Every query answers; the main panels' queries with data, once scraped.
                pending = dashboard_queries()
                while pending:
                    still = []
                    for title, expression in pending:
                        result = await prometheus.query(client, expression)  # asserts "success"
                        if title in MAIN_PANELS and not result:
                            still.append((title, expression))
                    pending = still
                    if pending:
                        await anyio.sleep(0.5)  # polling Prometheus under the deadline
                opened = await prometheus.query(
                    client, f'sum(eventstream_streams_opened_total{{instance="127.0.0.1:{port}"}})'
                )
                assert float(opened[0]["value"][1]) == 2


@pytest.mark.anyio
@CLIENT_ON_ASYNCIO
async def test_workers_one_port_each_summed_by_promql(ports: dict[str, int], prometheus: Prometheus) -> None:
    """The documented recipe for several workers: ``hypercorn --workers 0`` per port (the raw ASGI
    example, as docs/howto/metrics.md runs it), each scraped, and PromQL sums them."""
    first, second = ports["worker-1"], ports["worker-2"]
    instances = f'instance=~"127.0.0.1:({first}|{second})"'
    channel = f"r{uuid.uuid4().hex[:8]}"
    workers_0 = ("--workers", "0")
    with (
        run_server("hypercorn-asyncio", "examples.raw_asgi:app", port=first, extra_args=workers_0) as one,
        run_server("hypercorn-trio", "examples.raw_asgi:app", port=second, extra_args=workers_0) as two,
        anyio.fail_after(90),
    ):
        async with (
            httpx.AsyncClient(timeout=30) as client,
            open_events(client, f"{one.base_url}/api/events/{channel}") as reader_one,
            open_events(client, f"{two.base_url}/api/events/{channel}") as reader_two,
        ):
            for reader in (reader_one, reader_two):
                assert (await reader.next()).event == "stream-open"
            for server, count in ((one, 3), (two, 4)):
                for _ in range(count):
                    published = await client.post(
                        f"{server.base_url}/api/publish", json={"channel": channel, "data": "hi"}
                    )
                    assert published.status_code == 202, published.text
            await prometheus.wait_for(
                client, f'sum(eventstream_streams_open{{{instances},template="{{id}}"}})', 2
            )
            await prometheus.wait_for(client, f"sum(eventstream_events_published_total{{{instances}}})", 7)
            per_process = await prometheus.query(
                client, f"sum by (instance) (eventstream_events_published_total{{{instances}}})"
            )
            assert sorted(float(sample["value"][1]) for sample in per_process) == [3, 4]
