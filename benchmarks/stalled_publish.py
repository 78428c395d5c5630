"""Publishing rate with and without clients that stop reading (issue 10, item 10).

    python -m benchmarks.stalled_publish [--servers uvicorn hypercorn-trio] [--seconds 10] [--rounds 3]

Serves the eventstream benchmark app (defaults: ``disconnect`` policy,
``send_timeout`` 5 s) and keeps one honest client reading. Then, for
``--seconds`` each, interleaved: publishes 100-byte events as fast as the
server takes them (``POST /publish`` in batches of 2,000), once alone and once
while an attacker opens a new non-reading subscriber (a raw socket with a
4 KiB receive buffer that never reads) every 0.5 s. Reports both rates, their
ratio (the target: >= 0.5), what the honest client received (every event, in
order) and the server's RSS at the end.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from typing import Any

from .fanout import request, rss_bytes, serve

_REQUEST = b"GET /events HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
_SEQ = re.compile(rb"data: (\d+) ")


class HonestReader(threading.Thread):
    """Reads the stream as fast as it comes and checks the sequence numbers of each publish."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(_REQUEST)
        self.events = 0
        self.gaps = 0
        self.resets = 0
        self.stop = False

    def run(self) -> None:
        pending = b""
        last = -1
        while not self.stop:
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            data = pending + chunk
            cut = data.rfind(b"\n\n") + 2
            complete, pending = data[:cut], data[cut:]
            self.resets += complete.count(b"event: stream-reset")
            for match in _SEQ.finditer(complete):
                seq = int(match[1])
                if seq != last + 1 and seq != 0:  # every publish request starts again at 0
                    self.gaps += 1
                last = seq
                self.events += 1


def attack(port: int, stop: threading.Event, stack: ExitStack, every: float = 0.5) -> None:
    while not stop.wait(every):
        sock = stack.enter_context(socket.socket())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(_REQUEST)


def publish_for(port: int, seconds: float, batch: int = 2000) -> float:
    """Events published per second, publishing batches for ``seconds``."""
    published = 0
    busy = 0.0
    ended = time.monotonic() + seconds
    while time.monotonic() < ended:
        answer = request(port, "POST", f"/publish?count={batch}&size=100&rate=0", timeout=600)
        published += int(answer["published"])
        busy += float(answer["seconds"])
    return published / busy


def measure(server: str, seconds: float, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryFile() as log, serve("eventstream", server, log, False) as (port, pid):
        reader = HonestReader(port)
        reader.start()
        deadline = time.monotonic() + 10
        while int(request(port, "GET", "/stats")["subscribers"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        attackers, rss = 0, 0
        alone: list[float] = []
        attacked: list[float] = []
        for _ in range(rounds):
            alone.append(publish_for(port, seconds))
            with ExitStack() as stack:
                stop = threading.Event()
                thread = threading.Thread(target=attack, args=(port, stop, stack), daemon=True)
                thread.start()
                try:
                    attacked.append(publish_for(port, seconds))
                finally:
                    stop.set()
                    thread.join()
                attackers = int(request(port, "GET", "/stats")["subscribers"]) - 1
                rss = rss_bytes(pid)
        time.sleep(1)
        reader.stop = True
        result = {
            "server": server,
            "alone": statistics.median(alone),
            "attacked": statistics.median(attacked),
            "runs": {"alone": alone, "attacked": attacked},
            "honest_events": reader.events,
            "honest_gaps": reader.gaps,
            "honest_resets": reader.resets,
            "attackers_connected_at_end": attackers,
            "rss_mib": rss / 2**20,
        }
        return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", nargs="*", default=["uvicorn", "hypercorn-asyncio", "hypercorn-trio"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        "| server | publish ev/s alone | with a new stalled client every 0.5 s | ratio "
        "| honest client: events / gaps / resets | RSS MiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for server in args.servers:
        r = measure(server, args.seconds, args.rounds)
        print(
            f"| {server} | {r['alone']:,.0f} | {r['attacked']:,.0f} | {r['attacked'] / r['alone']:.2f} "
            f"| {r['honest_events']:,} / {r['honest_gaps']} / {r['honest_resets']} | {r['rss_mib']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
