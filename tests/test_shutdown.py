"""Graceful shutdown: a server with 200 open streams gets SIGTERM and exits within a few seconds."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import httpx
import pytest

from .helpers import open_events
from .servers import run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server]

STREAMS = 200


@pytest.mark.parametrize(
    ("kind", "extra_args", "clean"),
    [
        ("uvicorn", [], True),
        ("hypercorn-asyncio", ["--workers", "0"], True),
        ("hypercorn-trio", ["--workers", "0"], False),
        ("hypercorn-asyncio", [], False),
        ("hypercorn-trio", [], False),
        ("granian", [], True),
        ("daphne", [], False),
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
    """``clean``: the server lets the app see the signal (one process with a Python handler), so
    streams end with the shutdown event and a complete response; otherwise the server's own
    graceful timeout (hypercorn: 3 s) or the signal's default action cuts them. daphne speaks no
    lifespan protocol, so the app cannot hook the signal: Twisted stops and cuts the streams."""
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
