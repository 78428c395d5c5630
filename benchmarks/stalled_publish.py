"""Publishing rate with and without clients that stop reading.

    python -m benchmarks.stalled_publish [--servers uvicorn hypercorn-trio] [--seconds 10] [--rounds 3]

Serves the eventstream benchmark app (defaults: ``disconnect`` policy,
``send_timeout`` 5 s) and keeps one honest client reading. Then two
scenarios, each measured for ``--seconds`` once alone and once while an
attacker opens new non-reading subscribers (raw sockets whose receive buffer
is the kernel's minimum and that never read), interleaved, ``--rounds`` times:

- ``burst``: bursts of 3,000 events of 2 KB (one ``POST /publish`` each, a
  short pause between them), with a new non-reading subscriber every 0.5 s.
  Target: the rate with them >= 0.5 x the rate without.
- ``sustained``: 2 KB events published back to back, with 10 new non-reading
  subscribers per second. Target: >= 0.8 x.

Reports both rates, their ratio against the target, whether the honest
client received every event (in order, no ``stream-reset``) and the server's
RSS at the end.
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Scenario:
    name: str
    batch: int  # events per POST /publish
    size: int  # bytes of each event's text
    pause: float  # seconds between two batches
    every: float  # seconds between two new non-reading subscribers
    target: float  # the ratio aimed at


SCENARIOS = (
    Scenario("burst", batch=3000, size=2000, pause=0.05, every=0.5, target=0.5),
    Scenario("sustained", batch=3000, size=2000, pause=0.0, every=0.1, target=0.8),
)


def attack(port: int, stop: threading.Event, stack: ExitStack, every: float = 0.5) -> None:
    while not stop.wait(every):
        sock = stack.enter_context(socket.socket())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)  # the kernel raises it to its minimum
        sock.connect(("127.0.0.1", port))
        sock.sendall(_REQUEST)


def publish_for(port: int, seconds: float, scenario: Scenario) -> tuple[float, int]:
    """Events published per second of publishing, and how many, publishing batches for ``seconds``."""
    published = 0
    busy = 0.0
    ended = time.monotonic() + seconds
    query = f"/publish?count={scenario.batch}&size={scenario.size}&rate=0"
    while time.monotonic() < ended:
        answer = request(port, "POST", query, timeout=600)
        published += int(answer["published"])
        busy += float(answer["seconds"])
        if scenario.pause:
            time.sleep(scenario.pause)
    return published / busy, published


def measure(server: str, seconds: float, rounds: int) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryFile() as log, serve("eventstream", server, log, False) as (port, pid):
        reader = HonestReader(port)
        reader.start()
        deadline = time.monotonic() + 10
        while int(request(port, "GET", "/stats")["subscribers"]) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        total = 0
        for scenario in SCENARIOS:
            alone: list[float] = []
            attacked: list[float] = []
            for _ in range(rounds):
                rate, count = publish_for(port, seconds, scenario)
                alone.append(rate)
                total += count
                with ExitStack() as stack:
                    stop = threading.Event()
                    thread = threading.Thread(
                        target=attack, args=(port, stop, stack, scenario.every), daemon=True
                    )
                    thread.start()
                    try:
                        rate, count = publish_for(port, seconds, scenario)
                        attacked.append(rate)
                        total += count
                    finally:
                        stop.set()
                        thread.join()
            results.append(
                {
                    "server": server,
                    "scenario": scenario,
                    "alone": statistics.median(alone),
                    "attacked": statistics.median(attacked),
                    "runs": {"alone": alone, "attacked": attacked},
                }
            )
        # The honest client has everything once it has caught up.
        deadline = time.monotonic() + 30
        while reader.events < total and time.monotonic() < deadline:
            time.sleep(0.05)
        reader.stop = True
        rss = rss_bytes(pid)
        for result in results:
            result.update(
                honest_missing=total - reader.events,
                honest_gaps=reader.gaps,
                honest_resets=reader.resets,
                rss_mib=rss / 2**20,
            )
        return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--servers", nargs="*", default=["uvicorn", "hypercorn-asyncio", "hypercorn-trio"])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(
        "| server | scenario | publish ev/s alone | with new non-reading clients | ratio (target) "
        "| honest client: missing / gaps / resets | RSS MiB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for server in args.servers:
        for r in measure(server, args.seconds, args.rounds):
            scenario: Scenario = r["scenario"]
            ratio = r["attacked"] / r["alone"]
            verdict = "ok" if ratio >= scenario.target else "MISSED"
            every = f"one every {scenario.every:g} s"
            print(
                f"| {server} | {scenario.name}: {scenario.batch:,} x {scenario.size:,} B, {every} "
                f"| {r['alone']:,.0f} | {r['attacked']:,.0f} | {ratio:.2f} (>= {scenario.target}: {verdict}) "
                f"| {r['honest_missing']:,} / {r['honest_gaps']} / {r['honest_resets']} "
                f"| {r['rss_mib']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
