"""Presence across processes on the Redis broker: the query's time, and what an idle heartbeat costs.

    python -m benchmarks.presence [--members 10000] [--processes 3] [--rounds 200] [--backend trio]

Starts a private redis-server (Debian's ``redis-server``) on a free port.
``--processes`` event streams, each with its own ``RedisBroker`` (each stands
for an app process), hold ``--members`` identities on one channel between
them (put in each one's presence table, as its streams would); another
stream (no members) asks ``presence(channel)`` ``--rounds`` times once every
member shows. It prints one JSON line: the query's p50 / p99 / max in ms (the
target, issue 24: 10,000 present members answered in at most 50 ms), as the
process started and with what it holds frozen (``gc.freeze()``: ``frozen_query_*``),
in blocks of 20 queries taken in turn, and the
engine's time per heartbeat while nothing changes (``INFO commandstats``,
in microseconds), with every member present and with none: a heartbeat's
cost must not grow with the members.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

import anyio

from eventstream import EventStream, RedisBroker
from tests.support.redis_engine import RedisEngine
from tests.support.servers import free_port

CHANNEL = "lobby"
INTERVAL = 0.1
#: Queries in a row before the other way (frozen or not) takes its turn.
BLOCK = 20


def evalsha(engine: RedisEngine) -> tuple[int, int]:
    """The engine's (calls, microseconds) of script calls so far."""
    for line in engine.command("INFO", "commandstats").decode().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(part.split("=") for part in line.split(":", 1)[1].split(","))
            return int(fields["calls"]), int(fields["usec"])
    return 0, 0


async def idle_beat_us(engine: RedisEngine, seconds: float) -> float:
    """The engine's microseconds per script call while only heartbeats run."""
    calls, usec = evalsha(engine)
    await anyio.sleep(seconds)
    calls2, usec2 = evalsha(engine)
    return (usec2 - usec) / max(1, calls2 - calls)


async def measure(
    url: str, engine: RedisEngine, members: int, processes: int, rounds: int
) -> dict[str, float]:
    def app() -> EventStream:
        broker = RedisBroker(
            url, key_prefix="bench:", heartbeat_interval=INTERVAL, heartbeat_expiry=10 * INTERVAL
        )
        return EventStream(broker=broker, presence=True, keep_alive_interval=None)

    holders = [app() for _ in range(processes)]
    reader = app()
    async with contextlib.AsyncExitStack() as stack:
        for stream in [*holders, reader]:
            await stack.enter_async_context(stream)
        empty_us = await idle_beat_us(engine, 20 * INTERVAL)
        for n in range(members):
            table = holders[n % processes]._serving.presence
            assert table is not None
            table.join([CHANNEL], f"user-{n:06d}")
        with anyio.fail_after(60):
            while len(await reader.presence(CHANNEL)) < members:  # noqa: ASYNC110 (a poll)
                await anyio.sleep(INTERVAL)
        full_us = await idle_beat_us(engine, 20 * INTERVAL)
        # Blocks of queries in turn: as the process started, then with what it holds frozen
        # (gc.freeze(), as the performance page recommends: full collections skip it), then
        # unfrozen again.
        times: dict[bool, list[float]] = {False: [], True: []}
        for block in range(2 * max(1, rounds // BLOCK)):
            frozen = block % 2 == 1
            if frozen:
                gc.freeze()
            try:
                for _ in range(min(rounds, BLOCK)):
                    start = time.perf_counter()
                    found = await reader.presence(CHANNEL)
                    times[frozen].append((time.perf_counter() - start) * 1000)
                    assert len(found) == members
            finally:
                gc.unfreeze()
    return {
        "members": members,
        "processes": processes,
        **percentiles("query", times[False]),
        **percentiles("frozen_query", times[True]),
        "engine_us_per_idle_beat_no_members": round(empty_us, 1),
        "engine_us_per_idle_beat_all_members": round(full_us, 1),
    }


def percentiles(name: str, times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        f"{name}_p50_ms": round(statistics.median(times), 2),
        f"{name}_p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        f"{name}_max_ms": round(times[-1], 2),
    }


def run(members: int, processes: int, rounds: int, backend: str = "asyncio") -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="eventstream-bench-redis-") as directory:
        engine = RedisEngine(Path(directory), free_port())
        engine.start()
        try:
            return anyio.run(measure, engine.url, engine, members, processes, rounds, backend=backend)
        finally:
            engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    print(json.dumps(run(args.members, args.processes, args.rounds, args.backend)))


if __name__ == "__main__":
    main()
