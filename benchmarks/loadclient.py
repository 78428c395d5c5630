"""The load client: N raw-socket event stream connections, in a process of its own.

    python -m benchmarks.loadclient --port P --connections N --events M [--vanish-half]

Talks to the harness over stdin/stdout, one JSON object per line:

1. connects N sockets to ``GET /events`` (in batches, each batch waited on
   until every stream has sent its headers and first bytes), then prints
   ``{"ready": ...}``;
2. records every ``recv()`` with its arrival time (``time.monotonic_ns()``)
   and nothing else while the burst runs, so it stays cheap; with
   ``--vanish-half``, every second connection resets itself (RST) once it has
   seen the middle event;
3. after the harness writes ``finish`` (the publisher is done), it waits until
   every remaining connection has the last event, or until no byte came for
   ``--idle`` seconds, then decodes the chunked bodies and the events and prints
   ``{"result": ...}``: delivered count, lost / duplicated / out-of-order
   events, latency percentiles, per-connection finishing times, its own CPU.

Each event's data starts with ``"{seq} {monotonic_ns} "`` (see
:mod:`benchmarks.apps`); latency is the arrival time of the read that completed
the event minus that timestamp.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import re
import resource
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

REQUEST = b"GET /events%s HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
#: The data line of an event; the JavaScript anchor sends its data as a JSON string (quoted).
EVENT = re.compile(rb'data: "?(\d+) (\d+) ')
#: Connections per source address (127.0.0.x) before the next one: each address has ~28,000
#: ports, some of them held in TIME_WAIT by the previous round's connections.
PER_SOURCE = 5_000
#: Linux's IP_BIND_ADDRESS_NO_PORT: bind picks the address only, connect picks the port
#: (unique per destination, so ports in TIME_WAIT towards another port stay usable).
_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection from ``source`` (an address of 127.0.0.0/8) to 127.0.0.1:``port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


BATCH = 500


@dataclass(eq=False)
class Conn:
    index: int
    sock: socket.socket
    #: Everything received, in a buffer allocated (and its pages touched) before the burst,
    #: so that reading costs one recv_into() and no allocation.
    buf: bytearray = field(default_factory=bytearray)
    pos: int = 0
    #: Per read: where it ended in ``buf``, and when it arrived (monotonic ns).
    ends: list[int] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    opened: bool = False
    done: bool = False
    vanished_at: int | None = None
    #: where the last event starts in ``buf`` (-1: not seen yet)
    last_at: int = -1


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Client:
    def __init__(
        self,
        port: int,
        connections: int,
        events: int,
        size: int,
        vanish_half: bool,
        pause: float,
        *,
        per_user: bool = False,
        quoted: bool = False,
    ) -> None:
        self.port = port
        self.per_user = per_user
        #: bytes per connection: the events with room for ids and chunk framing, and headers
        self.capacity = events * (size + 160) + 4096
        self.pause = pause
        self.count = connections
        self.remaining = connections
        self.events = events
        self.vanish_half = vanish_half
        self.epoll = select.epoll()
        self.by_fd: dict[int, Conn] = {}
        self.conns: list[Conn] = []
        prefix = b'data: "' if quoted else b"data: "
        self.last_marker = prefix + b"%d " % (events - 1)
        self.middle_marker = prefix + b"%d " % (events // 2)
        self.last_byte_at = time.monotonic()

    # -- connecting --------------------------------------------------------

    def connect_all(self) -> float:
        started = time.perf_counter()
        for first in range(0, self.count, BATCH):
            batch = []
            for index in range(first, min(first + BATCH, self.count)):
                sock = connect_from(f"127.0.0.{1 + index // PER_SOURCE}", self.port)
                sock.setblocking(False)
                sock.sendall(REQUEST % (b"?user=%d" % index if self.per_user else b""))
                conn = Conn(index, sock, bytearray(b"\0") * self.capacity)
                self.conns.append(conn)
                batch.append(conn)
                self.epoll.register(sock.fileno(), select.EPOLLIN)
                self.by_fd[sock.fileno()] = conn
            deadline = time.monotonic() + 60
            while not all(conn.opened for conn in batch):
                if time.monotonic() > deadline:
                    raise TimeoutError("streams did not open within 60 s")
                self.poll(1.0)
        return time.perf_counter() - started

    # -- reading -----------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for fd, _ in self.epoll.poll(timeout):
            self.read(self.by_fd[fd])

    def read(self, conn: Conn) -> None:
        """Take what one ready socket has, with its arrival time."""
        buf, pos = conn.buf, conn.pos
        if len(buf) - pos < 65536:
            buf.extend(bytes(max(65536, len(buf))))
        try:
            with memoryview(buf) as view:
                count = conn.sock.recv_into(view[pos:], 65536)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:
            count = 0
        now = time.monotonic_ns()
        if not count:
            self.epoll.unregister(conn.sock.fileno())
            conn.sock.close()
            self.finish(conn)
            return
        end = conn.pos = pos + count
        conn.ends.append(end)
        conn.times.append(now)
        self.last_byte_at = time.monotonic()
        if not conn.opened:
            head_end = buf.find(b"\r\n\r\n", 0, end)
            conn.opened = head_end >= 0 and end > head_end + 4
            return
        start = max(0, pos - 64)  # a marker may straddle two reads
        if self.vanish_half and conn.index % 2 == 1:
            if buf.find(self.middle_marker, start, end) >= 0:
                self.vanish(conn, now)
            return
        if conn.last_at < 0:
            conn.last_at = buf.find(self.last_marker, start, end)
        # done once the last event is complete, not when its first bytes are in
        if conn.last_at >= 0 and (
            buf.find(b"\n\n", conn.last_at, end) >= 0 or buf.find(b"\r\n\r\n", conn.last_at, end) >= 0
        ):
            self.finish(conn)

    def finish(self, conn: Conn) -> None:
        if not conn.done:
            conn.done = True
            self.remaining -= 1

    def vanish(self, conn: Conn, now: int) -> None:
        self.epoll.unregister(conn.sock.fileno())
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sock.close()
        conn.vanished_at = now
        self.finish(conn)

    def run_until_finished(self, idle: float, deadline: float) -> None:
        """Read until the harness says ``finish`` and every stream is complete (or idle)."""
        stdin = sys.stdin.buffer
        stdin_fd = stdin.fileno()
        self.epoll.register(stdin_fd, select.EPOLLIN)
        finished = False
        limit = time.monotonic() + deadline
        by_fd = self.by_fd
        read = self.read
        while time.monotonic() < limit:
            if finished and (self.remaining == 0 or time.monotonic() - self.last_byte_at > idle):
                break
            ready = self.epoll.poll(0.2)
            for fd, _ in ready:
                if fd == stdin_fd:
                    line = stdin.readline()
                    if not line or line.strip() == b"finish":
                        finished = True
                        self.epoll.unregister(stdin_fd)
                    continue
                read(by_fd[fd])
            if ready and self.pause:
                time.sleep(self.pause)  # let bytes gather: fewer, larger reads
        for conn in self.conns:
            if conn.sock.fileno() >= 0:
                conn.sock.close()

    # -- decoding ----------------------------------------------------------

    def analyse(self, conn: Conn) -> dict[str, Any]:
        raw = bytes(conn.buf[: conn.pos])
        conn.buf = bytearray()
        ends = conn.ends
        total = conn.pos
        head_end = raw.find(b"\r\n\r\n") + 4
        chunked = b"transfer-encoding: chunked" in raw[:head_end].lower()
        seqs: list[int] = []
        latencies: list[int] = []
        arrivals: list[int] = []
        sent: list[int] = []

        def scan(body: bytes, offset: int) -> None:
            for match in EVENT.finditer(body):
                line_end = body.find(b"\n", match.end())
                if line_end < 0:
                    return  # cut off mid-event
                crlf = body[line_end - 1 : line_end] == b"\r"
                separator = b"\r\n\r\n" if crlf else b"\n\n"
                end = body.find(separator, line_end - 1 if crlf else line_end)
                if end < 0:
                    return
                end += len(separator)
                seq, stamp = int(match[1]), int(match[2])
                arrived = conn.times[bisect.bisect_left(ends, offset + end)]
                seqs.append(seq)
                sent.append(stamp)
                arrivals.append(arrived)
                latencies.append(arrived - stamp)

        if chunked:
            pos = head_end
            while True:
                line_end = raw.find(b"\r\n", pos)
                if line_end < 0:
                    break
                size = int(raw[pos:line_end].split(b";")[0], 16)
                if size == 0:
                    break
                start = line_end + 2
                scan(raw[start : start + size], start)
                pos = start + size + 2
        else:
            scan(raw[head_end:], head_end)
        expected = self.events if conn.vanished_at is None else None
        seen = set(seqs)
        out_of_order = sum(1 for a, b in itertools.pairwise(seqs) if b <= a)
        return {
            "index": conn.index,
            "vanished": conn.vanished_at is not None,
            "received": len(seqs),
            "duplicated": len(seqs) - len(seen),
            "out_of_order": out_of_order,
            "lost": (expected - len(seen & set(range(expected)))) if expected is not None else 0,
            "first_sent": min(sent) if sent else None,
            "last_arrival": max(arrivals) if arrivals else None,
            "latencies": latencies,
            "bytes": total,
            "reads": len(conn.ends),
        }


def percentile(values: list[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def raise_file_limit(wanted: int) -> None:
    """Raise RLIMIT_NOFILE to ``wanted`` (past the hard limit only with the privilege to)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, hard, wanted)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--size", type=int, default=100, help="event size, to size the buffers")
    parser.add_argument("--vanish-half", action="store_true")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--pause", type=float, default=0.001, help="seconds between polls with data")
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--per-user", action="store_true", help="connection i asks for /events?user=i")
    parser.add_argument("--quoted", action="store_true", help='data lines are JSON strings: data: "...')
    args = parser.parse_args()
    raise_file_limit(args.connections + 1000)

    client = Client(
        args.port,
        args.connections,
        args.events,
        args.size,
        args.vanish_half,
        args.pause,
        per_user=args.per_user,
        quoted=args.quoted,
    )
    connect_seconds = client.connect_all()
    emit({"ready": True, "connect_seconds": connect_seconds})
    cpu_before, wall_before = cpu_seconds(), time.monotonic()
    client.run_until_finished(args.idle, args.deadline)
    cpu_burst, wall_burst = cpu_seconds() - cpu_before, time.monotonic() - wall_before

    per_conn = [client.analyse(conn) for conn in client.conns]
    latencies = [value for conn in per_conn for value in conn.pop("latencies")]
    survivors = [conn for conn in per_conn if not conn["vanished"]]
    first_sent = min((c["first_sent"] for c in per_conn if c["first_sent"] is not None), default=None)
    finishes = [
        (c["last_arrival"] - first_sent) / 1e9
        for c in survivors
        if c["last_arrival"] is not None and first_sent is not None
    ]
    vanish_times = [conn.vanished_at for conn in client.conns if conn.vanished_at is not None]
    emit(
        {
            "result": {
                "connections": args.connections,
                "events": args.events,
                "received": sum(c["received"] for c in per_conn),
                "lost": sum(c["lost"] for c in per_conn),
                "duplicated": sum(c["duplicated"] for c in per_conn),
                "out_of_order": sum(c["out_of_order"] for c in per_conn),
                "incomplete_survivors": sum(1 for c in survivors if c["lost"]),
                "first_sent_ns": first_sent,
                "last_arrival_ns": max((c["last_arrival"] or 0 for c in survivors), default=None),
                "first_finish_s": min(finishes, default=None),
                "last_finish_s": max(finishes, default=None),
                "latency_p50_ms": percentile(latencies, 0.50) / 1e6,
                "latency_p99_ms": percentile(latencies, 0.99) / 1e6,
                "latency_max_ms": percentile(latencies, 1.0) / 1e6,
                "vanished": len(vanish_times),
                "last_vanish_ns": max(vanish_times, default=None),
                "client_cpu_s": cpu_burst,
                "client_wall_s": wall_burst,
                "bytes": sum(c["bytes"] for c in per_conn),
                "reads": sum(c["reads"] for c in per_conn),
            }
        }
    )


if __name__ == "__main__":
    main()
