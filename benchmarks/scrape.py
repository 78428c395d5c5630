"""The ``/metrics`` scrape of an app holding many open streams: how long it takes, how many series.

    python -m benchmarks.scrape [--streams 10000] [--channels 1000] [--scrapes 30] [--server uvicorn]

Starts ``tests/apps/metrics_app.py`` (a collector registered, ``MetricsEndpoint`` at
``/metrics``) under a real server on a free port, opens ``--streams`` raw connections spread
over ``--channels`` channels of its one template (``user-{id}``) and holds them open, then
GETs ``/metrics`` ``--scrapes`` times, one after another (httpx), each timed from the request
to the whole answer. Reports the median and the slowest scrape, the answer's size, and its
series (sample lines), and checks that the app counts every stream open. Targets: a scrape
answered in at most 50 ms, with fewer than 200 series.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.feed_share import open_streams
from tests.support.servers import SERVER_KINDS, run_server

TARGET_MS = 50.0
TARGET_SERIES = 200


def run(streams: int, channels: int, scrapes: int, server: str = "uvicorn") -> dict[str, float]:
    """Hold ``streams`` streams on ``channels`` channels open; time ``scrapes`` scrapes.

    Raises:
        AssertionError: the scrape does not count every stream open.
    """
    log_dir = Path(os.environ.get("EVENTSTREAM_TEST_LOGS", "/tmp/eventstream-bench-logs"))
    names = [str(n % channels) for n in range(streams)]
    with run_server(server, app="tests.apps.metrics_app:app", log_dir=log_dir) as app:
        sockets = open_streams(app.port, names, batch=100)
        try:
            timings: list[float] = []
            with httpx.Client(timeout=30) as client:
                for _ in range(scrapes):
                    started = time.perf_counter()
                    answer = client.get(f"{app.base_url}/metrics")
                    timings.append((time.perf_counter() - started) * 1000)
                    answer.raise_for_status()
            text = answer.text
        finally:
            for sock in sockets:
                sock.close()
    samples = [sample for family in text_string_to_metric_families(text) for sample in family.samples]
    open_now = sum(sample.value for sample in samples if sample.name == "eventstream_streams_open")
    assert open_now == streams, f"the scrape counts {open_now} streams open, not {streams}"
    return {
        "streams": streams,
        "channels": channels,
        "scrapes": scrapes,
        "p50_ms": statistics.median(timings),
        "max_ms": max(timings),
        "bytes": len(answer.content),
        "series": len(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--channels", type=int, default=1_000)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--server", default="uvicorn", choices=SERVER_KINDS)
    args = parser.parse_args()
    result = run(args.streams, args.channels, args.scrapes, args.server)
    met = result["p50_ms"] <= TARGET_MS and result["max_ms"] <= TARGET_MS
    print(
        f"{result['streams']:,} streams open on {result['channels']:,} channels of one template, "
        f"{args.server}: /metrics answered in {result['p50_ms']:.1f} ms (median of {result['scrapes']}), "
        f"{result['max_ms']:.1f} ms at most (target <= {TARGET_MS:g} ms: {'met' if met else 'NOT met'}); "
        f"{result['bytes']:,} bytes, {result['series']:.0f} series "
        f"(target < {TARGET_SERIES}: {'met' if result['series'] < TARGET_SERIES else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
