"""The fault and bad-input catalogue, against real servers.

Each row states what the client must get. After every row the server must
still serve, hold no subscription for the row's channel, and deliver an
event to a client that watched all along.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import jwt
import pytest

from ..support.helpers import open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.pushpin import SIG_ISS, SIG_KEY
from ..support.servers import UNBOUNDED_SEND_KINDS, Server, free_port, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

_names = itertools.count()


@pytest.fixture(scope="module", params=["hypercorn-asyncio", "hypercorn-trio", "uvicorn"])
def fault_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    # GRIP verification on (so forged signatures can be refused); publishing goes
    # nowhere, so rows that publish use a server without GRIP (the `server` fixture).
    env = {
        "EVENTSTREAM_GRIP": f"http://127.0.0.1:{free_port()}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}",
        "EVENTSTREAM_SEND_TIMEOUT": "0.5",
        "EVENTSTREAM_BUFFER_SIZE": "16",
    }
    with run_server(request.param, env=env, log_dir=log_dir) as server:
        yield server


async def subscribers(client: httpx.AsyncClient, server: Server, channel: str) -> int:
    count: int = (await client.get(f"{server.base_url}/stats")).json()["channels"].get(channel, 0)
    return count


async def publish(
    client: httpx.AsyncClient, server: Server, channel: str, event: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"{server.base_url}/publish", json={"channel": channel, "event": event})


def expired_sig() -> str:
    return jwt.encode({"iss": SIG_ISS, "exp": int(time.time()) - 5}, SIG_KEY, algorithm="HS256")


# (name, method, path, headers, expected status, text in the answer)
REQUEST_ROWS: list[tuple[str, str, str, dict[str, str], int, str]] = [
    ("wrong method", "POST", "/events/{c}", {}, 405, "Method not allowed"),
    ("wrong Accept", "GET", "/events/{c}", {"accept": "application/json"}, 406, "Not acceptable"),
    ("no channels", "GET", "/query?channel=", {}, 400, "No channels"),
    (
        "too many channels",
        "GET",
        "/query?" + "&".join(f"channel=c{i}" for i in range(33)),
        {},
        400,
        "Too many",
    ),
    ("overlong channel name", "GET", "/events/" + "n" * 257, {}, 400, "limit is 256"),
    ("invalid channel name", "GET", "/events/a%22b", {}, 400, "Invalid channel"),
    ("token without route parameter", "GET", "/missing", {}, 400, "No route parameter"),
    ("Last-Event-ID: error", "GET", "/events/{c}", {"last-event-id": "error"}, 400, "Last-Event-ID"),
    ("forged Grip-Sig", "GET", "/events/{c}", {"grip-sig": "e30.e30.forged"}, 403, "Grip-Sig"),
    ("expired Grip-Sig", "GET", "/events/{c}", {"grip-sig": "EXPIRED"}, 403, "Grip-Sig"),
]


@pytest.mark.parametrize(
    ("name", "method", "path", "headers", "status", "text"), REQUEST_ROWS, ids=[r[0] for r in REQUEST_ROWS]
)
async def test_bad_request_rows(
    fault_server: Server, name: str, method: str, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    channel = f"row{next(_names)}"
    headers = {k: expired_sig() if v == "EXPIRED" else v for k, v in headers.items()}
    async with httpx.AsyncClient(base_url=fault_server.base_url, timeout=10) as client:
        response = await client.request(method, path.format(c=channel), headers=headers)
        assert response.status_code == status, (name, response.text)
        assert text in response.text
        assert await subscribers(client, fault_server, channel) == 0
        assert (await client.get("/stats")).status_code == 200


@pytest.mark.parametrize("last_event_id", ["garbage", "\u00e9t\u00e9", "x" * 6000, "0-0-0.0.0", "-1"])
async def test_garbage_and_huge_last_event_id_get_stream_reset(server: Server, last_event_id: str) -> None:
    channel = f"lei{next(_names)}"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        await publish(client, server, channel, {"data": "old"})
        headers = {"last-event-id": last_event_id.encode("utf-8")}
        async with open_events(client, f"/events/{channel}", headers=headers) as reader:
            assert reader.response.status_code == 200
            assert (await reader.next()).event == "stream-open"
            assert (await reader.next()).event == "stream-reset"
            await publish(client, server, channel, {"data": "live"})
            assert (await reader.next_not_keep_alive()).json() == "live"


async def test_client_that_never_reads_is_dropped_and_others_lose_nothing(server: Server) -> None:
    channel = f"stall{next(_names)}"
    big = "x" * 4000
    total = 3000  # 12 MB: more than the socket buffers between the server and the stalled client
    with anyio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            dropped_before = (await client.get("/stats")).json()["subscribers_dropped"]
            with socket.create_connection(("127.0.0.1", server.port)) as stalled:
                stalled.sendall(f"GET /events/{channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                async with open_events(client, f"/events/{channel}") as reader:
                    await reader.next()

                    async def both_subscribed() -> bool:
                        return await subscribers(client, server, channel) == 2

                    await wait_until(both_subscribed)
                    received: list[int] = []
                    async with anyio.create_task_group() as tg:

                        async def read() -> None:
                            while len(received) < total:
                                received.append((await reader.next_not_keep_alive()).json()[0])

                        tg.start_soon(read)
                        for start in range(0, total, 100):
                            response = await client.post(
                                "/publish",
                                json={
                                    "channel": channel,
                                    "values": [[i, big] for i in range(start, start + 100)],
                                },
                            )
                            assert response.status_code == 200
                    assert received == list(range(total))
                    if server.kind in UNBOUNDED_SEND_KINDS:
                        # The server took every byte for the stalled client into its own
                        # memory: it never looked slow, so it is still subscribed.
                        stats = (await client.get("/stats")).json()
                        assert stats["channels"].get(channel) == 2
                        assert stats["subscribers_dropped"] == dropped_before
                        return

                    async def stalled_dropped() -> bool:
                        stats = (await client.get("/stats")).json()
                        return bool(
                            stats["channels"].get(channel) == 1
                            and stats["subscribers_dropped"] > dropped_before
                        )

                    await wait_until(stalled_dropped, timeout=20)


async def test_client_vanishing_mid_event_leaves_no_subscription(server: Server) -> None:
    channel = f"vanish{next(_names)}"
    with anyio.fail_after(60):
        await vanish_rounds(server, channel)


async def vanish_rounds(server: Server, channel: str) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(f"GET /events/{channel} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                sock.recv(64)  # part of the answer, then the client is gone with a reset
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await publish(client, server, channel, {"data": "x" * 1000})

        async def none_left() -> bool:
            return await subscribers(client, server, channel) == 0

        await wait_until(none_left)
        assert (await client.get("/stats")).status_code == 200


async def test_1000_reconnects_in_a_row(server: Server) -> None:
    channel = f"churn{next(_names)}"
    with anyio.fail_after(120):
        await churn(server, channel)


async def churn(server: Server, channel: str) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        async with open_events(client, f"/events/{channel}") as watcher:
            await watcher.next()
            for _ in range(1000):
                async with open_events(client, f"/events/{channel}") as reader:
                    assert (await reader.next()).event == "stream-open"
            await publish(client, server, channel, {"data": "after churn"})
            assert (await watcher.next_not_keep_alive()).json() == "after churn"

        async def none_left() -> bool:
            return await subscribers(client, server, channel) == 0

        await wait_until(none_left)


@pytest.mark.parametrize(
    ("event", "error"),
    [
        ({"data": float("nan")}, "Out of range"),
        ({"event": "bad\nname", "data": 1}, "CR, LF or NUL"),
        ({"event": "bad\rname", "data": 1}, "CR, LF or NUL"),
        ({"id": "1\n2", "data": 1}, "CR, LF or NUL"),
        ({"data": 1, "text": "both"}, "not both"),
        ({"retry": -1, "data": 1}, "retry"),
    ],
)
async def test_invalid_events_are_refused_before_anyone_gets_anything(
    server: Server, event: dict[str, Any], error: str
) -> None:
    channel = f"bad{next(_names)}"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        async with open_events(client, f"/events/{channel}") as reader:
            await reader.next()
            if event.get("data") != event.get(
                "data"
            ):  # NaN cannot travel as JSON: send it as a Python literal
                response = await client.post(
                    "/publish",
                    content=b'{"channel": "%s", "event": {"data": NaN}}' % channel.encode(),
                    headers={"content-type": "application/json"},
                )
            else:
                response = await publish(client, server, channel, event)
            assert response.status_code == 400
            assert error in response.text
            await publish(client, server, channel, {"data": "next"})
            assert (await reader.next_not_keep_alive()).json() == "next"  # nothing came before it
