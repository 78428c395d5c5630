"""The examples run under hypercorn's asyncio and trio workers and do what their docstrings say."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .helpers import open_events
from .servers import Server, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server]


@pytest.fixture(scope="module", params=["hypercorn-asyncio", "hypercorn-trio"])
def worker(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module", params=["raw_asgi", "starlette_app", "fastapi_app"])
def chat_server(request: pytest.FixtureRequest, worker: str, log_dir: Path) -> Iterator[Server]:
    with run_server(worker, f"examples.{request.param}:app", log_dir=log_dir) as server:
        yield server


async def test_chat_page_and_publish(chat_server: Server) -> None:
    async with httpx.AsyncClient(base_url=chat_server.base_url, timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "new EventSource(" in page.text
        async with (
            open_events(client, "/api/events") as default,
            open_events(client, "/api/events/room-1") as room,
            open_events(client, "/api/events?channel=a&channel=b") as both,
        ):
            for reader in (default, room, both):
                assert (await reader.next()).event == "stream-open"
            published = [
                ("test", {"text": "hello"}),
                ("room-1", {"text": "in the room"}),
                ("a", {"text": "on a"}),
                ("b", {"text": "on b"}),
            ]
            for channel, data in published:
                response = await client.post(
                    "/api/publish", json={"channel": channel, "event": "message", "data": data}
                )
                assert response.status_code == 202, response.text
            assert (await default.next()).json() == {"text": "hello"}
            assert (await room.next()).json() == {"text": "in the room"}
            assert [(await both.next()).json() for _ in range(2)] == [{"text": "on a"}, {"text": "on b"}]
            # What `curl -d` sends: a JSON body with a form content type (FastAPI answered 422).
            form = await client.post(
                "/api/publish",
                content=b'{"event": "message", "data": "as curl sends it"}',
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            assert form.status_code == 202, form.text
            assert (await default.next()).json() == "as curl sends it"
            bad = await client.post("/api/publish", json={"event": "bad\nname", "data": 1})
            assert bad.status_code == 400
            assert "CR, LF or NUL" in bad.text


@pytest.mark.parametrize("example", ["starlette_app", "fastapi_app"])
async def test_mounted_endpoint(worker: str, example: str, log_dir: Path) -> None:
    with run_server(worker, f"examples.{example}:app", log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with open_events(client, "/api/lobby/anything") as reader:
                assert (await reader.next()).event == "stream-open"
                response = await client.post("/api/publish", json={"channel": "lobby", "data": "mounted"})
                assert response.status_code == 202
                assert (await reader.next()).json() == "mounted"


async def test_pipe_example(worker: str, log_dir: Path) -> None:
    with run_server(worker, "examples.pipe:app", env={"TICK_INTERVAL": "0.05"}, log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with open_events(client, "/api/events") as reader:
                assert (await reader.next()).event == "stream-open"
                ticks = [await reader.next() for _ in range(3)]
                assert {tick.event for tick in ticks} == {"tick"}
                counts = [tick.json()["count"] for tick in ticks]
                assert counts == list(range(counts[0], counts[0] + 3))
