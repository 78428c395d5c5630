"""The Redis broker: publish throughput, cross-process latency, fan-out cost, engine memory.

    python -m benchmarks.broker [--quick] [--rounds N] [--backend trio] [--scenario NAME]

Starts a private redis-server (Debian's ``redis-server``) on a free port and measures:

1. publish throughput from one process with many concurrent publishers
   (events accepted by the engine per second; concurrent calls share one
   connection, which valkey-glide pipelines);
2. publish-to-delivery latency across processes at 1,000 events/s: this
   process publishes (``Publisher``), an app process (uvicorn) delivers to an
   httpx client here (p50 / p99 / max);
3. a burst (16 concurrent publishers) to in-process subscribers, with the
   broker and without it (deliveries/s, from the first publish to the last delivery);
4. how many events per second one process takes in from the feed (it receives
   every channel's traffic), published by 64 concurrent publishers;
5. the engine's memory per 1,000 history events of 100 bytes (``INFO memory``).

``--scenario new-channel-flood`` measures instead live delivery under a flood
of streams on new channels: an app process (uvicorn) delivers events paced on
one channel to an httpx client here (publish-to-delivery latency, p50 / p99),
first quiet, then while another process keeps 40 connections opening streams
on 32 channel names never seen before each (each closes once its stream is
open, and opens the next one). The target: the flood's p99 at most twice the
quiet p99 plus 10 ms. ``--baseline`` first runs it without a broker (the app
then publishes what this process posts to it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx

from eventstream import EventStream, Publisher, RedisBroker
from eventstream._backends import current_waiter
from tests.support.redis_engine import RedisEngine
from tests.support.servers import free_port, run_server

PAYLOAD = "x" * 100


async def publish_throughput(url: str, events: int, concurrency: int) -> float:
    async with Publisher(broker=RedisBroker(url, key_prefix="bench-tp:")) as publisher:
        per_task = events // concurrency

        async def worker(index: int) -> None:
            for _ in range(per_task):
                await publisher.publish_event(f"c{index % 10}", {"data": PAYLOAD})

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(concurrency):
                tg.start_soon(worker, index)
        return per_task * concurrency / (time.perf_counter() - started)


async def cross_process_latency(url: str, rate: int, seconds: float) -> list[float]:
    env = {
        "EVENTSTREAM_BROKER": url,
        "EVENTSTREAM_BROKER_PREFIX": "bench-lat:",
        "EVENTSTREAM_KEEP_ALIVE": "5",
    }
    latencies: list[float] = []
    count = int(rate * seconds)
    log_dir = Path(tempfile.gettempdir())
    with run_server("uvicorn", "tests.apps.e2e_app:app", env=env, log_dir=log_dir) as server:
        async with (
            httpx.AsyncClient(timeout=30) as client,
            Publisher(broker=RedisBroker(url, key_prefix="bench-lat:")) as publisher,
            client.stream("GET", f"{server.base_url}/events/lat") as response,
        ):
            lines = response.aiter_lines()
            async for line in lines:  # stream-open
                if line == "":
                    break

            async def publish_paced() -> None:
                start = time.perf_counter()
                for n in range(count):
                    delay = start + n / rate - time.perf_counter()
                    if delay > 0:
                        await anyio.sleep(delay)
                    await publisher.publish_event("lat", {"data": time.time()})

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish_paced)
                async for line in lines:
                    if line.startswith("data: "):
                        latencies.append(time.time() - json.loads(line[6:]))
                        if len(latencies) == count:
                            break
    return latencies


async def live_latencies(
    client: httpx.AsyncClient, base_url: str, url: str | None, rate: int, seconds: float
) -> list[float]:
    """Latencies of events published at ``rate`` on a fresh channel and delivered by the server.

    With the engine's ``url``, this process publishes (as another process of the
    app would); without, the app publishes what it is sent (``POST /publish``).
    """
    channel = f"live{free_port()}"
    latencies: list[float] = []
    count = max(1, int(rate * seconds))
    async with contextlib.AsyncExitStack() as stack:
        if url is not None:
            publisher = await stack.enter_async_context(
                Publisher(broker=RedisBroker(url, key_prefix="bench-flood:"))
            )

            async def publish(data: float) -> None:
                await publisher.publish_event(channel, {"data": data})
        else:
            poster = await stack.enter_async_context(httpx.AsyncClient(timeout=60))

            async def publish(data: float) -> None:
                reply = await poster.post(f"{base_url}/publish", json={"channel": channel, "values": [data]})
                reply.raise_for_status()

        response = await stack.enter_async_context(client.stream("GET", f"{base_url}/events/{channel}"))
        lines = response.aiter_lines()
        async for line in lines:  # stream-open
            if line == "":
                break

        async def publish_paced() -> None:
            start = time.perf_counter()
            for n in range(count):
                delay = start + n / rate - time.perf_counter()
                if delay > 0:
                    await anyio.sleep(delay)
                await publish(time.time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(publish_paced)
            async for line in lines:
                if line.startswith("data: "):
                    latencies.append(time.time() - json.loads(line[6:]))
                    if len(latencies) == count:
                        break
    return latencies


async def flood(base_url: str, connections: int, names: int, seconds: float) -> None:
    """Open streams on never-seen channels from ``connections`` loops for ``seconds`` (its own process)."""
    tag = os.getpid()
    numbers = itertools.count()
    opened = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def loop() -> None:
            nonlocal opened
            while time.perf_counter() < deadline:
                query = "&".join(f"channel=new{tag}-{next(numbers)}" for _ in range(names))
                async with client.stream("GET", f"{base_url}/query?{query}") as response:
                    if response.status_code == 200:
                        async for line in response.aiter_lines():  # until stream-open
                            if line == "":
                                break
                opened += 1

        async with anyio.create_task_group() as tg:
            for _ in range(connections):
                tg.start_soon(loop)
    print(f"flood: {opened} streams opened on {opened * names} new channels in {seconds:g} s", flush=True)


@contextlib.contextmanager
def flooding(
    base_url: str, connections: int, names: int, seconds: float
) -> Iterator[subprocess.Popen[bytes]]:
    """The flood, run by another process for ``seconds`` (waited for on exit)."""
    command = [
        sys.executable, "-m", "benchmarks.broker", "--flood", base_url,
        "--flood-connections", str(connections), "--flood-names", str(names), "--flood-seconds", str(seconds),
    ]  # fmt: skip
    process = subprocess.Popen(command)
    try:
        yield process
    finally:
        try:
            process.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def percentiles(latencies: list[float]) -> tuple[float, float]:
    """p50 and p99, in milliseconds."""
    ms = sorted(value * 1000 for value in latencies)
    return statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]


def new_channel_flood(url: str | None, scale: float, backend: str) -> None:
    """Live delivery, quiet then under the flood, with the broker at ``url`` (or without a broker)."""
    rate, seconds = 200, 10 * scale
    connections, names = 40, 32
    env = {"EVENTSTREAM_KEEP_ALIVE": "5"}
    if url is not None:
        env.update({"EVENTSTREAM_BROKER": url, "EVENTSTREAM_BROKER_PREFIX": "bench-flood:"})
    else:
        print("without a broker (the app publishes what it is sent, POST /publish):")

    async def measure(base_url: str, flooded: bool) -> list[float]:
        async with httpx.AsyncClient(timeout=60) as client:
            if not flooded:
                return await live_latencies(client, base_url, url, rate, seconds)
            with flooding(base_url, connections, names, seconds + 2):
                await anyio.sleep(1)  # the flood is under way
                return await live_latencies(client, base_url, url, rate, seconds)

    with run_server(
        "uvicorn", "tests.apps.e2e_app:app", env=env, log_dir=Path(tempfile.gettempdir())
    ) as server:
        anyio.run(measure, server.base_url, False, backend=backend)  # warm-up
        quiet = percentiles(anyio.run(measure, server.base_url, False, backend=backend))
        flooded = percentiles(anyio.run(measure, server.base_url, True, backend=backend))
    target = 2 * quiet[1] + 10
    print(f"live delivery at {rate} events/s, quiet: p50 {quiet[0]:.2f} ms, p99 {quiet[1]:.2f} ms")
    print(
        f"live delivery under a flood of {connections} connections x {names} new channel names: "
        f"p50 {flooded[0]:.2f} ms, p99 {flooded[1]:.2f} ms"
    )
    verdict = "met" if flooded[1] <= target else "NOT met"
    print(
        f"target p99 <= 2 x quiet p99 + 10 ms = {target:.2f} ms: {verdict} "
        f"(flood p99 / target = {flooded[1] / target:.2f})"
    )


async def publish_some(stream: EventStream, count: int) -> None:
    for _ in range(count):
        await stream.publish_event("burst", {"data": PAYLOAD})


async def burst_fanout(url: str | None, subscribers: int, events: int) -> float:
    broker = RedisBroker(url, key_prefix=f"bench-fan{free_port()}:") if url else None
    stream = EventStream(buffer_size=events, keep_alive_interval=None, broker=broker)
    async with stream:
        if broker is not None:
            await broker.prepare(("burst",))  # as a connection on the channel would
        hub = stream._hub
        subs = [hub.subscribe(("burst",)) for _ in range(subscribers)]
        remaining = subscribers
        done = anyio.Event()

        async def drain(index: int) -> None:
            # As a connection's writer does: take everything queued, else sleep on the waiter.
            nonlocal remaining
            subscriber = subs[index]
            waiter = current_waiter()
            subscriber.waiter = waiter
            received = 0
            while received < events // 16 * 16:
                if subscriber.queue:
                    received += len(subscriber.take())
                else:
                    await waiter.wait(math.inf)
            remaining -= 1
            if remaining == 0:
                done.set()

        async with anyio.create_task_group() as tg:
            for index in range(subscribers):
                tg.start_soon(drain, index)
            started = time.perf_counter()
            async with anyio.create_task_group() as publishers:  # a burst from 16 concurrent publishers
                for _ in range(16):
                    publishers.start_soon(publish_some, stream, events // 16)
            await done.wait()
            elapsed = time.perf_counter() - started
        for sub in subs:
            hub.unsubscribe(sub)
    return subscribers * (events // 16 * 16) / elapsed


async def feed_rate(url: str, events: int) -> float:
    """Events per second one process takes in from the feed (every channel's traffic)."""
    prefix = f"bench-feed{free_port()}:"
    broker = RedisBroker(url, key_prefix=prefix)
    stream = EventStream(broker=broker, slow_consumer="drop-oldest")
    async with stream, Publisher(broker=RedisBroker(url, key_prefix=prefix)) as publisher:
        history = broker.history
        channels = [f"c{index}" for index in range(64)]
        await broker.prepare(channels)  # as a connection on every channel would
        stream._hub.subscribe(channels)

        async def worker(index: int) -> None:
            for _ in range(events // 64):
                await publisher.publish_event(f"c{index}", {"data": PAYLOAD})

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for index in range(64):
                tg.start_soon(worker, index)
        total = events // 64 * 64
        while sum(history.last_seq.values()) < total:  # type: ignore[attr-defined]  # noqa: ASYNC110 (a poll)
            await anyio.sleep(0.001)
        return total / (time.perf_counter() - started)


async def engine_memory(engine: RedisEngine, url: str, events: int) -> float:
    def used() -> int:
        for line in engine.command("INFO", "memory").decode().splitlines():
            if line.startswith("used_memory:"):
                return int(line.split(":")[1])
        raise RuntimeError("no used_memory in INFO")

    before = used()
    async with Publisher(
        broker=RedisBroker(url, key_prefix="bench-mem:", max_events=events, max_bytes=events * 1024)
    ) as publisher:
        for _ in range(events):
            await publisher.publish_event("mem", {"data": PAYLOAD})
    return (used() - before) / (events / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the burst comparison")
    parser.add_argument("--scenario", default="all", choices=["all", "new-channel-flood"])
    parser.add_argument(
        "--baseline", action="store_true", help="new-channel-flood: also run it without a broker first"
    )
    parser.add_argument("--flood", metavar="BASE_URL", help=argparse.SUPPRESS)  # the flood's own process
    parser.add_argument("--flood-connections", type=int, default=40, help=argparse.SUPPRESS)
    parser.add_argument("--flood-names", type=int, default=32, help=argparse.SUPPRESS)
    parser.add_argument("--flood-seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    if args.flood:
        anyio.run(flood, args.flood, args.flood_connections, args.flood_names, args.flood_seconds)
        return
    with tempfile.TemporaryDirectory(prefix="eventstream-bench-redis-") as directory:
        engine = RedisEngine(Path(directory), free_port())
        engine.start()
        try:
            url = engine.url
            if args.scenario == "new-channel-flood":
                if args.baseline:
                    new_channel_flood(None, scale, args.backend)
                new_channel_flood(url, scale, args.backend)
                return
            for concurrency in (1, 16, 64, 256):
                rate = anyio.run(
                    publish_throughput, url, int(40_000 * scale) or 256, concurrency, backend=args.backend
                )
                print(f"publish throughput, {concurrency:>3} concurrent publishers: {rate:10,.0f} events/s")
            latencies = anyio.run(cross_process_latency, url, 1000, 10 * scale, backend=args.backend)
            ms = sorted(value * 1000 for value in latencies)
            p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
            print(
                f"cross-process latency at 1,000 events/s ({len(ms)} events): "
                f"p50 {statistics.median(ms):.2f} ms, p99 {p99:.2f} ms, max {ms[-1]:.2f} ms"
            )
            subscribers, events = 1000, int(1000 * scale) or 100
            rounds: list[tuple[float, float]] = []
            for _ in range(args.rounds):  # interleaved: without, with, without, with...
                without = anyio.run(burst_fanout, None, subscribers, events, backend=args.backend)
                with_broker = anyio.run(burst_fanout, url, subscribers, events, backend=args.backend)
                rounds.append((without, with_broker))
            without = statistics.median(pair[0] for pair in rounds)
            with_broker = statistics.median(pair[1] for pair in rounds)
            ratio = statistics.median(pair[1] / pair[0] for pair in rounds)
            print(
                f"burst of {events} events to {subscribers} subscribers, "
                f"medians of {args.rounds} interleaved rounds: without broker {without:,.0f}, "
                f"with broker {with_broker:,.0f} deliveries/s ({ratio:.2f}x; "
                f"rounds {', '.join(f'{b / a:.2f}x' for a, b in rounds)})"
            )
            taken = anyio.run(feed_rate, url, int(40_000 * scale) or 640, backend=args.backend)
            print(f"one process following the feed (64 channels, 64 publishers): {taken:,.0f} events/s")
            per_thousand = anyio.run(engine_memory, engine, url, 10_000, backend=args.backend)
            print(f"engine memory: {per_thousand / 1024:.1f} KiB per 1,000 history events of 100 B of data")
        finally:
            engine.stop(kill=True)


if __name__ == "__main__":
    main()
