"""The broker on a real Redis Cluster across real app processes (hypercorn asyncio, hypercorn trio,
uvicorn): one order and the same ids everywhere, resume on any process, and each process's feed
carrying only its own users' channels, counted on the shards (``PUBSUB SHARDNUMSUB``) and by the
processes themselves. Clients are real (httpx streaming)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from eventstream._redis._layout import ClusterLayout

from ..support.broker_apps import (
    feed_messages,
    has_subscriber,
    publish_values,
    read_data,
    run_apps,
    unique,
)
from ..support.helpers import open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.redis_cluster import RedisCluster
from ..support.servers import Server

pytestmark = [pytest.mark.anyio, pytest.mark.server]

PREFIX = "cluster-e2e:"


@pytest.fixture(scope="module")
def apps(redis_cluster: RedisCluster, log_dir: Path) -> Iterator[list[Server]]:
    with run_apps(redis_cluster, log_dir, PREFIX) as servers:
        yield servers


@CLIENT_ON_ASYNCIO
async def test_publishes_from_each_process_reach_clients_on_each_in_one_order(apps: list[Server]) -> None:
    channel = unique("room")
    async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as stack:
        readers = [
            await stack.enter_async_context(open_events(client, f"{server.base_url}/events/{channel}"))
            for server in apps
        ]
        for server in apps:
            await wait_until(lambda server=server: has_subscriber(client, server, channel))  # type: ignore[misc]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for index, server in enumerate(apps):
                    tg.start_soon(
                        publish_values, client, server, channel, [f"{index}:{n}" for n in range(50)]
                    )
            received = [await read_data(reader, 150) for reader in readers]
    first = [(e.id, e.json()) for e in received[0]]
    assert all([(e.id, e.json()) for e in events] == first for events in received[1:])
    for index in range(3):
        assert [value for _, value in first if value.startswith(f"{index}:")] == [
            f"{index}:{n}" for n in range(50)
        ]
    numbers = [int(str(event_id).removeprefix("c-")) for event_id, _ in first]
    assert numbers == list(range(numbers[0], numbers[0] + 150))


@CLIENT_ON_ASYNCIO
async def test_a_client_resumes_on_another_process(apps: list[Server]) -> None:
    channel = unique("resume")
    async with httpx.AsyncClient(timeout=30) as client:
        with anyio.fail_after(60):
            async with open_events(client, f"{apps[0].base_url}/events/{channel}") as reader:
                await wait_until(lambda: has_subscriber(client, apps[0], channel))
                await publish_values(client, apps[1], channel, list(range(10)))
                seen = await read_data(reader, 10)
            await publish_values(client, apps[2], channel, list(range(10, 20)))
            headers = {"last-event-id": str(seen[-1].id)}
            async with open_events(client, f"{apps[1].base_url}/events/{channel}", headers=headers) as reader:
                rest = await read_data(reader, 10)
    assert [e.json() for e in seen + rest] == list(range(20))


@CLIENT_ON_ASYNCIO
async def test_each_process_takes_in_only_its_own_users_channels(
    redis_cluster: RedisCluster, apps: list[Server]
) -> None:
    users = [[unique(f"user{index}-") for _ in range(4)] for index in range(len(apps))]
    layout = ClusterLayout(PREFIX)
    async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as stack:
        readers = {
            user: await stack.enter_async_context(open_events(client, f"{server.base_url}/events/{user}"))
            for server, mine in zip(apps, users, strict=True)
            for user in mine
        }
        for server, mine in zip(apps, users, strict=True):
            for user in mine:
                await wait_until(lambda s=server, u=user: has_subscriber(client, s, u))  # type: ignore[misc]
        before = [await feed_messages(client, server) for server in apps]
        # Each user's feed is subscribed once, on the shard that owns the user's slot.
        for mine in users:
            for user in mine:
                slot = redis_cluster.keyslot(layout.seq(user))
                owner = redis_cluster.primary_for_slot(slot)
                feed = layout.feed(user).decode()
                assert owner.command("PUBSUB", "SHARDNUMSUB", feed).split()[1] == b"1"
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for index, server in enumerate(apps):
                    for mine in users:
                        for user in mine:
                            tg.start_soon(
                                publish_values, client, server, user, [f"{index}:{n}" for n in range(5)]
                            )
            for reader in readers.values():
                received = [e.json() for e in await read_data(reader, 15)]
                assert sorted(received) == sorted(f"{i}:{n}" for i in range(3) for n in range(5))
        after = [await feed_messages(client, server) for server in apps]
    # 4 users x 15 events each: exactly its own share, not the 12 users' 180.
    assert [a - b for a, b in zip(after, before, strict=True)] == [60, 60, 60]
