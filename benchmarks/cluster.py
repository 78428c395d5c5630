"""The Redis broker on one engine against a cluster (3 primaries, 3 replicas): the issue's targets.

    python -m benchmarks.cluster [--quick] [--rounds N] [--backend asyncio|trio] [--replicas N]

Starts, once each, a private redis-server (``tests.support.redis_engine``) and a private
Redis Cluster of 3 primaries with a replica each (``--replicas 0``: none, as the single engine
has none; ``tests.support.redis_cluster``), on free
ports, and stops both by PID at the end. Each round measures both contenders in turn (the
order alternates from round to round); the table holds the medians of the rounds:

1. publish cost per event: ``events`` published by 64 concurrent publishers of one process
   over 1,000 per-user channels (after one untimed event on each). The engine's CPU is the sum
   of ``used_cpu_sys + used_cpu_user`` (``INFO cpu``) over its nodes, before and after: the
   cluster's primaries and replicas apart. The client's CPU is this process's
   ``time.process_time()`` (valkey-glide's threads included). Target: the cluster's cost per
   event within 1.5x of the single engine's, for the engine (its primaries; with the replicas,
   reported beside) and for the client;
2. publish-to-delivery latency across processes at 1,000 events/s: this process publishes, an
   app process (uvicorn) delivers to an httpx client here (``benchmarks.broker``). Target:
   the cluster's p99 at most 10 ms;
3. a burst of events from 16 concurrent publishers to 1,000 in-process subscribers
   (``benchmarks.broker``): deliveries/s with the broker over deliveries/s without one, run
   in the same round. Target: the cluster's at least 0.5x.

Beside the targets: the publish scripts the engine ran per event (concurrent publishes go in
batches of a script each; on a cluster a batch holds one slot's channels), the publish rate and
p50. Defaults: 5 rounds (20,480 events, 5 s of latency, bursts of 960 events); ``--quick``: one
round of 5,120 events, 2 s and 320 events (some 11 s on 2 cores, the engines' start included).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import anyio
import anyio.to_thread

from benchmarks.broker import PAYLOAD, burst_fanout, cross_process_latency, percentiles
from eventstream import Publisher, RedisBroker
from tests.support.redis_cluster import RedisCluster, run_redis_cluster
from tests.support.redis_engine import RedisEngine, run_redis

PUBLISHERS = 64
CHANNELS = 1000
BURST_SUBSCRIBERS = 1000

#: CPU seconds spent by an engine so far, per part ("engine"; or "primaries", "replicas"), and
#: ``scripts``: the scripts its primaries were sent so far (``INFO commandstats``).
CpuReader = Callable[[], dict[str, float]]


def _cpu_seconds(info: dict[str, str]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _script_calls(info: dict[str, str]) -> float:
    """EVAL and EVALSHA calls so far (``INFO commandstats``; commands run by scripts apart)."""
    calls = 0
    for name in ("cmdstat_eval", "cmdstat_evalsha"):
        fields = dict(item.split("=", 1) for item in info.get(name, "").split(",") if "=" in item)
        calls += int(fields.get("calls", 0))
    return float(calls)


def single_cpu(engine: RedisEngine) -> CpuReader:
    def read() -> dict[str, float]:
        text = engine.command("INFO", "cpu", "commandstats").decode()
        info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {"engine": _cpu_seconds(info), "scripts": _script_calls(info)}

    return read


def cluster_cpu(cluster: RedisCluster) -> CpuReader:
    primaries = cluster.primaries()  # nothing fails over during the benchmark

    def read() -> dict[str, float]:
        parts = {"primaries": 0.0, "replicas": 0.0, "scripts": 0.0}
        for node in cluster.live():
            info, stats = node.info("cpu"), node.info("commandstats")
            if not info:
                raise RuntimeError(f"the cluster's node on port {node.port} did not answer INFO")
            parts["primaries" if node in primaries else "replicas"] += _cpu_seconds(info)
            if node in primaries:
                parts["scripts"] += _script_calls(stats)
        return parts

    return read


@dataclass(frozen=True)
class Contender:
    name: str
    url: str
    cpu: CpuReader


async def publish_cost(contender: Contender, events: int, tag: str) -> dict[str, float]:
    """Microseconds of CPU per event (engine parts, ``client``), the ``scripts`` the engine (its
    primaries) ran per event (concurrent publishes go in batches, a script each) and
    ``events_per_s``."""
    per_worker = events // PUBLISHERS
    async with Publisher(broker=RedisBroker(contender.url, key_prefix=f"bench-cost{tag}:")) as publisher:
        for start in range(0, CHANNELS, PUBLISHERS):  # one untimed event per channel
            async with anyio.create_task_group() as tg:
                for index in range(start, min(start + PUBLISHERS, CHANNELS)):
                    tg.start_soon(publisher.publish_event, f"user{index}", {"data": PAYLOAD})

        async def worker(index: int) -> None:
            for n in range(per_worker):
                channel = f"user{(index + n * PUBLISHERS) % CHANNELS}"
                await publisher.publish_event(channel, {"data": PAYLOAD})

        engine_before = await anyio.to_thread.run_sync(contender.cpu)
        client_before, started = time.process_time(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(PUBLISHERS):
                tg.start_soon(worker, index)
        elapsed, client = time.perf_counter() - started, time.process_time() - client_before
        engine_after = await anyio.to_thread.run_sync(contender.cpu)
    total = per_worker * PUBLISHERS
    cost = {part: (engine_after[part] - engine_before[part]) * 1e6 / total for part in engine_after}
    cost["scripts"] = (engine_after["scripts"] - engine_before["scripts"]) / total
    cost["client"] = client * 1e6 / total
    cost["events_per_s"] = total / elapsed
    return cost


@dataclass
class Settings:
    events: int  # published per contender and round (publish cost)
    latency_seconds: float  # at 1,000 events/s
    burst_events: int  # to each of the 1,000 subscribers
    rounds: int
    backend: str


def settings(quick: bool, rounds: int | None, backend: str) -> Settings:
    if quick:
        return Settings(5_120, latency_seconds=2.0, burst_events=320, rounds=rounds or 1, backend=backend)
    return Settings(20_480, latency_seconds=5.0, burst_events=960, rounds=rounds or 5, backend=backend)


def measure(contenders: list[Contender], config: Settings) -> dict[str, dict[str, list[float]]]:
    """Every figure of every round, by contender then figure (``burst_ratio`` against the
    burst without a broker run just before, in the same round)."""
    figures: dict[str, dict[str, list[float]]] = {c.name: {} for c in contenders}
    backend = config.backend

    def add(contender: Contender, values: dict[str, float]) -> None:
        for key, value in values.items():
            figures[contender.name].setdefault(key, []).append(value)

    for round_number in range(config.rounds):
        order = contenders if round_number % 2 == 0 else contenders[::-1]
        for contender in order:
            cost = anyio.run(publish_cost, contender, config.events, str(round_number), backend=backend)
            add(contender, cost)
        for contender in order:
            latencies = anyio.run(
                cross_process_latency, contender.url, 1000, config.latency_seconds, backend=backend
            )
            p50, p99 = percentiles(latencies)
            add(contender, {"p50_ms": p50, "p99_ms": p99})
        for contender in order:
            without = anyio.run(burst_fanout, None, BURST_SUBSCRIBERS, config.burst_events, backend=backend)
            with_broker = anyio.run(
                burst_fanout, contender.url, BURST_SUBSCRIBERS, config.burst_events, backend=backend
            )
            add(contender, {"burst_ratio": with_broker / without, "burst_per_s": with_broker})
        print(f"round {round_number + 1}/{config.rounds} done", flush=True)
    return figures


def table(figures: dict[str, dict[str, list[float]]], config: Settings) -> str:
    """The medians of the rounds, each target and whether the cluster meets it."""
    single = {key: statistics.median(values) for key, values in figures["single"].items()}
    cluster = {key: statistics.median(values) for key, values in figures["cluster"].items()}
    cluster["engine"] = cluster["primaries"] + cluster["replicas"]
    header = ("figure", "single", "cluster", "cluster/single", "target", "cluster")
    rows: list[tuple[str, ...]] = []

    def verdict(met: bool) -> str:
        return "met" if met else "NOT met"

    def compared(what: str, key: str, form: str, target: float | None = None, single_key: str = "") -> None:
        ours, theirs = cluster[key], single[single_key or key]
        ratio = ours / theirs if theirs > 0 else float("inf")
        met = ("-", "-") if target is None else (f"<= {target}x", verdict(ratio <= target))
        rows.append((what, format(theirs, form), format(ours, form), f"{ratio:.2f}x", *met))

    compared("engine CPU us/event (cluster: primaries)", "primaries", ".1f", 1.5, "engine")
    compared("engine CPU us/event (cluster: replicas)", "replicas", ".1f", None, "engine")
    compared("engine CPU us/event (cluster: all nodes)", "engine", ".1f")
    compared("client CPU us/event (publishing process)", "client", ".1f", 1.5)
    compared("publish scripts run per event (batching)", "scripts", ".3f")
    compared("publish rate, events/s", "events_per_s", ",.0f")
    compared("cross-process p50 at 1,000/s, ms", "p50_ms", ".2f")
    p99 = cluster["p99_ms"]
    rows.append(
        ("cross-process p99 at 1,000/s, ms", f"{single['p99_ms']:.2f}", f"{p99:.2f}", "-", "<= 10 ms",
         verdict(p99 <= 10))
    )  # fmt: skip
    burst = cluster["burst_ratio"]
    rows.append(
        ("burst deliveries/s, with broker / without", f"{single['burst_ratio']:.2f}x", f"{burst:.2f}x", "-",
         ">= 0.5x", verdict(burst >= 0.5))
    )  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"medians of {config.rounds} interleaved rounds ({config.backend}): publish cost over "
        f"{config.events:,} events by {PUBLISHERS} publishers on {CHANNELS:,} channels; latency "
        f"over {int(1000 * config.latency_seconds):,} events; burst of {config.burst_events} "
        f"events to {BURST_SUBSCRIBERS:,} subscribers",
    ]
    for row in [header, *rows]:
        lines.append(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if row is header:
            lines.append("-+-".join("-" * width for width in widths))
    for name, data in figures.items():
        p99s = " ".join(f"{value:.1f}" for value in data["p99_ms"])
        bursts = " ".join(f"{value:.2f}x" for value in data["burst_ratio"])
        lines.append(f"rounds, {name}: p99 {p99s} ms; burst {bursts}")
    return "\n".join(lines)


def start_engines(stack: ExitStack, replicas: int) -> Iterator[Contender]:
    """The single engine and the cluster, started once on free ports (stopped when ``stack``
    closes); ``RuntimeError`` or ``TimeoutError`` when one does not start."""
    engine = stack.enter_context(run_redis(check=False))
    yield Contender("single", engine.url, single_cpu(engine))
    cluster = stack.enter_context(run_redis_cluster(replicas_per_primary=replicas, check=False))
    yield Contender("cluster", cluster.url, cluster_cpu(cluster))


def run(config: Settings, replicas: int = 1) -> dict[str, dict[str, list[float]]]:
    """Start both engines (``replicas`` per primary of the cluster), measure them
    (:func:`measure`), stop them (by PID, also on an error)."""
    with ExitStack() as stack:
        return measure(list(start_engines(stack, replicas)), config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads, one round (a smoke run)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; 1 with --quick)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--replicas", type=int, default=1, help="replicas per primary of the cluster")
    args = parser.parse_args()
    config = settings(args.quick, args.rounds, args.backend)
    print(f"cluster: 3 primaries, {args.replicas} replica(s) each")
    print(table(run(config, args.replicas), config))


if __name__ == "__main__":
    main()
