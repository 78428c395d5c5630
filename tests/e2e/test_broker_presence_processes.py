"""Counts and presence across real app processes (hypercorn asyncio, hypercorn trio, uvicorn) on one engine.

Every process answers for all of them; ``kill -9`` of one removes its
members within the heartbeat expiry; apps on another prefix never see them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ..support.helpers import wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.redis_engine import RedisEngine
from ..support.servers import Server, run_server, stop_process

pytestmark = [pytest.mark.anyio, pytest.mark.server]

KINDS = ("hypercorn-asyncio", "hypercorn-trio", "uvicorn")
#: The apps' heartbeat interval; their expiry is three of them (tests/apps/e2e_app.py).
HEARTBEAT = 0.2
EXPIRY = 3 * HEARTBEAT

_names = itertools.count()


def unique(name: str) -> str:
    return f"{name}{next(_names)}-{os.getpid()}"


@contextlib.contextmanager
def run_apps(
    engine: RedisEngine, log_dir: Path, prefix: str, kinds: tuple[str, ...]
) -> Iterator[list[Server]]:
    env = {
        "EVENTSTREAM_BROKER": engine.url,
        "EVENTSTREAM_BROKER_PREFIX": prefix,
        "EVENTSTREAM_KEEP_ALIVE": "0.5",
        "EVENTSTREAM_PRESENCE": "1",
        "EVENTSTREAM_HEARTBEAT": str(HEARTBEAT),
    }
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(run_server(kind, env=env, log_dir=log_dir)) for kind in kinds]


async def answer(client: httpx.AsyncClient, server: Server, what: str, channel: str | None) -> Any:
    params = {"channel": channel} if channel is not None else {}
    response = await client.get(f"{server.base_url}/{what}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def all_answer(
    client: httpx.AsyncClient, servers: list[Server], channel: str, count: int, total: int, members: list[Any]
) -> bool:
    for server in servers:
        if await answer(client, server, "count", channel) != count:
            return False
        if await answer(client, server, "count", None) != total:
            return False
        if await answer(client, server, "presence", channel) != members:
            return False
    return True


async def hold(client: httpx.AsyncClient, url: str, opened: anyio.Event) -> None:
    """Hold a stream open until cancelled or its server dies."""
    with contextlib.suppress(httpx.HTTPError):
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            opened.set()
            async for _ in response.aiter_raw():
                pass


@CLIENT_ON_ASYNCIO
async def test_three_processes_count_and_present_together_and_a_killed_one_leaves(
    engine: RedisEngine, log_dir: Path
) -> None:
    channel = unique("room")
    prefix = unique("pres") + ":"
    other_prefix = prefix[:-1]  # a prefix of the first one's
    # Who holds a stream on which process (uvicorn: one process, the one killed).
    who = {"hypercorn-asyncio": ["ann", "bob"], "hypercorn-trio": ["ann"], "uvicorn": ["cy", "cy", "dan"]}
    async with httpx.AsyncClient(timeout=30) as client:
        with (
            anyio.fail_after(120),
            run_apps(engine, log_dir, prefix, KINDS) as servers,
            run_apps(engine, log_dir, other_prefix, ("uvicorn",)) as (other,),
        ):
            async with anyio.create_task_group() as tg:
                for server in [*servers, other]:
                    for name in who[server.kind] if server is not other else ["eve"]:
                        opened = anyio.Event()
                        tg.start_soon(hold, client, f"{server.base_url}/events/{channel}?who={name}", opened)
                        await opened.wait()
                everyone = [["ann", 2], ["bob", 1], ["cy", 2], ["dan", 1]]
                await wait_until(lambda: all_answer(client, servers, channel, 6, 6, everyone))
                # The other prefix sees its own stream alone, and its stream is not counted here.
                assert await all_answer(client, [other], channel, 1, 1, [["eve", 1]])
                victim = next(server for server in servers if server.kind == "uvicorn")
                survivors = [server for server in servers if server is not victim]
                os.kill(victim.process.pid, signal.SIGKILL)
                left = [["ann", 2], ["bob", 1]]
                # Within the expiry (plus the time to ask three processes twice over HTTP).
                await wait_until(
                    lambda: all_answer(client, survivors, channel, 3, 3, left), timeout=EXPIRY + 5
                )
                assert await all_answer(client, [other], channel, 1, 1, [["eve", 1]])
                tg.cancel_scope.cancel()
            stop_process(victim.process)
