"""App processes (hypercorn asyncio, hypercorn trio, uvicorn) on one broker engine or cluster, and what
tests ask of them over HTTP (tests/apps/e2e_app.py: publish, statistics)."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx

from eventstream import ServerSentEvent

from .helpers import EventReader
from .servers import Server, run_server


class Engine(Protocol):
    """A private engine or cluster the apps reach by its URL."""

    @property
    def url(self) -> str: ...


_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_names)}-{os.getpid()}"


def app_env(engine: Engine, prefix: str = "e2e:") -> dict[str, str]:
    return {
        "EVENTSTREAM_BROKER": engine.url,
        "EVENTSTREAM_BROKER_PREFIX": prefix,
        "EVENTSTREAM_KEEP_ALIVE": "0.5",
    }


#: The app processes sharing one engine. daphne is left out: it sends no lifespan
#: events, so nothing enters the stream, which the broker needs (see the README).
BROKER_KINDS = ("hypercorn-asyncio", "hypercorn-trio", "uvicorn")


@contextlib.contextmanager
def run_apps(engine: Engine, log_dir: Path, prefix: str = "e2e:") -> Iterator[list[Server]]:
    """One app process per server kind, all on ``engine``."""
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(run_server(kind, env=app_env(engine, prefix), log_dir=log_dir))
            for kind in BROKER_KINDS
        ]


async def publish_values(client: httpx.AsyncClient, server: Server, channel: str, values: list[Any]) -> None:
    response = await client.post(f"{server.base_url}/publish", json={"channel": channel, "values": values})
    assert response.status_code == 200, response.text


async def read_data(reader: EventReader, count: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while len(events) < count:
        event = await reader.next_not_keep_alive()
        assert event.event not in ("stream-reset", "stream-error"), event
        if event.event != "stream-open":
            events.append(event)
    return events


async def subscribers(client: httpx.AsyncClient, server: Server, channel: str) -> int:
    stats = (await client.get(f"{server.base_url}/stats")).json()
    count: int = stats["channels"].get(channel, 0)
    return count


async def feed_messages(client: httpx.AsyncClient, server: Server) -> int:
    """The feed messages ``server``'s process took in so far (its own counter)."""
    response = await client.get(f"{server.base_url}/stats")
    return int(response.json()["broker"]["feed_messages"])


async def has_subscriber(client: httpx.AsyncClient, server: Server, channel: str) -> bool:
    return await subscribers(client, server, channel) >= 1
