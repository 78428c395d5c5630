"""Bad tokens per second against one uvicorn process: the CPU each costs, and the log lines.

    python -m benchmarks.auth_flood [--requests 20000] [--connections 16] [--stack standard|pure]

Serves :data:`app` (``GET /events/user-{sub}``, a
:class:`~eventstream.auth.JWTAuthorizer` with an HS256 secret, as in
``benchmarks.auth_opens``) under uvicorn, with the root logger writing every
line at INFO and above to the server's stderr: on its standard stack (``--loop
uvloop --http httptools``, what ``uvicorn[standard]`` runs by default), then on
its pure-Python one (``--loop asyncio --http h11``), or the one ``--stack`` names. The
client sends ``--requests`` stream requests with bad credentials over
``--connections`` keep-alive connections, cycling through the kinds in
:data:`BAD`: garbage, a signature by another secret, expired, ``alg: none``, a
token over ``max_token_length``, a forged ticket. It prints one JSON line per
stack: bad tokens answered per second, the server's CPU microseconds per bad token, the
answers by status (all should be 401), and the lines the server logged (the
target: none per bad token; a flood must not become a log flood).

Target: "10,000 bad tokens a second: no log flood, bounded CPU". The
client runs in this process: on a machine with two cores or fewer it competes
with the server for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt

from eventstream import EventStream
from eventstream.auth import JWTAuthorizer

from .auth_opens import AUDIENCE, ISSUER, SECRET, _app
from .fanout import ROOT, answering, cpu_seconds, free_port

# Every line at INFO and above reaches stderr, which the benchmark counts (set up in the server).
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")

authorizer = JWTAuthorizer(
    secret=SECRET,
    issuer=ISSUER,
    audience=AUDIENCE,
    channels=["user-{sub}"],
    ticket_secret="benchmark-ticket-secret-0123456789abcdef",
)
app = _app(EventStream(authorize=authorizer, handle_signals=False))


def _bad() -> dict[str, tuple[str, str]]:
    # kind -> (where, credential): "bearer" goes in Authorization, "ticket" in the query.
    now = time.time()
    claims = {"sub": "1", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600}
    none = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    return {
        "garbage": ("bearer", "not-a-token"),
        "other-secret": (
            "bearer",
            jwt.encode(claims, "another-secret-0123456789abcdef0123", algorithm="HS256"),
        ),
        "expired": ("bearer", jwt.encode({**claims, "exp": now - 60}, SECRET, algorithm="HS256")),
        "alg-none": ("bearer", none),
        "oversized": ("bearer", "x" * 9000),
        "forged-ticket": ("ticket", "v1.eyJ4IjoxfQ.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    }


#: The kinds of bad credentials sent, in turn.
BAD = _bad()


async def _connection(port: int, count: int, start: int, statuses: dict[int, int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    kinds = list(BAD.values())
    try:
        for i in range(start, start + count):
            where, credential = kinds[i % len(kinds)]
            query = f"?ticket={credential}" if where == "ticket" else ""
            auth = f"authorization: Bearer {credential}\r\n" if where == "bearer" else ""
            writer.write(
                f"GET /events/user-1{query} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n"
                f"{auth}\r\n".encode("ascii")
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:  # not a bad token after all: stop (the response does not end)
                return
    finally:
        writer.close()
        await writer.wait_closed()


async def _flood(port: int, requests: int, connections: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    share = requests // connections
    counts = [share + (1 if k < requests % connections else 0) for k in range(connections)]
    starts = [sum(counts[:k]) for k in range(connections)]
    await asyncio.gather(*(_connection(port, n, s, statuses) for n, s in zip(counts, starts, strict=True)))
    return statuses


#: uvicorn's event loop and HTTP parser, per stack.
STACKS = {"standard": ("uvloop", "httptools"), "pure": ("asyncio", "h11")}


def run(requests: int, connections: int, stack: str = "standard") -> dict[str, Any]:
    """Serve :data:`app` under uvicorn (on ``stack``) and send it ``requests`` bad credentials."""
    loop, http = STACKS[stack]
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT / "src"), str(ROOT)))}
    command = [
        sys.executable, "-m", "uvicorn", "benchmarks.auth_flood:app", "--host", "127.0.0.1",
        "--port", str(port), "--loop", loop, "--http", http, "--no-access-log",
        "--log-level", "warning", "--timeout-graceful-shutdown", "1",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        with answering(process, port, "uvicorn", log_path):
            lines_before = len(log_path.read_text(errors="replace").splitlines())
            cpu_before, started = cpu_seconds(process.pid), time.perf_counter()
            statuses = asyncio.run(_flood(port, requests, connections))
            elapsed, cpu = time.perf_counter() - started, cpu_seconds(process.pid) - cpu_before
            lines = log_path.read_text(errors="replace").splitlines()[lines_before:]
    answered = sum(statuses.values())
    return {
        "stack": f"{loop}+{http}",
        "requests": requests,
        "answered": answered,
        "statuses": {str(status): count for status, count in sorted(statuses.items())},
        "bad_tokens_per_s": round(answered / elapsed, 1),
        "server_cpu_us_per_bad_token": round(1e6 * cpu / max(answered, 1), 1),
        "log_lines": len(lines),
        "log_lines_sample": lines[:5],
        "target_bad_tokens_per_s": 10_000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--stack", choices=sorted(STACKS), help="one stack (default: both, in turn)")
    args = parser.parse_args()
    for stack in [args.stack] if args.stack else list(STACKS):
        print(json.dumps(run(args.requests, args.connections, stack)))


if __name__ == "__main__":
    main()
