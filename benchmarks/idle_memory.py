"""Memory per idle stream on a real server: RSS, and what the library allocates (tracemalloc).

    python -m benchmarks.idle_memory [--connections 2000] [--rounds 3] [--servers uvicorn ...]
    python -m benchmarks.idle_memory --sites [--connections 1000]

For each server, the eventstream app and the naive anyio endpoint (see
:mod:`benchmarks.apps`) run in a process of their own, interleaved; this
process opens N raw-socket streams to ``GET /events``, waits until each has
its first bytes and the server counts N subscriptions, then reads the
server's resident memory (``/proc``): ``(RSS idle - RSS before) / N`` is the
RSS per stream, and the table gives the median over the rounds.

With ``--sites`` the servers run under tracemalloc (8 frames) instead, and
the report lists, per stream, what was allocated after the first connections
warmed the server up: everything (``total``), what has eventstream's code
anywhere on the stack (``stack``: the objects the library creates, anyio's
included, and what the server allocates when the library calls it), the same
without the allocations in the server's own lines (``own``: only the coroutine
of the server's ``receive()`` stays, created by the library's call), and the
largest of ``stack`` grouped by their three innermost lines.
Memory is not timing: the figures hold on a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from benchmarks.fanout import file_limit_allows, request, rss_bytes, serve, wait_for

SERVERS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
PEERS = ("eventstream", "naive")
REQUEST = b"GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
WARM_UP = 50


@contextlib.contextmanager
def streams(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` open event streams, each past its headers and first bytes."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            socks.append(sock)
            sock.sendall(REQUEST)
            received = b""
            while b"\r\n\r\n" not in received or received.endswith(b"\r\n\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed a stream before its first bytes")
                received += chunk
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _subscribers(port: int) -> int:
    return int(request(port, "GET", "/stats", timeout=30)["subscribers"])


def measure(peer: str, server: str, connections: int, sites: bool) -> dict[str, Any]:
    with tempfile.TemporaryFile() as log, serve(peer, server, log, sites) as (port, pid):
        with streams(port, WARM_UP):
            wait_for(lambda: _subscribers(port) == WARM_UP, 60, "the warm-up streams")
        wait_for(lambda: _subscribers(port) == 0, 60, "the warm-up streams to end")
        time.sleep(0.2)
        if sites:
            request(port, "GET", "/stats?traced=mark")
        rss_before = rss_bytes(pid)
        with streams(port, connections):
            wait_for(lambda: _subscribers(port) == connections, 300, "every subscription", interval=0.05)
            time.sleep(0.5)  # let the server settle
            rss_idle = rss_bytes(pid)
            traced = request(port, "GET", "/stats?traced=sites")["traced"] if sites else {}
        wait_for(lambda: _subscribers(port) == 0, 60, "every subscription to end")
    return {"rss": (rss_idle - rss_before) / connections, **traced}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--servers", nargs="*", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--sites", action="store_true", help="tracemalloc: bytes per stream by site")
    args = parser.parse_args()
    if not file_limit_allows(args.connections + WARM_UP + 100):
        raise SystemExit(f"the open file limit does not allow {args.connections} streams")
    if args.sites:
        for server in args.servers:
            for peer in PEERS:
                result = measure(peer, server, args.connections, sites=True)
                n = args.connections
                print(
                    f"{peer} on {server}: {result['total'] / n:,.0f} B per stream in all, "
                    f"{result['stack'] / n:,.0f} B with eventstream on the stack, "
                    f"{result['own'] / n:,.0f} B of it not in the server's own lines"
                )
                for size, count, where in result["sites"]:
                    if size / n >= 8:
                        print(f"  {size / n:7,.0f} B  {count / n:5.2f} blocks  {where}")
        return
    rss: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for server in args.servers:
            for peer in PEERS:
                rss.setdefault((peer, server), []).append(
                    measure(peer, server, args.connections, False)["rss"]
                )
    print("| server | eventstream RSS per stream KiB | naive anyio | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for server in args.servers:
        ours = statistics.median(rss["eventstream", server]) / 1024
        naive = statistics.median(rss["naive", server]) / 1024
        rounds = ", ".join(f"{value / 1024:.1f}" for value in rss["eventstream", server])
        print(f"| {server} | {ours:.1f} ({rounds}) | {naive:.1f} | {ours / naive:.2f} |")


if __name__ == "__main__":
    main()
