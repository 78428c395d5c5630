"""What tracing costs a publish, in process: off, on without an SDK, and on with the SDK.

    python -m benchmarks.tracing [--rounds 5] [--publishes 20000] [--backend trio]

Times ``publish_event`` of a small event to a channel with one subscriber (history
on, as by default), in nanoseconds per publish, for each way of running:

- ``off``: :func:`eventstream.otel.trace` not called (a publish checks one attribute);
- ``no SDK``: ``trace(stream)`` with OpenTelemetry's global provider and no SDK
  configured (what an app that installed the extra but set up nothing gets);
- ``SDK, not sampled``: the SDK's ``TracerProvider`` with a sampler that keeps no
  span (``ALWAYS_OFF``; ratio samplers skip most spans the same way);
- ``SDK, sampled``: every span kept and handed to a ``BatchSpanProcessor``, whose
  exporter keeps them in memory (the export itself, to a collector, runs in the
  processor's thread and is not counted).

The ways take turns within each round (interleaved); the medians over the rounds
are printed, with each way's cost over ``off``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import anyio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from eventstream import EventStream, ServerSentEvent
from eventstream.otel import trace


def _off(stream: EventStream) -> Callable[[], None]:
    return lambda: None


def _no_sdk(stream: EventStream) -> Callable[[], None]:
    trace(stream)  # the global provider: none configured, so OpenTelemetry's no-op
    return lambda: None


def _not_sampled(stream: EventStream) -> Callable[[], None]:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    trace(stream, provider)
    return provider.shutdown


def _sampled(stream: EventStream) -> Callable[[], None]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace(stream, provider)
    return provider.shutdown


WAYS: dict[str, Callable[[EventStream], Callable[[], None]]] = {
    "off": _off,
    "no SDK": _no_sdk,
    "SDK, not sampled": _not_sampled,
    "SDK, sampled": _sampled,
}


async def measure(way: str, publishes: int) -> float:
    """Nanoseconds per publish, the way ``way`` (a fresh stream, one subscriber that holds them all)."""
    stream = EventStream(keep_alive_interval=None, buffer_size=publishes + 1000, handle_signals=False)
    stop = WAYS[way](stream)
    subscriber = stream._hub.subscribe(("traced",))
    event = ServerSentEvent(event="tick", data="x" * 80)
    try:
        for _ in range(1000):  # warm up (the channel's history exists from here on)
            await stream.publish_event("traced", event)
        started = time.perf_counter_ns()
        for _ in range(publishes):
            await stream.publish_event("traced", event)
        return (time.perf_counter_ns() - started) / publishes
    finally:
        stream._hub.unsubscribe(subscriber)
        stop()


def run(rounds: int, publishes: int, backend: str) -> dict[str, list[float]]:
    """Each way once per round, in turn; the nanoseconds per publish of every round, per way."""
    figures: dict[str, list[float]] = {way: [] for way in WAYS}
    for number in range(rounds):
        for way in WAYS:
            figures[way].append(anyio.run(measure, way, publishes, backend=backend))
        print(f"round {number + 1}/{rounds} done", flush=True)
    return figures


def table(figures: dict[str, list[float]], backend: str) -> str:
    """A Markdown table of the medians, and each way's cost over ``off``."""
    off = statistics.median(figures["off"])
    rows = [
        f"publish_event on {backend}, 1 subscriber: ns per publish (median of {len(figures['off'])} rounds)",
        "",
        "| tracing | ns per publish | over off |",
        "| --- | ---: | ---: |",
    ]
    for way, values in figures.items():
        median = statistics.median(values)
        rows.append(f"| {way} | {median:,.0f} | {median / off:.2f}x (+{median - off:,.0f} ns) |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    print(table(run(args.rounds, args.publishes, args.backend), args.backend))


if __name__ == "__main__":
    main()
