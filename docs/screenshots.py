"""Make docs/_static/metrics-graph.png again: Prometheus's graph of a running demo, in Chromium.

Run it from the checkout's root with the test dependencies installed (``nox -s tests`` makes
such a venv: ``.nox/tests/bin/python docs/screenshots.py``), Debian's ``prometheus`` and
``chromium`` installed. It starts the raw ASGI example (``examples/raw_asgi.py``, what
``nox -s demo`` serves) under hypercorn on a free port, a private Prometheus that scrapes it
every second (tests/support/prometheus.py), opens and closes streams on two channel templates
and publishes for about a minute, reads ``sum by (template) (eventstream_streams_open)`` over
that minute from Prometheus's range-query API, and has Chromium (through Playwright) render it
as a line chart (an SVG page, no script: the graph page of Debian's Prometheus 2.42, which
redirects to its classic UI, drew no chart in headless Chromium) and saves it.
"""

from __future__ import annotations

import html
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.support.prometheus import run_prometheus  # noqa: E402  (after the path)
from tests.support.servers import free_port, run_server  # noqa: E402

OUTPUT = ROOT / "docs" / "_static" / "metrics-graph.png"
CHROMIUM = os.environ.get("EVENTSTREAM_CHROMIUM", "/usr/bin/chromium")
EXPRESSION = "sum by (template) (eventstream_streams_open)"
#: How many streams are open on each template, step after step (one step every 4 seconds).
PLAN = [(1, 0), (3, 1), (5, 2), (8, 2), (8, 4), (6, 5), (4, 6), (4, 3), (2, 3), (5, 1), (7, 2), (7, 2)]
STEP = 4.0


async def traffic(base_url: str) -> None:
    """Open and close streams on ``{id}`` and on the query-string channels, and publish, per PLAN."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        rooms: list[AsyncExitStack] = []
        lobbies: list[AsyncExitStack] = []

        async def open_stream(url: str) -> AsyncExitStack:
            stack = AsyncExitStack()
            response = await stack.enter_async_context(client.stream("GET", url))
            assert response.status_code == 200, response.status_code
            return stack

        for number, (room_count, lobby_count) in enumerate(PLAN):
            for wanted, streams, url in (
                (room_count, rooms, "/api/events/room-1"),
                (lobby_count, lobbies, "/api/events"),
            ):
                while len(streams) < wanted:
                    streams.append(await open_stream(url))
                while len(streams) > wanted:
                    await streams.pop().aclose()
            published = await client.post("/api/publish", json={"channel": "room-1", "data": number})
            assert published.status_code == 202, published.text
            await anyio.sleep(STEP)  # the pace of the demo's traffic, not a wait for a condition
        for stack in (*rooms, *lobbies):
            await stack.aclose()


def fetch_series(
    prometheus_url: str, start: float, end: float
) -> list[tuple[str, list[tuple[float, float]]]]:
    """(template, [(time, value)]) of EXPRESSION from Prometheus's range-query API, a point a second."""
    response = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": EXPRESSION, "start": start, "end": end, "step": 1},
        timeout=30,
    )
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return [
        (result["metric"].get("template", ""), [(float(t), float(v)) for t, v in result["values"]])
        for result in body["data"]["result"]
    ]


def page_html(series: list[tuple[str, list[tuple[float, float]]]]) -> str:
    """A page with an SVG line chart of ``series`` (no script, no network): axes, grid, legend."""
    width, height, left, top, right, bottom = 1100, 520, 70, 60, 30, 60
    times = [t for _, points in series for t, _ in points]
    t0, t1 = min(times), max(times)
    top_value = max(1.0, max(v for _, points in series for _, v in points))
    top_value = float(int(top_value) + 1)

    def x(t: float) -> float:
        return left + (t - t0) / max(t1 - t0, 1.0) * (width - left - right)

    def y(v: float) -> float:
        return height - bottom - v / top_value * (height - top - bottom)

    colours = ["#1f77b4", "#e6550d", "#31a354", "#756bb1"]
    parts = [f'<text x="{left}" y="30" class="title">{html.escape(EXPRESSION)}</text>']
    for tick in range(int(top_value) + 1):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick)}" y2="{y(tick)}" class="grid"/>')
        parts.append(f'<text x="{left - 10}" y="{y(tick) + 5}" class="tick" text-anchor="end">{tick}</text>')
    for second in range(0, int(t1 - t0) + 1, 10):
        parts.append(
            f'<text x="{x(t0 + second)}" y="{height - bottom + 22}" class="tick" '
            f'text-anchor="middle">{second} s</text>'
        )
    for index, (template, points) in enumerate(series):
        colour = colours[index % len(colours)]
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"/>')
        legend_y = height - 12
        legend_x = left + index * 420
        parts.append(f'<rect x="{legend_x}" y="{legend_y - 11}" width="14" height="14" fill="{colour}"/>')
        parts.append(
            f'<text x="{legend_x + 20}" y="{legend_y + 1}" class="tick">'
            f"{{template=&quot;{html.escape(template)}&quot;}}</text>"
        )
    return (
        "<!doctype html><html><head><style>"
        "body{margin:0;background:#fff;font-family:sans-serif}"
        ".title{font:600 18px monospace;fill:#222}.tick{font:13px sans-serif;fill:#444}"
        ".grid{stroke:#ddd;stroke-width:1}"
        f'</style></head><body><svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(parts)
        + "</svg></body></html>"
    )


def render(page: str) -> None:
    """Chromium (through Playwright) renders ``page`` into OUTPUT."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": 1100, "height": 520})
            tab.set_content(page)
            tab.screenshot(path=str(OUTPUT))
        finally:
            browser.close()


def main() -> None:
    port = free_port()
    with (
        run_prometheus([f"127.0.0.1:{port}"]) as prometheus,
        run_server(
            "hypercorn-asyncio", "examples.raw_asgi:app", port=port, extra_args=("--workers", "0")
        ) as demo,
    ):
        start = time.time()
        anyio.run(traffic, demo.base_url)
        time.sleep(2.0)  # one more scrape (every second) after the last step
        render(page_html(fetch_series(prometheus.url, start, time.time())))
    print(f"wrote {OUTPUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
