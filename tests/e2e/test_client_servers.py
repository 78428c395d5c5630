"""eventstream.client.EventSource against real servers: eventstream under hypercorn and
uvicorn (through a relay cut many times, and across a restart), and sse-starlette."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from eventstream import ServerSentEvent
from eventstream.client import EventSource, EventSourceError

from ..apps import sse_starlette_app
from ..support.helpers import wait_until
from ..support.marks import client_follows_server
from ..support.relay import relay
from ..support.servers import SERVER_KINDS, Server, free_port, run_server, stop_process

pytestmark = [pytest.mark.anyio, pytest.mark.server]

_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}"


async def publish(client: httpx.AsyncClient, base_url: str, channel: str, values: list[Any]) -> None:
    response = await client.post(f"{base_url}/publish", json={"channel": channel, "values": values})
    assert response.status_code == 200, response.text


@client_follows_server("server", SERVER_KINDS, scope="session")
async def test_every_event_once_and_in_order_through_many_cuts(server: Server) -> None:
    """Cuts between events and inside events (after the id line), while events are published."""
    channel, total = unique("cuts"), 120
    received: list[Any] = []
    done, opened = anyio.Event(), anyio.Event()
    with relay(server.port) as cut:
        async with (
            httpx.AsyncClient(timeout=10) as publisher,
            EventSource(
                f"http://127.0.0.1:{cut.port}/events/{channel}", reconnect_delay=0.02, read_timeout=10
            ) as source,
        ):

            async def consume() -> None:
                async for event in source:
                    if event.event == "stream-open":
                        opened.set()
                    elif event.event is None:
                        received.append(event.json())
                        assert source.last_event_id == event.id
                        if len(received) == total:
                            done.set()
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                with anyio.fail_after(10):
                    await opened.wait()  # subscribed: from now on nothing may be lost
                inside = between = 0
                for n in range(total):
                    if n % 10 == 4:
                        cut.cut_after_line(b"\nid: ")  # this event is cut after its id line
                    await publish(publisher, server.base_url, channel, [n])
                    if n % 10 == 4:
                        inside += 1

                        async def cut_done(expected: int = inside) -> bool:
                            return cut.cuts_inside == expected

                        await wait_until(cut_done, timeout=20)
                    elif n % 10 == 8:
                        cut.cut()
                        between += 1
                with anyio.fail_after(60):
                    await done.wait()
    assert received == list(range(total))
    assert (cut.cuts_inside, between) == (12, 12)
    assert source.connections >= 1 + 12  # every cut inside an event made it reconnect


# The client on each backend, against one server each.
@pytest.mark.parametrize(("kind", "anyio_backend"), [("hypercorn-asyncio", "trio"), ("uvicorn", "asyncio")])
async def test_a_restarted_server_without_history_sends_stream_reset(kind: str, log_dir: Path) -> None:
    channel = unique("restart")
    env = {"EVENTSTREAM_KEEP_ALIVE": "0.5"}
    async with httpx.AsyncClient(timeout=10) as publisher:
        with run_server(kind, env=env, log_dir=log_dir) as first, relay(first.port) as cut:
            url = f"http://127.0.0.1:{cut.port}/events/{channel}"
            async with EventSource(url, reconnect_delay=0.05, max_reconnect_delay=0.5) as source:
                seen: list[ServerSentEvent] = []

                async def until(predicate: Any) -> ServerSentEvent:
                    with anyio.fail_after(30):
                        async for event in source:
                            seen.append(event)
                            if predicate(event):
                                return event
                    raise AssertionError("the source ended")

                await until(lambda e: e.event == "stream-open")
                await publish(publisher, first.base_url, channel, ["before"])
                before = await until(lambda e: e.event is None)
                assert before.json() == "before"
                assert source.last_event_id == before.id
                # Reconnections find nothing listening while the server is replaced.
                cut.target = free_port()
                await anyio.to_thread.run_sync(stop_process, first.process)
                with run_server(kind, env=env, log_dir=log_dir) as second:
                    cut.target = second.port
                    reset = await until(lambda e: e.event == "stream-reset")
                    await publish(publisher, second.base_url, channel, ["after"])
                    after = await until(lambda e: e.event is None)
    assert reset.event == "stream-reset"
    assert after.json() == "after"
    assert after.id is not None
    assert before.id is not None
    assert after.id.split("-")[0] != before.id.split("-")[0]  # a new epoch
    assert [e.json() for e in seen if e.event is None] == ["before", "after"]
    assert source.connections >= 2


@pytest.fixture(scope="module")
def sse_starlette_server(log_dir: Path) -> Iterator[Server]:
    with run_server("uvicorn", "tests.apps.sse_starlette_app:app", log_dir=log_dir) as server:
        yield server


async def test_a_server_this_project_did_not_write(sse_starlette_server: Server) -> None:
    """sse-starlette: CRLF lines, retry, ids; it ends each response and answers 204 when done."""
    events: list[ServerSentEvent] = []
    url = f"{sse_starlette_server.base_url}/count"
    async with EventSource(url) as source:

        async def read_all() -> None:
            async for event in source:
                events.append(event)

        with pytest.raises(EventSourceError) as raised, anyio.fail_after(30):
            await read_all()
    assert raised.value.status_code == 204
    assert [(e.event, e.json()["n"], e.id) for e in events] == [
        ("count", n, str(n)) for n in range(sse_starlette_app.TOTAL)
    ]
    assert source.reconnect_delay == 0.02
    assert source.last_event_id == str(sse_starlette_app.TOTAL - 1)
    per = sse_starlette_app.PER_CONNECTION
    assert source.connections == -(-sse_starlette_app.TOTAL // per)
