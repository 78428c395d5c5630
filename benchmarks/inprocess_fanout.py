"""In-process fan-out, no server: subscriber-deliveries per second.

    python -m benchmarks.inprocess_fanout [--subscribers 10000] [--events 100] [--backend asyncio|trio]

Subscribes N in-process subscribers to one channel (each drained by its own
task, as a connection would), publishes M events, and reports deliveries per
second (N x M over the time from the first publish until every subscriber has
taken every event out of its buffer).
"""

from __future__ import annotations

import argparse
import math
import time

import anyio

from eventstream import EventStream, ServerSentEvent
from eventstream._backends import current_waiter
from eventstream._core import Subscriber


async def measure(subscribers: int, events: int) -> float:
    stream = EventStream(buffer_size=256, keep_alive_interval=None, history=None)
    hub = stream._hub
    subs = [hub.subscribe(("bench",)) for _ in range(subscribers)]
    remaining = subscribers
    done = anyio.Event()

    async def drain(subscriber: Subscriber) -> None:
        # As a connection's writer does: take everything queued, else sleep on the waiter.
        nonlocal remaining
        waiter = current_waiter()
        subscriber.waiter = waiter
        received = 0
        while received < events:
            if subscriber.queue:
                received += len(subscriber.take())
            else:
                await waiter.wait(math.inf)
        remaining -= 1
        if remaining == 0:
            done.set()

    message = ServerSentEvent(event="tick", data="x" * 80)
    async with anyio.create_task_group() as tg:
        for sub in subs:
            tg.start_soon(drain, sub)
        await anyio.wait_all_tasks_blocked()
        started = time.perf_counter()
        for _ in range(events):
            await stream.publish_event("bench", message)
        await done.wait()
        elapsed = time.perf_counter() - started
    for sub in subs:
        hub.unsubscribe(sub)
    return subscribers * events / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--backend", choices=["asyncio", "trio"], nargs="*", default=["asyncio", "trio"])
    args = parser.parse_args()
    for backend in args.backend:
        rates = [anyio.run(measure, args.subscribers, args.events, backend=backend) for _ in range(3)]
        runs = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(f"{backend}: {max(rates):,.0f} subscriber-deliveries/s (best of 3; {runs})")


if __name__ == "__main__":
    main()
