"""Real ASGI servers started on 127.0.0.1 for end-to-end tests, and stopped by them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

#: Every server kind the end-to-end tests run against.
SERVER_KINDS = ("hypercorn-asyncio", "hypercorn-trio", "uvicorn", "granian", "daphne")
#: Servers whose ``send()`` never waits for the client: daphne writes every body into
#: Twisted's transport buffer, which grows without bound (it registers no producer), so
#: a client that stops reading is never detected as slow and its bytes pile up in memory.
UNBOUNDED_SEND_KINDS = frozenset({"daphne"})
#: Servers whose own (native) memory keeps growing with connections served while the Python
#: heap stays flat: granian's resident set grew 45 -> 54 MB over eight rounds of 500 streams
#: on a plain ASGI app without this library (Python's allocated blocks: 96,423 -> 96,528), so
#: its RSS says nothing about the library's leaks; the Python heap does.
NATIVE_RSS_DRIFT_KINDS = frozenset({"granian"})


@dataclass
class Server:
    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(kind: str, app: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    if kind.startswith("hypercorn-"):
        worker = kind.removeprefix("hypercorn-")
        return [sys.executable, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "-k", worker, *extra, app]
    if kind == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--no-access-log", "--log-level", "warning", *extra, app,
        ]  # fmt: skip
    if kind == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
            "--port", str(port), "--no-ws", "--log-level", "warning", *extra, app,
        ]  # fmt: skip
    if kind == "daphne":
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", *extra, app]
    raise ValueError(f"unknown server kind {kind!r}")


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def run_server(
    kind: str,
    app: str = "tests.apps.e2e_app:app",
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
    ready_timeout: float = 20.0,
    extra_args: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[Server]:
    """Start ``app`` under server ``kind`` on a free port (or ``port``); stop it on exit.

    Waits (up to ``ready_timeout``) until the port accepts connections. A
    server that exits before then, for instance because another process took
    the port, is started again on another port (not when ``port`` was given).
    """
    log_dir = log_dir or Path(os.environ.get("EVENTSTREAM_TEST_LOGS", "/tmp"))
    log_dir.mkdir(parents=True, exist_ok=True)
    pythonpath = os.pathsep.join((str(ROOT / "src"), str(ROOT)))
    full_env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1", **(env or {})}
    given = port
    for _attempt in range(1 if given else 5):
        port = given or free_port()
        log_path = log_dir / f"server-{kind}-{port}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                server_command(kind, app, port, extra_args),
                cwd=ROOT,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = Server(kind, port, process, log_path)
        deadline = time.monotonic() + ready_timeout
        while process.poll() is None and time.monotonic() < deadline and not _accepting(port):
            time.sleep(0.02)  # polling the port, not waiting blindly: bounded by the deadline
        if process.poll() is None and _accepting(port):
            break
        stop_process(process)
    else:
        raise RuntimeError(f"{kind} did not start; its log:\n{server.log()}")
    try:
        yield server
    finally:
        stop_process(process)


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 10.0, *, kill: bool = False
) -> int | None:
    """SIGTERM (``kill``: SIGKILL at once), then SIGKILL after ``timeout``; return the exit status
    (a process that exited already is only reaped)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout)


@contextlib.asynccontextmanager
async def serve_in_process(app: Any) -> AsyncIterator[int]:
    """Serve ``app`` with hypercorn inside this event loop (asyncio or trio); yield its port."""
    import anyio
    import sniffio
    from hypercorn.config import Config

    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.graceful_timeout = 1
    shutdown = anyio.Event()
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve  # type: ignore[assignment]

    async def shutdown_trigger() -> None:
        await shutdown.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: serve(app, config, shutdown_trigger=shutdown_trigger))
        with anyio.fail_after(10):
            while True:
                try:
                    await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
                    break
                except OSError:
                    await anyio.sleep(0.02)  # polling readiness under a deadline
        try:
            yield port
        finally:
            shutdown.set()
