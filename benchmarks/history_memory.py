"""Memory that the default history takes per channel (tracemalloc).

    python -m benchmarks.history_memory

Fills one channel's history to the default limits (256 events, 256 KiB) with
events of several sizes and reports the bytes allocated per channel.
"""

from __future__ import annotations

import tracemalloc

import anyio

from eventstream import EventStream


async def measure(size: int, channels: int = 20) -> int:
    stream = EventStream()
    payload = "x" * size
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for channel in range(channels):
        for _ in range(300):  # more than the 256-event limit
            await stream.publish_event(f"c{channel}", {"event": "message", "data": payload})
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return total // channels


def main() -> None:
    for size in (10, 100, 1000, 4000):
        per_channel = anyio.run(measure, size)
        print(f"events of {size:>5} B of data: {per_channel / 1024:8.1f} KiB per channel")


if __name__ == "__main__":
    main()
