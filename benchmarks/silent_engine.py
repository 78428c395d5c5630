"""The Redis broker when its engine accepts and never answers: how late publishes fail, how new streams wait.

    python -m benchmarks.silent_engine [--rounds N] [--backend trio] [--queued N]

A private redis-server (Debian's ``redis-server``) sits behind a relay on
127.0.0.1 that forwards until the measurement starts, then holds everything
it is sent: the engine has accepted the broker's connections and answers
nothing more. Per round:

1. ``--queued`` publishes (700) are called at once and 60 more while they
   wait, with ``publish_timeout=3``; each must raise within ``publish_timeout``
   of its own call plus a small constant, whatever is queued ahead of it. The
   figure is each call's lateness: how long after its own ``publish_timeout``
   it raised (median, p99, max);
2. 10 streams on channels the process already follows and one on a channel
   it never saw open at once, with ``request_timeout=1``: the documented bound
   is ``request_timeout + 0.5`` s for each (followed ones are served from the
   process's copy, the new one gets 503), all together, not one after another.

Medians over the rounds are printed with the targets.
"""

from __future__ import annotations

import argparse
import statistics

import anyio

from eventstream import BrokerError, EventStream, RedisBroker
from eventstream.testing import open_stream
from tests.support.redis_engine import run_redis
from tests.support.relay import Relay, relay

PUBLISH_TIMEOUT = 3.0
REQUEST_TIMEOUT = 1.0
#: What "a small constant" may add to publish_timeout (the target).
PUBLISH_MARGIN = 0.5


def broker_through(instance: Relay, prefix: str) -> EventStream:
    return EventStream(
        broker=RedisBroker(
            f"redis://127.0.0.1:{instance.port}",
            key_prefix=prefix,
            check_interval=3600,
            request_timeout=REQUEST_TIMEOUT,
            publish_timeout=PUBLISH_TIMEOUT,
        )
    )


async def queued_publishes(instance: Relay, prefix: str, queued: int) -> list[float]:
    """Each call's lateness past its own publish_timeout (seconds; negative: it raised sooner)."""
    stream = broker_through(instance, prefix)
    lateness: list[float] = []

    async def publish_one(n: int) -> None:
        called = anyio.current_time()
        try:
            await stream.publish_event("news", {"data": n})
        except BrokerError:
            lateness.append(anyio.current_time() - called - PUBLISH_TIMEOUT)
        else:
            raise RuntimeError("a publish succeeded while the engine answered nothing")

    async with stream:
        await stream.publish_event("news", {"data": "answered"})
        instance.hold()
        try:
            async with anyio.create_task_group() as tg:
                for n in range(queued):
                    tg.start_soon(publish_one, n)
                for n in range(queued, queued + 60):  # calls spread over 1.5 s, behind the queue
                    await anyio.sleep(0.025)
                    tg.start_soon(publish_one, n)
        finally:
            instance.release()
    return lateness


async def new_streams(instance: Relay, prefix: str) -> dict[str, tuple[int, float]]:
    """Each new stream's status and how long it took to be answered, opened together."""
    stream = broker_through(instance, prefix)
    channels = [f"c{n}" for n in range(10)]
    answered: dict[str, tuple[int, float]] = {}

    async def open_one(channel: str, started: float) -> None:
        async with open_stream(stream(channel)) as response:
            answered[channel] = (response.status, anyio.current_time() - started)

    async with stream:
        for channel in channels:
            await stream.publish_event(channel, {"data": channel})
        async with open_stream(stream(channels)) as response:  # follows all ten
            if response.status != 200:
                raise RuntimeError(f"the first stream got {response.status}")
        instance.hold()
        try:
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for channel in [*channels, "never-seen"]:
                    tg.start_soon(open_one, channel, started)
        finally:
            instance.release()
    return answered


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--queued", type=int, default=700, help="publishes called at once")
    args = parser.parse_args()
    late_median: list[float] = []
    late_p99: list[float] = []
    late_max: list[float] = []
    slowest_stream: list[float] = []
    statuses: list[dict[str, int]] = []
    with run_redis(check=False) as engine:
        for round_ in range(args.rounds):

            async def one_round(round_: int = round_) -> None:
                with relay(engine.port) as instance:
                    lateness = await queued_publishes(instance, f"silent-p{round_}:", args.queued)
                late_median.append(statistics.median(lateness))
                late_p99.append(percentile(lateness, 0.99))
                late_max.append(max(lateness))
                with relay(engine.port) as instance:
                    answered = await new_streams(instance, f"silent-s{round_}:")
                slowest_stream.append(max(took for _, took in answered.values()))
                statuses.append({channel: status for channel, (status, _) in answered.items()})

            anyio.run(one_round, backend=args.backend)
            print(
                f"round {round_ + 1}: publishes late by median {late_median[-1]:+.3f} s, "
                f"p99 {late_p99[-1]:+.3f} s, max {late_max[-1]:+.3f} s; "
                f"slowest of 11 new streams {slowest_stream[-1]:.3f} s",
                flush=True,
            )
    worst = statistics.median(late_max)
    print(f"\nengine that never answers, {args.backend}, {args.rounds} rounds (medians of the rounds):")
    print(
        f"  {args.queued} + 60 queued publishes, publish_timeout={PUBLISH_TIMEOUT:g}: late by median "
        f"{statistics.median(late_median):+.3f} s, p99 {statistics.median(late_p99):+.3f} s, "
        f"max {worst:+.3f} s; target max <= +{PUBLISH_MARGIN:g} s: "
        f"{'met' if worst <= PUBLISH_MARGIN else 'NOT met'}"
    )
    bound = REQUEST_TIMEOUT + 0.5
    slowest = statistics.median(slowest_stream)
    expected = {**{f"c{n}": 200 for n in range(10)}, "never-seen": 503}
    right = all(status == expected for status in statuses)
    print(
        f"  11 new streams at once, request_timeout={REQUEST_TIMEOUT:g}: slowest answered after "
        f"{slowest:.3f} s; bound {bound:g} s: {'met' if slowest <= bound + 0.1 else 'NOT met'}; "
        f"statuses (10 x 200, new channel 503) {'as documented' if right else 'NOT as documented'}"
    )


if __name__ == "__main__":
    main()
