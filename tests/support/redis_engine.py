"""A private Redis-protocol engine for tests: its own directory, port and process.

Debian's ``redis-server`` (7.0) is started on 127.0.0.1 on a free port with
its own temporary directory, no RDB snapshots and the append-only file on, so
a restart keeps its data. It is stopped by PID. A system instance is never used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .servers import _accepting, free_port


def require_redis() -> None:
    """Skip when redis-server or valkey-glide is missing, except under CI, where that is a failure."""
    import importlib.util

    import pytest

    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server is not installed: apt-get install redis-server")
    if importlib.util.find_spec("glide") is None:
        missing.append("valkey-glide is not installed: pip install '.[valkey]'")
    if missing:
        message = "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class RedisEngine:
    """One private redis-server; :meth:`stop` and :meth:`start` keep its port and data."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    #: More redis-server options, e.g. ("--requirepass", "secret").
    options: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
                "--protected-mode", "yes", *self.options,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; its log ends:\n{self.log()[-3000:]}")
            time.sleep(0.02)  # polling readiness under a deadline

    def ping(self) -> bool:
        if not _accepting(self.port):
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
            return answer.startswith((b"+PONG", b"-NOAUTH"))
        return False

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (redis then writes its append-only file) or SIGKILL; wait for the exit."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)

    def command(self, *args: str) -> bytes:
        """Run one command with redis-cli (for checks from the tests' side)."""
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "--raw", *args], capture_output=True, timeout=10, check=True
        )
        return result.stdout


@contextlib.contextmanager
def run_redis(*, check: bool = True, options: tuple[str, ...] = ()) -> Iterator[RedisEngine]:
    """Start a private redis-server in a temporary directory; stop it and remove the directory.

    ``check``: skip (or fail under CI) the calling test when the engine or the client is missing.
    """
    if check:
        require_redis()
    with tempfile.TemporaryDirectory(prefix="eventstream-redis-") as directory:
        for _attempt in range(3):
            engine = RedisEngine(Path(directory), free_port(), options=options)
            try:
                engine.start()
                break
            except RuntimeError:
                engine.stop(kill=True)  # another process took the port: try another
        else:
            raise RuntimeError(f"redis-server did not start; its log:\n{engine.log()}")
        try:
            yield engine
        finally:
            engine.stop(kill=True)
