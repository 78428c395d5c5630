"""GRIP against real Pushpin: held streams, publishing through proxies, signatures and faults.

Topology, per hypercorn worker: two Pushpin instances P1 and P2 route to app
A; apps A and B (separate processes) both publish to P1 and P2.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import jwt
import pytest

from eventstream import EventStream, GripPublisher, GripPublishError
from eventstream.testing import open_stream

from ..support.helpers import open_events
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.pushpin import SIG_ISS, SIG_KEY, Pushpin, require_pushpin, run_pushpin, stop_pushpin
from ..support.servers import Server, free_port, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server]

_names = itertools.count()


@dataclass
class Topology:
    p1: Pushpin
    p2: Pushpin
    app_a: Server
    app_b: Server


@pytest.fixture(scope="module", params=["hypercorn-asyncio", "hypercorn-trio"])
def topology(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Topology]:
    require_pushpin()
    ports = {name: free_port() for name in ("p1_http", "p1_control", "p2_http", "p2_control")}
    grip = json.dumps(
        [
            f"http://127.0.0.1:{ports[f'{p}_control']}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
            for p in ("p1", "p2")
        ]
    )
    env = {"EVENTSTREAM_GRIP": grip, "EVENTSTREAM_KEEP_ALIVE": "1"}
    with (
        run_server(request.param, env=env, log_dir=log_dir) as app_a,
        run_server(request.param, env=env, log_dir=log_dir) as app_b,
        run_pushpin(app_a.port, http_port=ports["p1_http"], control_port=ports["p1_control"]) as p1,
        run_pushpin(app_a.port, http_port=ports["p2_http"], control_port=ports["p2_control"]) as p2,
    ):
        p1.wait_holds("/events/ready")
        p2.wait_holds("/events/ready")
        yield Topology(p1, p2, app_a, app_b)


async def publish(client: httpx.AsyncClient, app: Server, channel: str, event: dict[str, object]) -> None:
    response = await client.post(f"{app.base_url}/publish", json={"channel": channel, "event": event})
    assert response.status_code == 200, response.text


@CLIENT_ON_ASYNCIO
async def test_held_stream_is_byte_identical_to_a_direct_one(topology: Topology) -> None:
    channel = f"held{next(_names)}"
    async with httpx.AsyncClient(timeout=10) as client:
        async with (
            open_events(client, f"{topology.p1.url}/events/{channel}") as held,
            open_events(client, f"{topology.app_a.base_url}/events/{channel}") as direct,
        ):
            assert held.response.status_code == 200
            assert held.response.headers["content-type"] == "text/event-stream"
            assert not any(name.lower().startswith("grip-") for name in held.response.headers)
            assert (await held.next()).event == "stream-open"
            assert (await direct.next()).event == "stream-open"
            events: list[dict[str, object]] = [
                {"event": "message", "data": {"name": "John", "n": 1}},
                {"event": "note", "text": "two\nlines", "id": "x-1"},
                {"data": "é ünïcode \u2028"},
            ]
            for event in events:
                await publish(client, topology.app_a, channel, event)
            held_events = [await held.next_not_keep_alive() for _ in events]
            direct_events = [await direct.next_not_keep_alive() for _ in events]
            assert held_events == direct_events

            def without_keep_alives(raw: bytearray) -> bytes:
                return bytes(raw).replace(b"event: keep-alive\ndata: \n\n", b"")

            assert without_keep_alives(held.raw) == without_keep_alives(direct.raw)


@CLIENT_ON_ASYNCIO
async def test_keep_alive_arrives_through_pushpin(topology: Topology) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{topology.p1.url}/events/idle{next(_names)}") as held:
            assert (await held.next()).event == "stream-open"
            with anyio.fail_after(5):
                event = await held.next()
            assert event.event == "keep-alive"
            assert bytes(held.raw).endswith(b"event: keep-alive\ndata: \n\n")


@CLIENT_ON_ASYNCIO
async def test_other_process_publishes_to_both_proxies(topology: Topology) -> None:
    channel = f"fan{next(_names)}"
    async with httpx.AsyncClient(timeout=10) as client:
        async with (
            open_events(client, f"{topology.p1.url}/pair/{channel}") as via_p1,
            open_events(client, f"{topology.p2.url}/events/{channel}-a") as via_p2,
        ):
            for reader in (via_p1, via_p2):
                assert (await reader.next()).event == "stream-open"
            # App B holds no connection: the events reach the clients only through the proxies.
            for i in range(5):
                await publish(client, topology.app_b, f"{channel}-{'ab'[i % 2]}", {"data": i})
            assert [(await via_p1.next_not_keep_alive()).json() for _ in range(5)] == list(range(5))
            assert [(await via_p2.next_not_keep_alive()).json() for _ in range(3)] == [0, 2, 4]
        stats = (await client.get(f"{topology.app_b.base_url}/stats")).json()
        assert stats["subscribers"] == 0


@CLIENT_ON_ASYNCIO
@pytest.mark.parametrize("kind", ["forged", "expired", "wrong-issuer"])
async def test_invalid_grip_sig_sent_straight_to_the_app_is_refused(topology: Topology, kind: str) -> None:
    now = int(time.time())
    token = {
        "forged": "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJwdXNocGluIn0.forged",
        "expired": jwt.encode({"iss": SIG_ISS, "exp": now - 10}, SIG_KEY, algorithm="HS256"),
        "wrong-issuer": jwt.encode({"iss": "mallory", "exp": now + 60}, SIG_KEY, algorithm="HS256"),
    }[kind]
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{topology.app_a.base_url}/events/x", headers={"Grip-Sig": token})
        assert response.status_code == 403
        assert "Grip-Sig" in response.text
        # A valid signature (as Pushpin makes) gets hold instructions.
        valid = jwt.encode({"iss": SIG_ISS, "exp": now + 60}, SIG_KEY, algorithm="HS256")
        held = await client.get(f"{topology.app_a.base_url}/events/x", headers={"Grip-Sig": valid})
        assert held.status_code == 200
        assert held.headers["grip-hold"] == "stream"
        assert held.headers["grip-channel"] == "events-x"
        assert held.content == b"event: stream-open\ndata: \n\n"


async def test_proxy_down_retries_then_raises_while_local_subscribers_get_the_event() -> None:
    port = free_port()  # nothing listens there
    grip = GripPublisher(f"http://127.0.0.1:{port}", retries=3, backoff=0.05, max_backoff=0.2)
    stream = EventStream(grip=grip)
    async with stream:
        async with open_stream(stream("down")) as local:
            await stream.wait_subscribers(1, "down")
            started = time.monotonic()
            with anyio.fail_after(10), pytest.raises(GripPublishError) as caught:
                await stream.publish_event("down", {"event": "message", "data": "still here"})
            elapsed = time.monotonic() - started
            assert (await local.receive_event()).event == "stream-open"
            assert (await local.receive_event()).json() == "still here"
    error = caught.value
    assert error.proxy == f"http://127.0.0.1:{port}"
    assert error.status is None
    assert error.attempts == 4
    assert "ConnectError" in error.reason
    assert elapsed < 2.0  # 3 retries, at most 0.05 + 0.1 + 0.2 s of backoff
    (stats,) = stream.statistics().grip
    assert (stats.requests, stats.retries, stats.failures, stats.items_published) == (4, 3, 1, 0)


async def test_proxy_back_mid_retry_gets_the_event_once() -> None:
    require_pushpin()
    control = free_port()
    grip = GripPublisher(f"http://127.0.0.1:{control}", retries=40, backoff=0.05, max_backoff=0.1)
    channel = f"back{next(_names)}"
    async with EventStream(grip=grip) as stream, anyio.create_task_group() as tg:
        done = anyio.Event()

        async def publish() -> None:
            await stream.publish_event(channel, {"data": "once"})
            done.set()

        tg.start_soon(publish)
        with anyio.fail_after(10):
            while grip.statistics()[0].retries < 2:
                await anyio.sleep(0.01)
        assert not done.is_set()
        with run_pushpin(free_port(), control_port=control) as pushpin:
            with anyio.fail_after(10):
                await done.wait()
            (stats,) = grip.statistics()
            assert stats.items_published == 1
            assert stats.failures == 0
            assert pushpin.published() == 1  # counted before the publish is answered


@CLIENT_ON_ASYNCIO
@pytest.mark.parametrize("worker", ["hypercorn-asyncio", "hypercorn-trio"])
async def test_grip_example_two_processes_serve_one_stream(worker: str, log_dir: Path) -> None:
    require_pushpin()
    control, http = free_port(), free_port()
    env = {"GRIP_URL": f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"}
    with (
        run_server(worker, "examples.grip.app:app", env=env, log_dir=log_dir) as first,
        run_server(worker, "examples.grip.app:app", env=env, log_dir=log_dir) as second,
        run_pushpin(first.port, http_port=http, control_port=control) as pushpin,
    ):
        pushpin.wait_holds("/api/events")
        async with httpx.AsyncClient(timeout=10) as client:
            page = await client.get(f"{pushpin.url}/")
            assert "new EventSource(" in page.text
            async with open_events(client, f"{pushpin.url}/api/events/lobby") as held:
                assert (await held.next()).event == "stream-open"
                for app, text in ((second, "from the second process"), (first, "from the first")):
                    response = await client.post(
                        f"{app.base_url}/api/publish",
                        json={"channel": "lobby", "event": "message", "data": {"text": text}},
                    )
                    assert response.status_code == 202, response.text
                received = [(await held.next_not_keep_alive()).json() for _ in range(2)]
                assert received == [{"text": "from the second process"}, {"text": "from the first"}]


async def test_proxy_going_down_during_a_burst() -> None:
    require_pushpin()
    control = free_port()
    with run_pushpin(free_port(), control_port=control) as pushpin:
        grip = GripPublisher(f"http://127.0.0.1:{control}", retries=1, backoff=0.02, max_backoff=0.05)
        stream = EventStream(grip=grip)
        accepted: list[int] = []
        refused: list[tuple[int, int | None]] = []
        with anyio.fail_after(30):
            async with stream, open_stream(stream("burst")) as local:
                await stream.wait_subscribers(1, "burst")
                for i in range(100):
                    if i == 50:
                        assert pushpin.published() == 50
                        stop_pushpin(pushpin.process)
                    try:
                        await stream.publish_event("burst", {"data": i})
                        accepted.append(i)
                    except GripPublishError as exc:
                        refused.append((i, exc.status))
                assert (await local.receive_event()).event == "stream-open"
                assert [(await local.receive_event()).json() for _ in range(100)] == list(range(100))
        assert accepted == list(range(50))
        assert refused == [(i, None) for i in range(50, 100)]  # None: could not connect
