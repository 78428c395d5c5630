"""Graceful shutdown under real servers.

Apps written as the README's first examples show, with no shutdown code,
get SIGINT or SIGTERM with streams open and must exit within 1 s, every
client's response complete (ending with the shutdown event), no traceback.
An app that uses ``close_on_signals()`` (tests/apps/e2e_app.py) keeps working,
with 200 open streams.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from ..support.helpers import open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.servers import Server, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

STREAMS = 200


@pytest.mark.parametrize(
    ("kind", "extra_args", "clean"),
    [
        ("uvicorn", [], True),
        ("hypercorn-asyncio", ["--workers", "0"], True),
        ("hypercorn-trio", ["--workers", "0"], True),
        ("hypercorn-asyncio", [], False),
        ("hypercorn-trio", [], False),
        ("granian", [], True),
        ("daphne", [], True),
    ],
    ids=[
        "uvicorn",
        "hypercorn-asyncio-single",
        "hypercorn-trio-single",
        "hypercorn-asyncio",
        "hypercorn-trio",
        "granian",
        "daphne",
    ],
)
async def test_sigterm_with_open_streams(
    kind: str, extra_args: list[str], clean: bool, log_dir: Path
) -> None:
    """``clean``: the app sees the signal (one process with a Python handler), so streams end
    with the shutdown event and a complete response; otherwise (hypercorn's supervisor and worker
    processes: the workers never see the signal) the server's own graceful timeout (3 s) cuts
    them. daphne speaks no lifespan protocol, but the handlers installed at the first request
    end its streams cleanly too."""
    with run_server(kind, log_dir=log_dir, extra_args=extra_args) as server:
        last: dict[int, object] = {}
        endings: dict[int, str] = {}
        limits = httpx.Limits(max_connections=STREAMS + 10)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            opened = anyio.Semaphore(0)

            async def hold(index: int) -> None:
                try:
                    async with open_events(client, f"{server.base_url}/events/bye") as reader:
                        await reader.next()
                        opened.release()
                        while True:
                            event = await reader.next_not_keep_alive()
                            last[index] = event.event if event.event == "shutdown" else event.json()
                except EOFError:
                    endings[index] = "complete"
                except httpx.HTTPError as exc:
                    endings[index] = type(exc).__name__

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for index in range(STREAMS):
                        tg.start_soon(hold, index)
                    for _ in range(STREAMS):
                        await opened.acquire()
                    response = await client.post(
                        f"{server.base_url}/publish", json={"channel": "bye", "event": {"data": "last"}}
                    )
                    assert response.status_code == 200
                    with anyio.fail_after(10):
                        while sum(value == "last" for value in last.values()) < STREAMS:
                            await anyio.sleep(0.01)
                    started = time.monotonic()
                    server.process.send_signal(signal.SIGTERM)
                    while server.process.poll() is None:
                        await anyio.sleep(0.02)
                    elapsed = time.monotonic() - started
            print(
                f"{kind} {extra_args}: exited {elapsed:.2f} s after SIGTERM, endings {set(endings.values())}"
            )
        assert elapsed < 5.0
        assert len(endings) == STREAMS
        if clean:
            assert set(endings.values()) == {"complete"}
            assert set(last.values()) == {"shutdown"}  # the final event, after "last"
            assert "Traceback" not in server.log()
        else:
            # The app never saw the signal: the server cut the streams (and may log that).
            assert set(last.values()) == {"last"}


SINGLE_PROCESS = [
    ("uvicorn", []),
    ("hypercorn-asyncio", ["--workers", "0"]),
    ("hypercorn-trio", ["--workers", "0"]),
]
SINGLE_PROCESS_IDS = ["uvicorn", "hypercorn-asyncio", "hypercorn-trio"]
SIGNALS = [signal.SIGINT, signal.SIGTERM]
#: The documented bound: from the signal to the server's exit.
EXIT_WITHIN = 1.0


async def signal_and_wait(server: Server, signum: int) -> float:
    """Send ``signum``; return the seconds until the server exited (detected under a generous deadline)."""
    started = time.monotonic()
    server.process.send_signal(signum)
    with anyio.fail_after(20):
        while server.process.poll() is None:
            await anyio.sleep(0.01)
    return time.monotonic() - started


def assert_clean_log(server: Server, signum: int) -> None:
    log = server.log()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log
    assert "lifespan' protocol appears unsupported" not in log, log
    assert server.process.returncode in (0, -signum), log  # uvicorn re-raises the signal at its end


@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(("kind", "extra_args"), SINGLE_PROCESS, ids=SINGLE_PROCESS_IDS)
async def test_no_shutdown_code(kind: str, extra_args: list[str], signum: int, log_dir: Path) -> None:
    """The README's Starlette app, two hubs, no lifespan, no close_on_signals: the default closes both."""
    args = [*extra_args, "--log-level", "info"]
    with run_server(kind, "tests.apps.readme_app:app", log_dir=log_dir, extra_args=args) as server:
        urls = [f"{server.base_url}/api/events/room"] * 10 + [f"{server.base_url}/api/alerts"] * 5
        events: dict[int, list[str | None]] = {}
        endings: dict[int, str] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            opened = anyio.Semaphore(0)

            async def hold(index: int, url: str) -> None:
                seen = events.setdefault(index, [])
                try:
                    async with open_events(client, url) as reader:
                        while True:
                            event = await reader.next()
                            seen.append(event.event)
                            if event.event == "stream-open":
                                opened.release()
                except EOFError:
                    endings[index] = "complete"
                except httpx.HTTPError as exc:
                    endings[index] = type(exc).__name__

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for index, url in enumerate(urls):
                        tg.start_soon(hold, index, url)
                    for _ in urls:
                        await opened.acquire()
                    published = await client.post(
                        f"{server.base_url}/publish",
                        json={"channel": "room", "event": {"event": "message", "data": "last"}},
                    )
                    assert published.status_code == 200
                    await wait_until(lambda: all_have(events, 10, "message"))
                    elapsed = await signal_and_wait(server, signum)
        print(f"{kind} {signum!r}: exited {elapsed:.2f} s after the signal")
        assert endings == dict.fromkeys(range(len(urls)), "complete")
        for index in range(10):
            assert events[index] == ["stream-open", "message", "shutdown"]
        for index in range(10, 15):
            assert events[index] == ["stream-open", "shutdown"]
        assert_clean_log(server, signum)
        assert elapsed < EXIT_WITHIN


async def all_have(events: dict[int, list[str | None]], count: int, name: str) -> bool:
    return sum(name in seen for seen in events.values()) >= count


@pytest.mark.parametrize(("kind", "extra_args"), SINGLE_PROCESS, ids=SINGLE_PROCESS_IDS)
async def test_endpoint_as_the_whole_app(kind: str, extra_args: list[str], log_dir: Path) -> None:
    """``app = stream("test")``: the endpoint's lifespan startup installs the handlers."""
    args = [*extra_args, "--log-level", "info"]
    with run_server(kind, "tests.apps.readme_app:endpoint", log_dir=log_dir, extra_args=args) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            with anyio.fail_after(30):
                async with open_events(client, f"{server.base_url}/") as reader:
                    assert (await reader.next()).event == "stream-open"
                    elapsed = await signal_and_wait(server, signal.SIGINT)
                    assert (await reader.next_not_keep_alive()).event == "shutdown"
                    with pytest.raises(EOFError):
                        await reader.next()
        assert_clean_log(server, signal.SIGINT)
        assert elapsed < EXIT_WITHIN


@pytest.mark.parametrize(
    ("kind", "extra_args", "signum"),
    [*[(kind, extra, signal.SIGINT) for kind, extra in SINGLE_PROCESS], ("uvicorn", [], signal.SIGTERM)],
    ids=[*(f"{name}-SIGINT" for name in SINGLE_PROCESS_IDS), "uvicorn-SIGTERM"],
)
async def test_pipe_example_stops_without_error(
    kind: str, extra_args: list[str], signum: int, log_dir: Path
) -> None:
    """examples/pipe.py: the lifespan's publish loop ends quietly when the signal closes the stream."""
    args = [*extra_args, "--log-level", "info"]
    env = {"TICK_INTERVAL": "0.05"}
    with run_server(kind, "examples.pipe:app", env=env, log_dir=log_dir, extra_args=args) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            with anyio.fail_after(30):
                async with open_events(client, f"{server.base_url}/api/events") as reader:
                    assert (await reader.next()).event == "stream-open"
                    assert (await reader.next()).event == "tick"
                    elapsed = await signal_and_wait(server, signum)
                    await reader.read_to_end()  # complete (an incomplete response raises)
        assert_clean_log(server, signum)
        assert elapsed < EXIT_WITHIN
