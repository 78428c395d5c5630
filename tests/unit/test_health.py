"""Liveness and readiness: HealthEndpoint and EventStream.readiness (in-process, both backends)."""

from __future__ import annotations

from typing import Literal

import httpx
import pytest

from eventstream import EventStream, HealthEndpoint, Readiness
from eventstream.types import Receive, Scope, Send

from ..support.helpers import answers_to_lifespan_and_websocket

pytestmark = pytest.mark.anyio


def client_of(stream: EventStream) -> httpx.AsyncClient:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        probe: Literal["live", "ready"] = "live" if scope["path"] == "/healthz" else "ready"
        await HealthEndpoint(stream, probe)(scope, receive, send)

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_ready_until_closed_then_503_while_still_alive() -> None:
    stream = EventStream()
    async with client_of(stream) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.headers["content-type"] == "application/json"
        assert ready.headers["cache-control"] == "no-store"
        assert ready.json() == {"status": "ready", "checks": {"stream": "ok"}}
        assert (await client.get("/healthz")).json() == {"status": "alive", "shutting_down": False}
        await stream.aclose()
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json() == {"status": "not ready", "checks": {"stream": "shutting down"}}
        alive = await client.get("/healthz")
        assert alive.status_code == 200  # a liveness failure would restart a process that is stopping
        assert alive.json() == {"status": "alive", "shutting_down": True}
    assert await stream.readiness() == Readiness(ready=False, checks={"stream": "shutting down"})


async def test_entering_again_makes_it_ready_again() -> None:
    stream = EventStream(handle_signals=False)
    await stream.aclose()
    assert not (await stream.readiness()).ready
    async with stream:
        assert (await stream.readiness()).ready
    assert not (await stream.readiness()).ready


async def test_grip_is_ready_only_while_its_publisher_runs() -> None:
    stream = EventStream(grip="http://127.0.0.1:1/", handle_signals=False)
    readiness = await stream.readiness()
    assert not readiness.ready
    assert readiness.checks["grip"].startswith("not running")
    async with stream:
        assert await stream.readiness() == Readiness(ready=True, checks={"stream": "ok", "grip": "ok"})


async def test_head_other_methods_lifespan_and_websocket() -> None:
    stream = EventStream()
    async with client_of(stream) as client:
        head = await client.head("/readyz")
        assert head.status_code == 200
        assert head.content == b""
        assert int(head.headers["content-length"]) > 0
        post = await client.post("/readyz")
        assert post.status_code == 405
        assert post.headers["allow"] == "GET, HEAD"
    endpoint = HealthEndpoint(stream, "ready")
    assert await answers_to_lifespan_and_websocket(endpoint) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
        "websocket.close",
    ]


def test_bad_arguments_are_refused() -> None:
    stream = EventStream()
    with pytest.raises(ValueError, match="probe must be"):
        HealthEndpoint(stream, "alive")  # type: ignore[arg-type]
    for timeout in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout must be"):
            HealthEndpoint(stream, "ready", timeout=timeout)
