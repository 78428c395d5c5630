"""What a process sharing a RedisBroker takes in from the engine's feed, and what subscribe churn costs.

    python -m benchmarks.feed_share [--processes 4] [--users 2500] [--events 4] [--rounds 3]
    python -m benchmarks.feed_share --scenario churn [--rate 1000] [--seconds 10] [--rounds 3]

``share`` (the default): ``--processes`` app processes (uvicorn, the tests'
``e2e_app``) on one private redis-server, each with ``--users`` clients on
channels of their own (one per user, disjoint between the processes: raw
sockets, opened in batches and held open). A publisher in this process then
publishes ``--events`` events to every user's channel, spread evenly. Each
process's ``statistics().broker.feed_messages`` (read from its ``/stats``)
tells what it took in; its own share is ``users x events``. Also checked:
every client's process delivered every event, and the engine has exactly one
subscription per user channel (``PUBSUB NUMSUB``) and no pattern (``NUMPAT``).

``churn``: one app process; a client makes ``--rate`` channels a second each
gain and lose their only subscriber (a connection opened on it, until its
first bytes arrive, then closed), for ``--seconds``. Three variants run
interleaved per round, each on a fresh app process: ``local`` (no broker:
what the connections cost alone), ``flapping`` (the broker; the same
``--rate`` channels every second: within ``feed_linger``, no subscribe) and
``rotating`` (the broker; new channels every second: each is subscribed,
read, and unsubscribed ``feed_linger`` later). The app's and the engine's CPU
over the run (from ``/proc``) are reported, and the broker's extra over
``local`` as a share of one core. Medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx

from eventstream import Publisher, RedisBroker
from tests.support.helpers import wait_until
from tests.support.redis_engine import RedisEngine, run_redis
from tests.support.servers import Server, run_server

PREFIX = "bench:"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def engine_pid(engine: RedisEngine) -> int:
    assert engine.process is not None
    return engine.process.pid


@contextlib.contextmanager
def apps(engine: RedisEngine | None, count: int, log_dir: Path) -> Iterator[list[Server]]:
    env = {"EVENTSTREAM_KEEP_ALIVE": "30", "EVENTSTREAM_BUFFER_SIZE": "64"}
    if engine is not None:
        env |= {"EVENTSTREAM_BROKER": engine.url, "EVENTSTREAM_BROKER_PREFIX": PREFIX}
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_server("uvicorn", env=env, log_dir=log_dir)) for _ in range(count)]


def request(channel: str) -> bytes:
    return f"GET /events/{channel} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n".encode()


def open_streams(
    port: int, channels: list[str], batch: int = 250, timeout: float = 60.0
) -> list[socket.socket]:
    """Connected sockets, one per channel, each past its response's first bytes (the stream is open)."""
    opened: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for start in range(0, len(channels), batch):
            waiting = set()
            for channel in channels[start : start + batch]:
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(request(channel))
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                waiting.add(sock)
                opened.append(sock)
            while waiting:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(waiting)} streams did not open within {timeout} s")
                for key, _ in selector.select(1.0):
                    ready = key.fileobj
                    assert isinstance(ready, socket.socket)
                    if ready.recv(65536):
                        selector.unregister(ready)
                        waiting.discard(ready)
    return opened


async def stats(client: httpx.AsyncClient, server: Server) -> dict[str, object]:
    response = await client.get(f"{server.base_url}/stats")
    response.raise_for_status()
    result: dict[str, object] = response.json()
    return result


def share_round(processes: int, users: int, events: int, log_dir: Path) -> list[float]:
    """Each process's feed messages over its own share (users x events)."""
    with run_redis(check=False) as engine, apps(engine, processes, log_dir) as servers:
        channels = [[f"u{p}-{i}" for i in range(users)] for p in range(processes)]
        sockets = [open_streams(server.port, mine) for server, mine in zip(servers, channels, strict=True)]
        try:
            return anyio.run(_share, engine, servers, channels, events)
        finally:
            for socks in sockets:
                for sock in socks:
                    sock.close()


async def _share(
    engine: RedisEngine, servers: list[Server], channels: list[list[str]], events: int
) -> list[float]:
    users = len(channels[0])
    async with httpx.AsyncClient(timeout=30) as client:
        for server in servers:

            async def all_subscribed(server: Server = server) -> bool:
                return (await stats(client, server))["subscribers"] == users

            await wait_until(all_subscribed, 60)
        before = [(await stats(client, server))["broker"] for server in servers]
        every = [channel for mine in channels for channel in mine]
        async with Publisher(broker=RedisBroker(engine.url, key_prefix=PREFIX)) as publisher:
            for n in range(events):  # round by round: events spread evenly over the channels
                async with anyio.create_task_group() as tg:
                    for start in range(0, len(every), 500):
                        tg.start_soon(_publish_some, publisher, every[start : start + 500], n)
        for server in servers:

            async def all_delivered(server: Server = server) -> bool:
                return (await stats(client, server))["events_delivered"] == users * events

            await wait_until(all_delivered, 120)
        after = [(await stats(client, server))["broker"] for server in servers]
    sample = every[:: max(1, len(every) // 50)]
    numsub = engine.command("PUBSUB", "NUMSUB", *(f"{PREFIX}|ch:0:{c}" for c in sample))
    assert all(int(n) == 1 for n in numsub.split()[1::2]), numsub
    assert int(engine.command("PUBSUB", "NUMPAT")) == 0
    return [
        (a["feed_messages"] - b["feed_messages"]) / (users * events)  # type: ignore[index]
        for a, b in zip(after, before, strict=True)
    ]


async def _publish_some(publisher: Publisher, channels: list[str], n: int) -> None:
    for channel in channels:
        await publisher.publish_event(channel, {"data": n})


def churn_round(variant: str, rate: int, seconds: float, log_dir: Path) -> tuple[float, float]:
    """The app's and the engine's CPU seconds per second of churn."""
    with run_redis(check=False) as engine, apps(None if variant == "local" else engine, 1, log_dir) as app:
        server = app[0]
        names = iter(range(10**9))
        app_cpu, engine_cpu = cpu_seconds(server.process.pid), cpu_seconds(engine_pid(engine))
        start = time.monotonic()
        for second in range(int(seconds)):
            if variant == "rotating":
                channels = [f"c{next(names)}" for _ in range(rate)]
            else:
                channels = [f"c{i}" for i in range(rate)]
            for sock in open_streams(server.port, channels, batch=100):
                sock.close()
            pause = start + second + 1 - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing: the next second's channels
        elapsed = time.monotonic() - start
        if elapsed > seconds * 1.2:
            print(f"  (the client fell behind: {elapsed:.1f} s for {seconds} s of churn)", file=sys.stderr)
        return (
            (cpu_seconds(server.process.pid) - app_cpu) / elapsed,
            (cpu_seconds(engine_pid(engine)) - engine_cpu) / elapsed,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["share", "churn"], default="share")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--users", type=int, default=2500)
    parser.add_argument("--events", type=int, default=4)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    log_dir = Path(os.environ.get("EVENTSTREAM_TEST_LOGS", "/tmp/eventstream-bench-logs"))
    if args.scenario == "share":
        ratios: list[list[float]] = []
        for round_ in range(args.rounds):
            ratios.append(share_round(args.processes, args.users, args.events, log_dir))
            print(f"round {round_ + 1}: feed messages / own share per process: "
                  + " ".join(f"{r:.3f}" for r in ratios[-1]))  # fmt: skip
        worst = [max(r) for r in ratios]
        print(f"median of the worst process's ratio: {statistics.median(worst):.3f} (target <= 1.2)")
        return
    results: dict[str, list[tuple[float, float]]] = {"local": [], "flapping": [], "rotating": []}
    for round_ in range(args.rounds):
        for variant in results:
            results[variant].append(churn_round(variant, args.rate, args.seconds, log_dir))
            app, eng = results[variant][-1]
            print(f"round {round_ + 1} {variant:9}: app {app * 100:5.1f} % of a core, "
                  f"engine {eng * 100:5.1f} %")  # fmt: skip
    medians = {
        variant: (statistics.median(a for a, _ in runs), statistics.median(e for _, e in runs))
        for variant, runs in results.items()
    }
    for variant, (app, eng) in medians.items():
        extra = app - medians["local"][0]
        print(f"median {variant:9}: app {app * 100:5.1f} %, engine {eng * 100:5.1f} %, "
              f"the broker's extra in the app {extra * 100:+5.1f} % of a core (target <= 10 %)")  # fmt: skip


if __name__ == "__main__":
    main()
