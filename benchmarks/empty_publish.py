"""Publishing to a channel nobody listens to: its cost must not grow with other connections.

    python -m benchmarks.empty_publish [--others 0 1000 10000] [--publishes 20000]

For each number K of other subscribers (spread over 10 other channels, as
other connections would be), times ``publish_event`` on a channel with no
subscriber (history on, as by default) and reports nanoseconds per publish,
best of 5, on asyncio and trio.
"""

from __future__ import annotations

import argparse
import time

import anyio

from eventstream import EventStream, ServerSentEvent


async def measure(others: int, publishes: int) -> float:
    stream = EventStream(keep_alive_interval=None)
    hub = stream._hub
    subscribers = [hub.subscribe((f"busy-{i % 10}",)) for i in range(others)]
    event = ServerSentEvent(event="tick", data="x" * 80)
    for _ in range(1000):  # warm up: the channel's history exists from here on
        await stream.publish_event("nobody", event)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(publishes):
            await stream.publish_event("nobody", event)
        best = min(best, (time.perf_counter_ns() - started) / publishes)
    assert stream.statistics().subscribers == others
    for subscriber in subscribers:
        hub.unsubscribe(subscriber)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--others", type=int, nargs="*", default=[0, 1000, 10_000])
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--backend", choices=["asyncio", "trio"], nargs="*", default=["asyncio", "trio"])
    args = parser.parse_args()
    for backend in args.backend:
        costs = {
            others: anyio.run(measure, others, args.publishes, backend=backend) for others in args.others
        }
        row = ", ".join(f"{others:,} others: {cost:,.0f} ns" for others, cost in costs.items())
        spread = max(costs.values()) / min(costs.values())
        print(f"{backend}: publish to an empty channel: {row} (max/min {spread:.2f})")


if __name__ == "__main__":
    main()
