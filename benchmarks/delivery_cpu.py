"""CPU per delivery through the endpoint, in process: one event at a time, no server.

    python -m benchmarks.delivery_cpu [--subscribers 100] [--events 2000] [--per-user] [--backend ...]

Opens N streams with :meth:`EventStream.run` on ASGI callables that count the
bytes they are sent (no socket, no server), then publishes M events one at a
time, each only after every stream has written the previous one: the paced
steady state, where every delivery is one wake-up and one ``send``. Reports
process CPU time per delivery (N x M), how much of it the garbage collector
took (its collections and their time while the events ran: objects that live
as long as a connection waits make them longer and more frequent), and the
objects allocated per idle stream (tracemalloc, everything the library and
anyio create for it).
"""

from __future__ import annotations

import argparse
import functools
import gc
import statistics
import time
import tracemalloc
from typing import Any

import anyio

from eventstream import EventStream, ServerSentEvent

_SCOPE = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}


async def _open(
    stream: EventStream, count: int, tg: anyio.abc.TaskGroup, sink: Any, per_user: bool = False
) -> None:
    gone = anyio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    total = stream.subscriber_count() + count
    for user in range(count):
        tg.start_soon(stream.run, dict(_SCOPE), receive, sink, f"user-{user}" if per_user else "bench")
    with anyio.fail_after(60):
        await stream.wait_subscribers(total)
    await anyio.wait_all_tasks_blocked()


class CollectorClock:
    """The garbage collector's collections per generation and their time, while :attr:`running`."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.seconds = 0.0
        self.running = False
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.running:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.collections[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> CollectorClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self)


async def cpu_per_delivery(
    subscribers: int, events: int, per_user: bool = False, collector: CollectorClock | None = None
) -> float:
    stream = EventStream(keep_alive_interval=20.0)
    written = 0
    target = 0
    reached = anyio.Event()

    async def sink(message: dict[str, Any]) -> None:
        nonlocal written, reached
        if message.get("body", b"").startswith(b"event: tick"):
            written += 1
            if written == target:
                reached.set()

    message = ServerSentEvent(event="tick", data="x" * 80)
    async with anyio.create_task_group() as tg:
        await _open(stream, subscribers, tg, sink, per_user)
        if collector is not None:
            collector.running = True
        started = time.process_time()
        for i in range(events):
            target = subscribers * (i + 1)
            reached = anyio.Event()
            if per_user:  # one event to each user's own channel
                for user in range(subscribers):
                    await stream.publish_event(f"user-{user}", message)
            else:
                await stream.publish_event("bench", message)
            await reached.wait()
        used = time.process_time() - started
        if collector is not None:
            collector.running = False
        tg.cancel_scope.cancel()
    return used / (subscribers * events)


async def idle_bytes(subscribers: int) -> float:
    stream = EventStream()

    async def sink(message: dict[str, Any]) -> None:
        pass

    async with anyio.create_task_group() as tg:
        await _open(stream, 10, tg, sink)  # warm up
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await _open(stream, subscribers, tg, sink)
        stream_count = subscribers + 10
        assert stream.subscriber_count() == stream_count
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        tg.cancel_scope.cancel()
    return (after - before) / subscribers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--per-user", action="store_true", help="each stream on its own channel")
    parser.add_argument("--backend", choices=["asyncio", "trio"], nargs="*", default=["asyncio", "trio"])
    args = parser.parse_args()
    deliveries = args.subscribers * args.events
    for backend in args.backend:
        runs, collectors = [], []
        for _ in range(3):
            with CollectorClock() as collector:
                run = functools.partial(cpu_per_delivery, collector=collector)
                runs.append(anyio.run(run, args.subscribers, args.events, args.per_user, backend=backend))
            collectors.append(collector)
        idle = anyio.run(idle_bytes, args.idle, backend=backend)
        gc_us = statistics.median(c.seconds / deliveries * 1e6 for c in collectors)
        print(
            f"{backend}: {statistics.median(runs) * 1e6:.2f} µs CPU per delivery "
            f"(median of 3: {', '.join(f'{r * 1e6:.2f}' for r in runs)}), of which the garbage "
            f"collector {gc_us:.2f} µs (collections per generation: "
            f"{', '.join('/'.join(map(str, c.collections)) for c in collectors)}); "
            f"{idle:,.0f} B allocated per idle stream"
        )


if __name__ == "__main__":
    main()
