"""Fan-out through real servers: eventstream side by side with its peers.

    python -m benchmarks.fanout [--rounds 3] [--scenario NAME ...] [--json PATH] [--idle-streams N]

For every scenario and round, each contender runs in turn (interleaved, so a
slow minute of the machine hits all of them alike) in a fresh server process
on 127.0.0.1, with the load client (:mod:`benchmarks.loadclient`) in another
process. Contenders:

- ``eventstream`` on uvicorn, hypercorn's asyncio worker and its trio worker;
- ``bare``: the asyncio socket server of :mod:`benchmarks.bare_server`, the
  ceiling (one encode per event, one socket write per event per subscriber);
- ``sse-starlette``: Starlette + sse-starlette, one queue per subscriber, on
  uvicorn and hypercorn's asyncio worker;
- ``naive``: an anyio ASGI endpoint, one ASGI send per event, on all three;
- ``eventstream-js``: the project this one ports, ``@fanoutio/eventstream``
  2.0.1 on Express (Node), the anchor (``benchmarks/node``; ``npm ci`` there
  first).

``uvicorn`` runs with ``--loop asyncio --http h11`` and hypercorn with
``--workers 0`` (one process), so every server runs the same event loop and
is one process whose CPU and memory can be read. What users deploy runs too,
in the scenarios that list it: ``uvicorn-uvloop`` (``uvicorn[standard]``:
uvloop and httptools) and ``granian`` (Rust, one worker), each with the
peers on the same server.

Paced scenarios report CPU per delivery: the server process's CPU time over
the run (from /proc) divided by the events delivered. ``paced-20k-metrics``
compares the eventstream app with and without a Prometheus collector
registered (``eventstream+metrics``), on uvicorn and hypercorn's trio worker.

Prints, per scenario, the medians and eventstream's ratios, and writes every
run as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import http.client
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

APPS = {
    "eventstream": "benchmarks.apps:eventstream_app",
    # The same app with a Prometheus collector registered (its publishes timed): the cost of metrics.
    "eventstream+metrics": "benchmarks.apps:eventstream_app",
    "sse-starlette": "benchmarks.apps:sse_starlette_app",
    "naive": "benchmarks.apps:naive_app",
}
SERVERS = ("uvicorn", "uvicorn-uvloop", "hypercorn-asyncio", "hypercorn-trio", "granian")
NODE_SERVER = ROOT / "benchmarks" / "node" / "server.js"
ANCHOR = ("eventstream-js", "express")
CONTENDERS: list[tuple[str, str]] = [
    ("eventstream", "uvicorn"),
    ("eventstream", "hypercorn-asyncio"),
    ("eventstream", "hypercorn-trio"),
    ("bare", "asyncio"),
    ("sse-starlette", "uvicorn"),
    ("sse-starlette", "hypercorn-asyncio"),
    ("naive", "uvicorn"),
    ("naive", "hypercorn-asyncio"),
    ("naive", "hypercorn-trio"),
    ANCHOR,
]
#: What users deploy, beside the peers on the same server.
DEPLOYED: list[tuple[str, str]] = [
    (peer, server)
    for server in ("uvicorn-uvloop", "granian")
    for peer in ("eventstream", "sse-starlette", "naive")
]


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    events: int
    size: int
    rate: float = 0.0  # events per second, 0 = unpaced
    vanish_half: bool = False
    contenders: tuple[tuple[str, str], ...] = tuple(CONTENDERS)
    rounds: int | None = None  # None: the --rounds option
    tracemalloc: bool = False
    per_user: bool = False  # each connection on its own channel; ``rate`` per channel
    idle: bool = False  # no events: how many streams one process holds, and one event to all


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("100x2000x100B", 100, 2000, 100, contenders=(*CONTENDERS, *DEPLOYED)),
        Scenario("1000x200x100B", 1000, 200, 100),
        Scenario("10x20000x100B", 10, 20000, 100),
        Scenario("100x2000x4KB", 100, 2000, 4096),
        Scenario("paced-20k", 100, 1000, 100, rate=200.0, contenders=(*CONTENDERS, *DEPLOYED)),
        Scenario(
            "per-user-10k",
            10_000,
            10,
            100,
            rate=2.0,
            per_user=True,
            contenders=(
                ("eventstream", "uvicorn"),
                ("eventstream", "uvicorn-uvloop"),
                ("eventstream", "hypercorn-asyncio"),
                ("eventstream", "hypercorn-trio"),
                ("eventstream", "granian"),
                ("sse-starlette", "uvicorn"),
                ("sse-starlette", "uvicorn-uvloop"),
                ("sse-starlette", "granian"),
                ("naive", "uvicorn"),
                ("bare", "asyncio"),
            ),
        ),
        Scenario(
            "paced-20k-metrics",
            100,
            1000,
            100,
            rate=200.0,
            contenders=(
                ("eventstream", "uvicorn"),
                ("eventstream+metrics", "uvicorn"),
                ("eventstream", "hypercorn-trio"),
                ("eventstream+metrics", "hypercorn-trio"),
            ),
        ),
        Scenario("vanish-half", 100, 2000, 100, vanish_half=True),
        Scenario(
            "10000-connections",
            10_000,
            1,
            100,
            contenders=(
                ("eventstream", "uvicorn"),
                ("eventstream", "hypercorn-asyncio"),
                ("eventstream", "hypercorn-trio"),
            ),
            rounds=1,
            idle=True,
        ),
        Scenario(
            "idle-memory-tracemalloc",
            1000,
            1,
            100,
            contenders=(("eventstream", "uvicorn"),),
            rounds=1,
            tracemalloc=True,
            idle=True,
        ),
        Scenario(
            "100000-idle-streams",
            100_000,
            1,
            100,
            contenders=(("eventstream", "uvicorn"),),
            rounds=1,
            idle=True,
        ),
    ]
}
#: Scenarios left out unless named (``--scenario 100000-idle-streams``): they need the machine.
OPT_IN = ("100000-idle-streams",)


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(peer: str, server: str, port: int) -> list[str]:
    if peer == "bare":
        return [sys.executable, "-m", "benchmarks.bare_server", str(port)]
    if peer == "eventstream-js":
        return ["node", str(NODE_SERVER), str(port)]
    app = APPS[peer]
    if server in ("uvicorn", "uvicorn-uvloop"):
        loop, http = ("uvloop", "httptools") if server == "uvicorn-uvloop" else ("asyncio", "h11")
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", loop, "--http", http, "--no-access-log", "--log-level", "warning",
            "--backlog", "4096", "--timeout-graceful-shutdown", "1",
        ]  # fmt: skip
    if server == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1", "--backlog", "16384", "--backpressure", "200000",
            "--log-level", "warning", app,
        ]  # fmt: skip
    worker = server.removeprefix("hypercorn-")
    return [
        sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}", "-k", worker,
        "--workers", "0", "--backlog", "4096", "--graceful-timeout", "1",
    ]  # fmt: skip


def file_limit_allows(wanted: int) -> bool:
    """Whether processes started from here can open ``wanted`` files (raising the limit if need be)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted <= hard:
        return True
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), wanted))
    except (ValueError, OSError):
        return False
    return True


def _raise_file_limit() -> None:
    # In the server process, before it starts: room for 100,000 sockets if the
    # system allows it (fs.nr_open), else the hard limit.
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (250_000, 250_000))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def request(port: int, method: str, path: str, timeout: float = 600.0) -> dict[str, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status}")
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        connection.close()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian serves from a worker process of its own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, ()))
    return tree


def _rss_one(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes(pid: int) -> int:
    """Resident memory of the server: the process and its children."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            total += _rss_one(member)
    return total


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of the server: the process and its children."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> float:
    """Poll ``predicate`` until true; return the time it took. Raise on timeout."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


@contextlib.contextmanager
def serve(peer: str, server: str, log: IO[bytes], tracemalloc: bool) -> Iterator[tuple[int, int]]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT))),
        "PYTHONUNBUFFERED": "1",
    }
    if tracemalloc:
        env["BENCH_TRACEMALLOC"] = "1"
    if peer == "eventstream+metrics":
        env["BENCH_METRICS"] = "1"
    process = subprocess.Popen(
        server_command(peer, server, port),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        preexec_fn=_raise_file_limit if os.geteuid() == 0 else None,
    )
    with answering(process, port, f"{peer} on {server}"):
        yield port, process.pid


@contextlib.contextmanager
def answering(
    process: subprocess.Popen[bytes], port: int, what: str, log: Path | None = None
) -> Iterator[None]:
    """The server ``process`` on ``port``, once it answers ``GET /stats`` (30 s at most).

    Raises ``RuntimeError`` (with ``log``'s text, if given) when it exits
    first. On leaving, it is terminated, and killed after 10 s.
    """
    try:

        def up() -> bool:
            if process.poll() is not None:
                detail = f": {log.read_text(errors='replace')}" if log is not None else ""
                raise RuntimeError(f"{what} exited with {process.returncode}{detail}")
            try:
                request(port, "GET", "/stats", timeout=1)
            except OSError:
                return False
            return True

        wait_for(up, 30, f"{what} to start", interval=0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_line(stream: IO[bytes], timeout: float) -> dict[str, Any]:
    """One JSON line from the load client, within ``timeout`` seconds."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or not box[0]:
        raise TimeoutError("the load client did not answer")
    result: dict[str, Any] = json.loads(box[0])
    return result


# -- one run -----------------------------------------------------------------


def run_once(scenario: Scenario, peer: str, server: str) -> dict[str, Any]:
    with tempfile.TemporaryFile() as log, serve(peer, server, log, scenario.tracemalloc) as (port, pid):

        def subscribers() -> int:
            return int(request(port, "GET", "/stats", timeout=30)["subscribers"])

        rss_before = rss_bytes(pid)
        traced_before = request(port, "GET", "/stats?traced=1")["traced"]
        client_command = [
            sys.executable, "-m", "benchmarks.loadclient", "--port", str(port),
            "--connections", str(scenario.connections), "--events", str(scenario.events),
            "--size", str(scenario.size),
        ]  # fmt: skip
        if scenario.vanish_half:
            client_command.append("--vanish-half")
        if scenario.per_user:
            client_command.append("--per-user")
        if peer == "eventstream-js":
            client_command.append("--quoted")
        client = subprocess.Popen(
            client_command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))},
        )
        assert client.stdin is not None
        assert client.stdout is not None
        try:
            ready = read_line(client.stdout, 300)
            wait_for(lambda: subscribers() == scenario.connections, 300, "every subscription", interval=0.05)
            time.sleep(0.5)  # let the server settle before reading its idle memory
            rss_idle = rss_bytes(pid)
            traced_idle = request(port, "GET", "/stats?traced=1")["traced"]
            log_lines_before = log.tell()

            samples: list[tuple[int, int]] = []
            sampling = threading.Event()
            if scenario.vanish_half:

                def sample() -> None:
                    while not sampling.is_set():
                        samples.append((time.monotonic_ns(), subscribers()))
                        time.sleep(0.005)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
            cpu_before = cpu_seconds(pid)
            path = f"/publish?count={scenario.events}&size={scenario.size}&rate={scenario.rate}"
            if scenario.per_user:
                path += f"&users={scenario.connections}"
            published = request(port, "POST", path)
            client.stdin.write(b"finish\n")
            client.stdin.flush()
            result = read_line(client.stdout, 300)["result"]
            cpu_server = cpu_seconds(pid) - cpu_before
            sampling.set()
            client.wait(30)
            gone = wait_for(lambda: subscribers() == 0, 30, "every subscription to end")
            rss_after = rss_bytes(pid)
            log.seek(0, os.SEEK_END)
            log_bytes = log.tell() - log_lines_before
            log.seek(log_lines_before)
            log_lines = log.read().count(b"\n")
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            client.stdin.close()
            client.stdout.close()
    duration = (
        (result["last_arrival_ns"] - result["first_sent_ns"]) / 1e9 if result["first_sent_ns"] else None
    )
    survivors = scenario.connections - result["vanished"]
    run: dict[str, Any] = {
        "scenario": scenario.name,
        "connections": scenario.connections,
        "peer": peer,
        "server": server,
        "connect_seconds": ready["connect_seconds"],
        "publish_seconds": published["seconds"],
        "duration_s": duration,
        "events_per_s": (survivors * scenario.events / duration) if duration else None,
        "server_cpu_s": cpu_server,
        "cpu_us_per_delivery": cpu_server / result["received"] * 1e6 if result["received"] else None,
        "rss_before": rss_before,
        "rss_idle": rss_idle,
        "rss_after": rss_after,
        "rss_per_connection": (rss_idle - rss_before) / scenario.connections,
        **{
            f"traced_{kind}_per_connection": (traced_idle[kind] - traced_before[kind]) / scenario.connections
            for kind in traced_idle
        },
        "unsubscribed_after_s": gone,
        "log_lines": log_lines,
        "log_bytes": log_bytes,
        **result,
    }
    if duration and result["first_finish_s"]:
        run["fairness"] = result["last_finish_s"] / result["first_finish_s"]
    if scenario.vanish_half and result["last_vanish_ns"]:
        target = survivors
        after = [t for t, n in samples if n <= target and t >= result["last_vanish_ns"]]
        run["dead_gone_s"] = (after[0] - result["last_vanish_ns"]) / 1e9 if after else None
    return run


# -- the report --------------------------------------------------------------


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        summary.setdefault(run["scenario"], {}).setdefault(f"{run['peer']}@{run['server']}", {"runs": []})[
            "runs"
        ].append(run)
    for contenders in summary.values():
        for entry in contenders.values():
            group = entry.pop("runs")
            entry["rounds"] = len(group)
            entry["connections"] = group[0]["connections"]
            for key in (
                "events_per_s", "latency_p50_ms", "latency_p99_ms", "fairness", "server_cpu_s",
                "client_cpu_s", "duration_s", "rss_before", "rss_idle", "rss_after", "rss_per_connection",
                "traced_own_per_connection", "traced_stack_per_connection", "dead_gone_s", "connect_seconds",
                "cpu_us_per_delivery",
            ):  # fmt: skip
                entry[key] = median(group, key)
            for key in ("lost", "duplicated", "out_of_order", "incomplete_survivors", "log_lines"):
                entry[key] = sum(run[key] for run in group)
    return summary


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def _fmt(value: float | None, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value else "-"


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The report: bursts (events/s), paced runs (CPU per delivery), idle streams (memory)."""
    bursts = [
        "| scenario | server | eventstream ev/s | sse-starlette | naive anyio | bare asyncio | JS original "
        "| x sse-starlette | x naive | x bare | x JS | p50 / p99 ms | fairness | lost/dup/ooo |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    paced = [
        "| scenario | server | eventstream µs CPU/delivery | sse-starlette | naive anyio | bare asyncio "
        "| JS original | x cheapest peer | x JS | p50 / p99 ms | lost/dup/ooo "
        "| delivered, % of offered: eventstream / sse-starlette / naive |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    metrics = [
        "| scenario | server | µs CPU/delivery, metrics off | metrics on | x off (target <= 1.05) "
        "| p99 ms off / on | lost/dup/ooo on |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    idle = [
        "| scenario | server | streams | RSS idle MiB | RSS per stream KiB | one event reaches all, s "
        "| library objects per stream KiB (tracemalloc) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, contenders in summary.items():
        scenario = SCENARIOS.get(name)
        bare = contenders.get("bare@asyncio", {})
        anchor = contenders.get("@".join(ANCHOR), {})
        for server in SERVERS:
            ours = contenders.get(f"eventstream@{server}")
            if ours is None:
                continue
            measured = contenders.get(f"eventstream+metrics@{server}")
            if measured is not None:  # the cost of metrics: the same app with a collector registered
                key = "cpu_us_per_delivery"
                metrics.append(
                    f"| {name} | {server} | {_fmt(ours.get(key), 1)} | {_fmt(measured.get(key), 1)} "
                    f"| {ratio(measured.get(key), ours.get(key))} "
                    f"| {_fmt(ours['latency_p99_ms'], 1)} / {_fmt(measured['latency_p99_ms'], 1)} "
                    f"| {measured['lost']}/{measured['duplicated']}/{measured['out_of_order']} |"
                )
                continue
            sse = contenders.get(f"sse-starlette@{server}", {})
            naive = contenders.get(f"naive@{server}", {})
            counts = f"{ours['lost']}/{ours['duplicated']}/{ours['out_of_order']}"
            latency = f"{ours['latency_p50_ms']:.1f} / {ours['latency_p99_ms']:.1f}"
            if scenario is not None and scenario.idle:
                traced = ours.get("traced_stack_per_connection")
                idle.append(
                    f"| {name} | {server} | {ours['connections']:,} | {_fmt(ours['rss_idle'] / 2**20)} "
                    f"| {_fmt(ours['rss_per_connection'] / 1024, 1)} | {_fmt(ours['duration_s'], 2)} "
                    f"| {_fmt(traced / 1024 if traced else None, 1)} |"
                )
            elif scenario is not None and scenario.rate:
                key = "cpu_us_per_delivery"
                peers = [float(entry[key]) for entry in (sse, naive) if entry.get(key)]
                cheapest = min(peers) if peers else None
                # A server that cannot keep up spends more per delivery: say who delivered what was offered.
                offered = scenario.connections * scenario.rate
                kept = " / ".join(
                    f"{100 * entry['events_per_s'] / offered:.0f}" if entry.get("events_per_s") else "-"
                    for entry in (ours, sse, naive)
                )
                paced.append(
                    f"| {name} | {server} | {_fmt(ours.get(key), 1)} | {_fmt(sse.get(key), 1)} "
                    f"| {_fmt(naive.get(key), 1)} | {_fmt(bare.get(key), 1)} | {_fmt(anchor.get(key), 1)} "
                    f"| {ratio(ours.get(key), cheapest)} | {ratio(ours.get(key), anchor.get(key))} "
                    f"| {latency} | {counts} | {kept} |"
                )
            else:
                key = "events_per_s"
                rate = ours[key]
                fairness = f"{ours['fairness']:.2f}" if ours.get("fairness") else "-"
                bursts.append(
                    f"| {name} | {server} | {_fmt(rate)} | {_fmt(sse.get(key))} | {_fmt(naive.get(key))} "
                    f"| {_fmt(bare.get(key))} | {_fmt(anchor.get(key))} | {ratio(rate, sse.get(key))} "
                    f"| {ratio(rate, naive.get(key))} | {ratio(rate, bare.get(key))} "
                    f"| {ratio(rate, anchor.get(key))} | {latency} | {fairness} | {counts} |"
                )
    parts = [lines for lines in (bursts, paced, metrics, idle) if len(lines) > 2]
    return "\n\n".join("\n".join(lines) for lines in parts)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in (
        "eventstream", "anyio", "trio", "uvicorn", "hypercorn", "h11", "starlette", "sse-starlette",
        "uvloop", "httptools", "granian",
    ):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scenario",
        nargs="*",
        choices=sorted(SCENARIOS),
        default=[name for name in SCENARIOS if name not in OPT_IN],
    )
    parser.add_argument(
        "--idle-streams",
        type=int,
        default=None,
        help="streams held by the 100000-idle-streams scenario, where the file limit allows fewer",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fanout.json")
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    started = time.time()
    for name in args.scenario:
        scenario = SCENARIOS[name]
        if name in OPT_IN and args.idle_streams is not None:
            scenario = dataclasses.replace(scenario, connections=args.idle_streams)
        if not file_limit_allows(scenario.connections + 1000):
            needed = scenario.connections + 1000
            print(f"{name}: SKIPPED: it needs {needed:,} open files per process", flush=True)
            failures.append({"scenario": name, "error": "RLIMIT_NOFILE cannot be raised that far"})
            continue
        rounds = scenario.rounds or args.rounds
        for round_number in range(rounds):
            # rotate the order each round so no contender always runs first
            shift = round_number % len(scenario.contenders)
            order = scenario.contenders[shift:] + scenario.contenders[:shift]
            for peer, server in order:
                try:
                    run = run_once(scenario, peer, server)
                except (OSError, RuntimeError, TimeoutError, http.client.HTTPException) as exc:
                    print(
                        f"{name} round {round_number + 1}/{rounds} {peer}@{server}: FAILED: {exc!r}",
                        flush=True,
                    )
                    failures.append({"scenario": name, "peer": peer, "server": server, "error": repr(exc)})
                    continue
                run["round"] = round_number
                runs.append(run)
                rate = f"{run['events_per_s']:,.0f} ev/s" if run["events_per_s"] else "-"
                if run["cpu_us_per_delivery"]:
                    rate += f", {run['cpu_us_per_delivery']:.1f} µs CPU/delivery"
                print(
                    f"{name} round {round_number + 1}/{rounds} {peer}@{server}: {rate}, "
                    f"p99 {run['latency_p99_ms']:.1f} ms, lost {run['lost']}, dup {run['duplicated']}, "
                    f"ooo {run['out_of_order']}, server cpu {run['server_cpu_s']:.2f} s, "
                    f"client cpu {run['client_cpu_s']:.2f} s, "
                    f"rss {run['rss_before'] / 2**20:.1f}/{run['rss_idle'] / 2**20:.1f}/"
                    f"{run['rss_after'] / 2**20:.1f} MiB",
                    flush=True,
                )
    summary = summarise(runs)
    info = machine()
    report = {
        "machine": info,
        "command": "python -m benchmarks.fanout " + " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": time.time() - started,
        "summary": summary,
        "runs": runs,
        "failures": failures,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    markdown = table(summary)
    args.json.with_suffix(".md").write_text(
        f"{markdown}\n\nMachine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}; {report['command']}; {report['started']}.\n"
    )
    print()
    print(markdown)
    print(f"\nwritten to {args.json}")
    if failures:
        raise SystemExit(f"{len(failures)} runs failed")


if __name__ == "__main__":
    main()
