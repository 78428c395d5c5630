"""Fan-out through real servers: eventstream side by side with its peers.

    python -m benchmarks.fanout [--rounds 3] [--scenario NAME ...] [--json PATH]

For every scenario and round, each contender runs in turn (interleaved, so a
slow minute of the machine hits all of them alike) in a fresh server process
on 127.0.0.1, with the load client (:mod:`benchmarks.loadclient`) in another
process. Contenders:

- ``eventstream`` on uvicorn, hypercorn's asyncio worker and its trio worker;
- ``bare``: the asyncio socket server of :mod:`benchmarks.bare_server`, the
  ceiling (one encode per event, one socket write per event per subscriber);
- ``sse-starlette``: Starlette + sse-starlette, one queue per subscriber, on
  uvicorn and hypercorn's asyncio worker;
- ``naive``: an anyio ASGI endpoint, one ASGI send per event, on all three.

uvicorn runs with ``--loop asyncio --http h11`` and hypercorn with
``--workers 0`` (one process), so every server runs the same event loop and
is one process whose CPU and memory can be read.

Prints, per scenario, the medians and eventstream's ratios, and writes every
run as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
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
    "sse-starlette": "benchmarks.apps:sse_starlette_app",
    "naive": "benchmarks.apps:naive_app",
}
SERVERS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
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


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("100x2000x100B", 100, 2000, 100),
        Scenario("1000x200x100B", 1000, 200, 100),
        Scenario("10x20000x100B", 10, 20000, 100),
        Scenario("100x2000x4KB", 100, 2000, 4096),
        Scenario("paced-20k", 100, 1000, 100, rate=200.0),
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
        ),
        Scenario(
            "idle-memory-tracemalloc",
            1000,
            1,
            100,
            contenders=(("eventstream", "uvicorn"),),
            rounds=1,
            tracemalloc=True,
        ),
    ]
}


# -- processes -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(peer: str, server: str, port: int) -> list[str]:
    if peer == "bare":
        return [sys.executable, "-m", "benchmarks.bare_server", str(port)]
    app = APPS[peer]
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
            "--loop", "asyncio", "--http", "h11", "--no-access-log", "--log-level", "warning",
            "--backlog", "4096", "--timeout-graceful-shutdown", "1",
        ]  # fmt: skip
    worker = server.removeprefix("hypercorn-")
    return [
        sys.executable, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}", "-k", worker,
        "--workers", "0", "--backlog", "4096", "--graceful-timeout", "1",
    ]  # fmt: skip


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


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


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
    process = subprocess.Popen(
        server_command(peer, server, port), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
    )
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{peer} on {server} exited with {process.returncode}")
            try:
                request(port, "GET", "/stats", timeout=1)
            except OSError:
                return False
            return True

        wait_for(up, 30, f"{peer} on {server} to start", interval=0.05)
        yield port, process.pid
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
            wait_for(lambda: subscribers() == scenario.connections, 60, "every subscription", interval=0.05)
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
        "peer": peer,
        "server": server,
        "connect_seconds": ready["connect_seconds"],
        "publish_seconds": published["seconds"],
        "duration_s": duration,
        "events_per_s": (survivors * scenario.events / duration) if duration else None,
        "server_cpu_s": cpu_server,
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
            for key in (
                "events_per_s", "latency_p50_ms", "latency_p99_ms", "fairness", "server_cpu_s",
                "client_cpu_s", "duration_s", "rss_before", "rss_idle", "rss_after", "rss_per_connection",
                "traced_own_per_connection", "traced_stack_per_connection", "dead_gone_s", "connect_seconds",
            ):  # fmt: skip
                entry[key] = median(group, key)
            for key in ("lost", "duplicated", "out_of_order", "incomplete_survivors", "log_lines"):
                entry[key] = sum(run[key] for run in group)
    return summary


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "-"


def table(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = [
        "| scenario | server | eventstream ev/s | sse-starlette | naive anyio | bare asyncio "
        "| x sse-starlette | x naive | x bare | p50 / p99 ms | fairness | lost/dup/ooo |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for scenario, contenders in summary.items():
        bare = contenders.get("bare@asyncio", {}).get("events_per_s")
        for server in SERVERS:
            ours = contenders.get(f"eventstream@{server}")
            if ours is None:
                continue
            sse = contenders.get(f"sse-starlette@{server}", {}).get("events_per_s")
            naive = contenders.get(f"naive@{server}", {}).get("events_per_s")
            rate = ours["events_per_s"]

            def fmt(value: float | None) -> str:
                return f"{value:,.0f}" if value else "-"

            fairness = f"{ours['fairness']:.2f}" if ours.get("fairness") else "-"
            lines.append(
                f"| {scenario} | {server} | {fmt(rate)} | {fmt(sse)} | {fmt(naive)} | {fmt(bare)} "
                f"| {ratio(rate, sse)} | {ratio(rate, naive)} | {ratio(rate, bare)} "
                f"| {ours['latency_p50_ms']:.1f} / {ours['latency_p99_ms']:.1f} | {fairness} "
                f"| {ours['lost']}/{ours['duplicated']}/{ours['out_of_order']} |"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name in ("eventstream", "anyio", "trio", "uvicorn", "hypercorn", "h11", "starlette", "sse-starlette"):
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
    parser.add_argument("--scenario", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "fanout.json")
    args = parser.parse_args()

    runs: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    started = time.time()
    for name in args.scenario:
        scenario = SCENARIOS[name]
        rounds = scenario.rounds or args.rounds
        for round_number in range(rounds):
            # rotate the order each round so no contender always runs first
            shift = round_number % len(scenario.contenders)
            order = scenario.contenders[shift:] + scenario.contenders[:shift]
            for peer, server in order:
                try:
                    run = run_once(scenario, peer, server)
                except (OSError, RuntimeError, TimeoutError) as exc:
                    print(
                        f"{name} round {round_number + 1}/{rounds} {peer}@{server}: FAILED: {exc!r}",
                        flush=True,
                    )
                    failures.append({"scenario": name, "peer": peer, "server": server, "error": repr(exc)})
                    continue
                run["round"] = round_number
                runs.append(run)
                rate = f"{run['events_per_s']:,.0f} ev/s" if run["events_per_s"] else "-"
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
