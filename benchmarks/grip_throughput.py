"""Publish throughput through Pushpin: events per second delivered to N held clients.

    python -m benchmarks.grip_throughput [--clients 100] [--events 2000] [--publishers 50]

Starts a private Pushpin in front of the test app (hypercorn, asyncio worker),
holds N clients through it, then publishes M events from this process with
``EventStream(grip=GripPublisher(...))`` from P concurrent publisher tasks,
once with batching (``max_batch=100``) and once without (``max_batch=1``).
Reports, per mode: publishes per second (acceptance by the proxy), deliveries
per second (N x M over the time until the last client got the last event),
requests made, and lost or duplicated events. Needs Debian's ``pushpin``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any

import anyio
import httpx

from eventstream import EventStream, GripPublisher
from tests.support.helpers import open_events
from tests.support.pushpin import SIG_ISS, SIG_KEY, run_pushpin
from tests.support.servers import free_port, run_server


async def measure(
    pushpin_url: str, grip_url: str, clients: int, events: int, publishers: int, batch: int
) -> dict[str, Any]:
    channel = f"bench{batch}"
    received: list[list[int]] = [[] for _ in range(clients)]
    finished = anyio.Event()
    remaining = clients
    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client, anyio.create_task_group() as tg:
        opened = anyio.Semaphore(0)

        async def hold(index: int) -> None:
            nonlocal remaining
            async with open_events(client, f"{pushpin_url}/events/{channel}") as reader:
                await reader.next()  # stream-open: the proxy has subscribed this client
                opened.release()
                while len(received[index]) < events:
                    event = await reader.next()
                    if event.event == "n":
                        received[index].append(int(event.text or 0))
            remaining -= 1
            if remaining == 0:
                finished.set()

        for index in range(clients):
            tg.start_soon(hold, index)
        for _ in range(clients):
            await opened.acquire()

        grip = GripPublisher(grip_url, max_batch=batch)
        async with EventStream(grip=grip) as stream:
            started = time.perf_counter()

            async def publish(first: int) -> None:
                for n in range(first, events, publishers):
                    await stream.publish_event(channel, {"event": "n", "text": str(n)})

            async with anyio.create_task_group() as publishing:
                for first in range(publishers):
                    publishing.start_soon(publish, first)
            accepted = time.perf_counter() - started
            with anyio.move_on_after(120):
                await finished.wait()
            if not finished.is_set():
                counts = sorted(len(r) for r in received)
                print(f"clients stalled; events received, fewest to most: {counts[:5]} ... {counts[-5:]}")
            delivered = time.perf_counter() - started
            (stats,) = grip.statistics()
    lost = sum(events - len(set(r)) for r in received)
    duplicated = sum(len(r) - len(set(r)) for r in received)
    return {
        "max_batch": batch,
        "publishes_per_s": round(events / accepted),
        "deliveries_per_s": round(clients * events / delivered),
        "seconds": round(delivered, 3),
        "requests": stats.requests,
        "items_per_request": round(stats.items_published / max(stats.requests, 1), 1),
        "lost": lost,
        "duplicated": duplicated,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--publishers", type=int, default=50)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    control, http = free_port(), free_port()
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    results = []
    with (
        run_server("hypercorn-asyncio", env={"EVENTSTREAM_GRIP": grip_url}) as app,
        run_pushpin(app.port, http_port=http, control_port=control) as pushpin,
    ):
        pushpin.wait_holds("/events/warmup")
        for batch in (100, 1):
            result = anyio.run(
                measure, pushpin.url, grip_url, args.clients, args.events, args.publishers, batch
            )
            results.append(result)
            print(json.dumps(result))
    report = {
        "machine": f"{platform.machine()} Python {platform.python_version()}",
        "clients": args.clients,
        "events": args.events,
        "publishers": args.publishers,
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
