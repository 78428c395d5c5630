"""The examples run under real servers (hypercorn asyncio and trio workers, and the servers each
framework supports) and do what their docstrings say."""

from __future__ import annotations

import importlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventstream import EventStream, get_event_stream_singleton

from ..support.helpers import open_events
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.servers import Server, run_server, serve_in_process

pytestmark = [pytest.mark.anyio, pytest.mark.server]


async def check_monitoring(client: httpx.AsyncClient, template: str, published: int) -> None:
    """The example serves /healthz, /readyz and /metrics: the probes answer, and the metrics count
    ``published`` events at least and the open streams of ``template`` (while some are open)."""
    live = await client.get("/healthz")
    assert live.status_code == 200, live.text
    assert live.json() == {"status": "alive", "shutting_down": False}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    scrape = await client.get("/metrics")
    assert scrape.status_code == 200, scrape.text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scrape.text)
        for sample in family.samples
    }
    assert samples[("eventstream_events_published_total", ())] >= published
    assert samples[("eventstream_streams_open", (("template", template),))] >= 1


@pytest.fixture(scope="module", params=["hypercorn-asyncio", "hypercorn-trio"])
def worker(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module", params=["raw_asgi", "starlette_app", "fastapi_app"])
def chat_server(request: pytest.FixtureRequest, worker: str, log_dir: Path) -> Iterator[Server]:
    with run_server(worker, f"examples.{request.param}:app", log_dir=log_dir) as server:
        yield server


@CLIENT_ON_ASYNCIO
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
            await check_monitoring(client, "{id}", published=len(published))
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


@CLIENT_ON_ASYNCIO
@pytest.mark.parametrize("example", ["starlette_app", "fastapi_app", "litestar_app"])
async def test_mounted_endpoint(worker: str, example: str, log_dir: Path) -> None:
    with run_server(worker, f"examples.{example}:app", log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with open_events(client, "/api/lobby/anything") as reader:
                assert (await reader.next()).event == "stream-open"
                response = await client.post("/api/publish", json={"channel": "lobby", "data": "mounted"})
                assert response.status_code == 202
                assert (await reader.next()).json() == "mounted"


@CLIENT_ON_ASYNCIO
async def test_pipe_example(worker: str, log_dir: Path) -> None:
    with run_server(worker, "examples.pipe:app", env={"TICK_INTERVAL": "0.05"}, log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with open_events(client, "/api/events") as reader:
                assert (await reader.next()).event == "stream-open"
                ticks = [await reader.next() for _ in range(3)]
                assert {tick.event for tick in ticks} == {"tick"}
                counts = [tick.json()["count"] for tick in ticks]
                assert counts == list(range(counts[0], counts[0] + 3))


# Frameworks beside Starlette and FastAPI, each under servers it supports (Django and Quart
# run on asyncio only; Litestar also on trio).
FRAMEWORKS = [
    ("django_app.asgi", "uvicorn"),
    ("django_app.asgi", "daphne"),
    ("litestar_app", "hypercorn-trio"),
    ("litestar_app", "granian"),
    ("quart_app", "hypercorn-asyncio"),
    ("quart_app", "uvicorn"),
]


@CLIENT_ON_ASYNCIO
@pytest.mark.parametrize(
    ("example", "kind"), FRAMEWORKS, ids=[f"{e.split('.')[0]}-{k}" for e, k in FRAMEWORKS]
)
async def test_framework_example(example: str, kind: str, log_dir: Path) -> None:
    """The framework serves the page and publishes; its router hands ``{token}`` to the endpoint."""
    with run_server(kind, f"examples.{example}:app", log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            page = await client.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert "new EventSource(" in page.text
            async with (
                open_events(client, "/api/events") as default,
                open_events(client, "/api/rooms/blue") as room,
                open_events(client, "/api/events?channel=a&channel=b") as both,
            ):
                for reader in (default, room, both):
                    assert reader.response.headers["content-type"] == "text/event-stream"
                    assert (await reader.next()).event == "stream-open"

                async def publish(channel: str, data: object) -> None:
                    response = await client.post(
                        "/api/publish", json={"channel": channel, "event": "message", "data": data}
                    )
                    assert response.status_code == 202, response.text

                await publish("room-red", "not for blue")
                await publish("room-blue", "for blue")
                await publish("test", "hello")
                await publish("a", "on a")
                await publish("b", "on b")
                assert (await room.next()).json() == "for blue"  # the path parameter named the channel
                assert (await default.next()).json() == "hello"
                assert [(await both.next()).json() for _ in range(2)] == ["on a", "on b"]
                await check_monitoring(client, "room-{token}", published=5)
                bad = await client.post("/api/publish", json={"event": "bad\nname", "data": 1})
                assert bad.status_code == 400
                assert "CR, LF or NUL" in bad.text
                for body in (b"{not json", b"[1, 2]", b'"a string"'):
                    malformed = await client.post(
                        "/api/publish", content=body, headers={"content-type": "application/json"}
                    )
                    assert malformed.status_code == 400, (body, malformed.status_code, malformed.text)
                await publish("room-blue", "after the bad one")  # the bad requests broke nothing
                assert (await room.next()).json() == "after the bad one"
            # A path parameter is checked like any channel name before anything is subscribed.
            refused = await client.get("/api/rooms/a%3Bb")
            assert refused.status_code == 400
            assert "Invalid channel" in refused.text
            too_long = await client.get("/api/rooms/" + "x" * 300)
            assert too_long.status_code == 400


@pytest.mark.parametrize("example", ["django_app.asgi", "litestar_app", "quart_app"])
async def test_framework_lets_go_of_streams_whose_clients_left(example: str, anyio_backend: str) -> None:
    """Through the framework's routing, a client that leaves is unsubscribed (served in this
    process by hypercorn, so the test can read the hub's subscriber count)."""
    if anyio_backend == "trio" and example != "litestar_app":
        pytest.skip(f"{example} runs on asyncio only")
    module = importlib.import_module(f"examples.{example}")
    stream = get_event_stream_singleton()
    channel = f"room-leave-{example.split('.')[0]}"
    try:
        await held_and_dropped_through(module.app, stream, channel)
    finally:
        # The example's lifespan closed the process-wide hub on its way out: open it again
        # (as its ``async with`` does) for the tests that follow in this process.
        await stream.__aenter__()


async def held_and_dropped_through(app: Any, stream: EventStream, channel: str) -> None:
    limits = httpx.Limits(max_connections=60, max_keepalive_connections=0)
    async with serve_in_process(app) as port:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=20, limits=limits
        ) as client:
            opened = anyio.Semaphore(0)
            leave = anyio.Event()

            async def hold() -> None:
                async with open_events(client, f"/api/rooms/{channel.removeprefix('room-')}") as reader:
                    assert (await reader.next()).event == "stream-open"
                    opened.release()
                    await leave.wait()

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for _ in range(50):
                        tg.start_soon(hold)
                    for _ in range(50):
                        await opened.acquire()
                    assert stream.subscriber_count(channel) == 50
                    leave.set()  # every client closes its connection
                await stream.wait_subscribers(0, channel)


@CLIENT_ON_ASYNCIO
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_django_example_under_daphne_ends_open_streams_on_a_signal(signum: int, log_dir: Path) -> None:
    """daphne sends no lifespan events, so the example's ``close_on_signals()`` never runs; the
    handlers the hub installs at its first request end the open streams cleanly all the same."""
    with run_server("daphne", "examples.django_app.asgi:app", log_dir=log_dir) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            async with open_events(client, "/api/events") as reader:
                assert (await reader.next()).event == "stream-open"
                response = await client.post("/api/publish", json={"event": "message", "data": "last"})
                assert response.status_code == 202, response.text
                assert (await reader.next()).json() == "last"
                server.process.send_signal(signum)
                with anyio.fail_after(10):
                    await reader.read_to_end()  # complete: a cut response raises httpx's RemoteProtocolError
                    while server.process.poll() is None:
                        await anyio.sleep(0.02)
    assert "Traceback" not in server.log(), server.log()
