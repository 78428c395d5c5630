"""A private Prometheus server (Debian's ``prometheus``) that scrapes test apps, stopped by PID.

It gets its own config and data folder in a temporary directory, listens on
127.0.0.1 on a free port, and scrapes every second the targets it was given
at start (ports chosen before the apps start: Prometheus 2.42 hands new
targets to its scrapers only after a fixed 5 s, so the server is started
once, early, and a target without a listener yet is simply down until its
app starts). Tests query its HTTP API (``/api/v1/query``) with a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from .servers import free_port, stop_process

PROMETHEUS = "/usr/bin/prometheus"


def require_prometheus() -> None:
    """Skip the test unless Debian's prometheus is installed (CI installs it: .ci/run)."""
    if shutil.which(PROMETHEUS) is None:
        pytest.skip("prometheus is not installed (apt-get install --no-install-recommends prometheus)")


@dataclass
class Prometheus:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return (self.directory / "prometheus.log").read_text(errors="replace")

    async def query(self, client: httpx.AsyncClient, expression: str) -> list[dict[str, Any]]:
        """The instant vector of ``expression`` now: each result's ``metric`` labels and ``value``."""
        response = await client.get(f"{self.url}/api/v1/query", params={"query": expression})
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for(
        self, client: httpx.AsyncClient, expression: str, expected: float, timeout: float = 20.0
    ) -> list[dict[str, Any]]:
        """Poll ``expression`` until it has one result whose value is ``expected``; return the results.

        Raises:
            TimeoutError: not within ``timeout`` seconds (the message holds the last answer).
        """
        result: list[dict[str, Any]] = []
        try:
            with anyio.fail_after(timeout):
                while True:
                    result = await self.query(client, expression)
                    if len(result) == 1 and float(result[0]["value"][1]) == expected:
                        return result
                    await anyio.sleep(0.2)  # polling the API under a deadline
        except TimeoutError:
            raise TimeoutError(
                f"{expression} != {expected} within {timeout} s; last answer: {result}"
            ) from None


def _config(targets: Sequence[str]) -> str:
    listed = ", ".join(f'"{target}"' for target in targets)
    return (
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: app\n"
        f"    static_configs:\n      - targets: [{listed}]\n"
    )


@contextlib.contextmanager
def run_prometheus(targets: Sequence[str], ready_timeout: float = 30.0) -> Iterator[Prometheus]:
    """Start a private Prometheus that scrapes ``targets`` (``host:port``, ``/metrics``); stop it on exit.

    Waits until ``/-/ready`` answers 200 (at most ``ready_timeout`` seconds);
    a server that exits first (its port was taken) is started again on another port.
    """
    require_prometheus()
    directory = Path(tempfile.mkdtemp(prefix="prometheus-"))
    try:
        (directory / "prometheus.yml").write_text(_config(targets))
        for _attempt in range(5):
            port = free_port()
            with open(directory / "prometheus.log", "wb") as log:
                process = subprocess.Popen(
                    [
                        PROMETHEUS,
                        f"--config.file={directory / 'prometheus.yml'}",
                        f"--storage.tsdb.path={directory / f'data-{port}'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=directory,
                )
            server = Prometheus(port, process, directory)
            deadline = time.monotonic() + ready_timeout
            while process.poll() is None and time.monotonic() < deadline and not _ready(server):
                time.sleep(0.05)  # polling readiness, bounded by the deadline
            if process.poll() is None and _ready(server):
                break
            stop_process(process)
        else:
            raise RuntimeError(f"prometheus did not start; its log:\n{server.log()}")
        try:
            yield server
        finally:
            stop_process(process)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _ready(server: Prometheus) -> bool:
    try:
        return httpx.get(f"{server.url}/-/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
