"""Authenticated stream opens per second: HS256 bearer tokens, one uvicorn process.

    python -m benchmarks.auth_opens [--opens 20000] [--concurrency 64]

Serves :data:`authenticated_app` (``GET /events/user-{sub}``, a
:class:`~eventstream.auth.JWTAuthorizer` with an HS256 secret) and, for
comparison, :data:`open_app` (the same endpoint without ``authorize``) under
uvicorn (``--loop asyncio --http h11``), one after the other. The client opens
``--opens`` streams, ``--concurrency`` at a time: each one connects, sends
``GET /events/user-k`` with user k's own token, reads up to ``stream-open`` and
closes. It prints one JSON line per app (opens per second, the server's CPU
milliseconds per open, answers other than 200) and the ratio.

Target: at least 2,000 authenticated opens per second per process on
uvicorn. The client runs in this process: on a machine with fewer cores than
two, it competes with the server for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import jwt

from eventstream import EventStream
from eventstream.auth import JWTAuthorizer

from .fanout import ROOT, answering, cpu_seconds, free_port

SECRET = "benchmark-secret-0123456789abcdef0123"
ISSUER = "https://bench.invalid"
AUDIENCE = "bench"


def _app(stream: EventStream) -> Any:
    endpoint = stream("{channel}")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        path: str = scope["path"]
        if path.startswith("/events/"):
            scope["path_params"] = {"channel": path.removeprefix("/events/")}
            await endpoint(scope, receive, send)
            return
        body = json.dumps({"subscribers": stream.subscriber_count()}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


authorizer = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["user-{sub}"])
authenticated_app = _app(EventStream(authorize=authorizer, handle_signals=False))
open_app = _app(EventStream(handle_signals=False))


def tokens(count: int, lifetime: float = 3600) -> list[str]:
    """One HS256 token per user ``0`` to ``count - 1``."""
    now = time.time()
    return [
        jwt.encode(
            {"sub": str(k), "iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": now + lifetime},
            SECRET,
            algorithm="HS256",
        )
        for k in range(count)
    ]


async def _open(port: int, user: int, token: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET /events/user-{user} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
            f"authorization: Bearer {token}\r\n\r\n".encode("ascii")
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status == 200:
            await reader.readuntil(b"stream-open")
        return status
    finally:
        writer.close()
        await writer.wait_closed()


async def _open_all(port: int, all_tokens: list[str], concurrency: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    next_user = 0

    async def worker() -> None:
        nonlocal next_user
        while next_user < len(all_tokens):
            user = next_user
            next_user += 1
            status = await _open(port, user, all_tokens[user])
            statuses[status] = statuses.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses


def run(app: str, opens: int, concurrency: int, lifetime: float = 3600) -> dict[str, Any]:
    """Serve ``benchmarks.auth_opens:<app>`` under uvicorn and open ``opens`` streams on it
    (with tokens valid for ``lifetime`` seconds: a negative one makes them all expired)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}
    command = [
        sys.executable, "-m", "uvicorn", f"benchmarks.auth_opens:{app}", "--host", "127.0.0.1",
        "--port", str(port), "--loop", "asyncio", "--http", "h11", "--no-access-log",
        "--log-level", "warning", "--backlog", "4096", "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    all_tokens = tokens(opens, lifetime)
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    with answering(process, port, "uvicorn"):
        cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
        statuses = asyncio.run(_open_all(port, all_tokens, concurrency))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(process.pid) - cpu_before
    ok = statuses.get(200, 0)
    return {
        "app": app,
        "opens": opens,
        "ok": ok,
        "refused": {str(status): count for status, count in statuses.items() if status != 200},
        "opens_per_s": round(ok / elapsed, 1),
        "server_cpu_ms_per_open": round(1000 * cpu / max(ok, 1), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--opens", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    results = [run(app, args.opens, args.concurrency) for app in ("authenticated_app", "open_app")]
    for result in results:
        print(json.dumps(result))
    authenticated, plain = results
    print(
        json.dumps(
            {
                "authenticated_over_open": round(
                    authenticated["opens_per_s"] / max(plain["opens_per_s"], 1e-9), 3
                ),
                "target_opens_per_s": 2000,
            }
        )
    )


if __name__ == "__main__":
    main()
