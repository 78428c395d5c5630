"""Clients that stop reading, against real servers with real non-reading sockets.

With the default slow-consumer policy a subscriber that takes nothing is left
behind after 0.1 s instead of holding every publish for ``send_timeout``
(5 s): a stream of new non-reading clients must neither throttle publishing
nor cost an honest reader a single event.
"""

from __future__ import annotations

import socket
from contextlib import ExitStack

import anyio
import httpx
import pytest

from ..support.helpers import open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.servers import UNBOUNDED_SEND_KINDS, Server
from .test_e2e import publish_many, stats, unique

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

_PAD = "x" * 1000  # 1 KB events fill a non-reading socket's buffers quickly


def open_non_reader(stack: ExitStack, port: int, channel: str) -> None:
    """Subscribe with a raw socket that never reads (a tiny receive buffer)."""
    sock = stack.enter_context(socket.socket())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET /events/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )


async def test_stalled_clients_neither_throttle_publishing_nor_cost_honest_readers(server: Server) -> None:
    channel = unique("stall")
    total, chunk = 4000, 100
    with ExitStack() as attackers, anyio.fail_after(120):
        async with httpx.AsyncClient(timeout=30) as client:
            dropped_before = (await stats(client, server))["subscribers_dropped"]
            async with open_events(client, f"{server.base_url}/events/{channel}") as honest:
                assert (await honest.next()).event == "stream-open"
                received: list[int] = []

                async def read() -> None:
                    while len(received) < total:
                        event = await honest.next_not_keep_alive()
                        assert event.event is None, event  # no stream-reset, no stream-error
                        received.append(int(str(event.json()).split(" ", 1)[0]))

                started = anyio.current_time()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read)
                    for start in range(0, total, chunk):
                        if start % 500 == 0:  # a new non-reading subscriber every 5 requests
                            open_non_reader(attackers, server.port, channel)
                        values = [f"{i} {_PAD}" for i in range(start, start + chunk)]
                        response = await client.post(
                            f"{server.base_url}/publish", json={"channel": channel, "values": values}
                        )
                        assert response.status_code == 200, response.text
                    publishing = anyio.current_time() - started
                assert received == list(range(total))
                # Before, each non-reading subscriber held a publish for send_timeout
                # (5 s): this took 12-13 s. Left behind after 0.1 s, they cost little
                # (1.2 s in all on a loaded 2-core machine): less than one send_timeout.
                assert publishing < 5, publishing
            if server.kind not in UNBOUNDED_SEND_KINDS:
                # The non-readers are cut send_timeout after they stopped taking events.
                # (daphne buffers without bound: its sends never wait, so nobody is full.)
                await wait_until(lambda: _more_dropped(client, server, dropped_before), timeout=30)
            await publish_many(client, server, channel, range(1))  # the stream still works


async def _more_dropped(client: httpx.AsyncClient, server: Server, before: int) -> bool:
    return bool((await stats(client, server))["subscribers_dropped"] > before)
