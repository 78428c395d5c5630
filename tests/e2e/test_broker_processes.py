"""The broker across real app processes (hypercorn asyncio, hypercorn trio, uvicorn) on one engine,
and (one order, resume on another process, each process's own share) on a Redis Cluster too.

Clients are real (httpx streaming); the engine is a private redis-server, the cluster private
redis-servers (3 primaries, a replica each). Each process's feed carries only its own users'
channels: counted on the engine (``PUBSUB NUMSUB``) or the shards (``PUBSUB SHARDNUMSUB``), and by
the processes themselves.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from eventstream import Publisher, RedisBroker
from eventstream._redis._layout import CLUSTER_EPOCH, ClusterLayout

from ..support.broker_apps import (
    app_env,
    feed_messages,
    has_subscriber,
    publish_values,
    read_data,
    run_apps,
    unique,
)
from ..support.helpers import EventReader, open_events, wait_until
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.redis_cluster import RedisCluster
from ..support.redis_engine import RedisEngine, run_redis
from ..support.relay import relay
from ..support.servers import Server, run_server, stop_process

pytestmark = [pytest.mark.anyio, pytest.mark.server]

#: A test on the module's engine and on its cluster (started only for the tests that run on it).
ON_ENGINE_AND_CLUSTER = pytest.mark.parametrize("backend", ["engine", "redis_cluster"], indirect=True)


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest) -> RedisEngine | RedisCluster:
    """The fixture named by the test's parameter: ``engine`` or ``redis_cluster``."""
    found: RedisEngine | RedisCluster = request.getfixturevalue(request.param)
    return found


@pytest.fixture(scope="module")
def apps(backend: RedisEngine | RedisCluster, log_dir: Path) -> Iterator[list[Server]]:
    with run_apps(backend, log_dir) as servers:
        yield servers


def feed_subscribers(backend: RedisEngine | RedisCluster, channel: str) -> int:
    """The subscribers of ``channel``'s feed (the apps' prefix): on the engine, or on the shard that
    owns the feed's slot."""
    prefix = app_env(backend)["EVENTSTREAM_BROKER_PREFIX"]
    if isinstance(backend, RedisCluster):
        feed = ClusterLayout(prefix).feed(channel).decode()
        owner = backend.primary_for_slot(backend.keyslot(feed))
        reply = owner.command("PUBSUB", "SHARDNUMSUB", feed)
    else:
        reply = backend.command("PUBSUB", "NUMSUB", f"{prefix}|ch:0:{channel}")
    return int(reply.split()[1])


@ON_ENGINE_AND_CLUSTER
@CLIENT_ON_ASYNCIO
async def test_publishes_from_each_process_reach_clients_on_each_in_one_order(
    backend: RedisEngine | RedisCluster, apps: list[Server]
) -> None:
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
                    values = [f"{index}:{n}" for n in range(100)]
                    tg.start_soon(publish_values, client, server, channel, values)
            received = [await read_data(reader, 300) for reader in readers]
    first = [(e.id, e.json()) for e in received[0]]
    assert all([(e.id, e.json()) for e in events] == first for events in received[1:])
    assert sorted(value for _, value in first) == sorted(f"{i}:{n}" for i in range(3) for n in range(100))
    for index in range(3):
        mine = [value for _, value in first if value.startswith(f"{index}:")]
        assert mine == [f"{index}:{n}" for n in range(100)]
    epochs, numbers = zip(*(str(event_id).rsplit("-", 1) for event_id, _ in first), strict=True)
    assert len(set(epochs)) == 1
    seqs = [int(number) for number in numbers]
    if isinstance(backend, RedisCluster):
        # A new channel on a cluster numbers on from the engine's clock (see _scripts.py).
        assert epochs[0] == CLUSTER_EPOCH
        assert seqs == list(range(seqs[0], seqs[0] + 300))
    else:
        assert seqs == list(range(1, 301))


@ON_ENGINE_AND_CLUSTER
@CLIENT_ON_ASYNCIO
async def test_each_process_takes_in_only_its_own_users_channels(
    backend: RedisEngine | RedisCluster, apps: list[Server]
) -> None:
    # Per-user channels, disjoint between the processes: each process's feed
    # carries its own users' events, and none of the others'.
    users = [[unique(f"user{index}-") for _ in range(4)] for index in range(len(apps))]
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
        # Each user's feed is subscribed once (by one process), on the engine or on the shard
        # that owns its slot.
        counts = [feed_subscribers(backend, user) for mine in users for user in mine]
        assert counts == [1] * len(counts)
        with anyio.fail_after(60):
            # Every process publishes to every user, wherever the user is served.
            async with anyio.create_task_group() as tg:
                for index, server in enumerate(apps):
                    values = [f"{index}:{n}" for n in range(5)]
                    for mine in users:
                        for user in mine:
                            tg.start_soon(publish_values, client, server, user, values)
            for reader in readers.values():
                received = [e.json() for e in await read_data(reader, 15)]
                assert sorted(received) == sorted(f"{i}:{n}" for i in range(3) for n in range(5))
        after = [await feed_messages(client, server) for server in apps]
    # 4 users x 15 events each: exactly its own share, not the 12 users' 180.
    assert [a - b for a, b in zip(after, before, strict=True)] == [60, 60, 60]


@ON_ENGINE_AND_CLUSTER
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
    assert len({e.id for e in seen + rest}) == 20


@pytest.mark.parametrize("backend", ["engine"], indirect=True)
@CLIENT_ON_ASYNCIO
async def test_round_robin_relay_many_reconnects_lose_and_duplicate_nothing(apps: list[Server]) -> None:
    # Each connection goes to the next process; on each one, a publish is
    # fired at the next process too, so all three publish while the client
    # hangs up after every event and resumes with Last-Event-ID.
    channel = unique("relay")
    reconnects = int(os.environ.get("EVENTSTREAM_RELAY_RECONNECTS", "1000"))
    got: list[str] = []
    seqs: list[int] = []
    resets = 0
    with relay([server.port for server in apps]) as balancer:
        url = f"http://127.0.0.1:{balancer.port}/events/{channel}"
        limits = httpx.Limits(max_keepalive_connections=0)  # a new TCP connection, so the next process
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            with anyio.fail_after(600):
                last_id: str | None = None
                async with anyio.create_task_group() as tg:
                    for n in range(reconnects + 1):
                        headers = {"last-event-id": last_id} if last_id else {}
                        async with open_events(client, url, headers=headers) as reader:
                            # Subscribed once stream-open arrives: then fire the next
                            # publish (at the next process), so even the first
                            # connection, which has no Last-Event-ID, cannot miss it.
                            assert (await reader.next_not_keep_alive()).event == "stream-open"
                            if n < reconnects:
                                server = apps[n % 3]
                                values = [f"{server.kind}:{n}"]
                                tg.start_soon(publish_values, client, server, channel, values)
                            # One event per connection; the last one reads to the end.
                            wanted = 1 if n < reconnects else reconnects - len(got)
                            while wanted > 0:
                                event = await reader.next_not_keep_alive()
                                if event.event == "stream-reset":
                                    resets += 1
                                elif event.event is None:
                                    got.append(event.json())
                                    last_id = str(event.id)
                                    seqs.append(int(last_id.rsplit("-", 1)[1]))
                                    wanted -= 1
    assert resets == 0
    assert len(got) == reconnects
    assert sorted(got, key=lambda v: int(v.rsplit(":", 1)[1])) == [
        f"{apps[n % 3].kind}:{n}" for n in range(reconnects)
    ], "lost or duplicated events"
    assert seqs == list(range(1, reconnects + 1)), "out of order"


async def test_every_process_restarted_clients_resume_without_reset(
    engine: RedisEngine, log_dir: Path
) -> None:
    channel = unique("rolling")
    prefix = unique("restart") + ":"
    async with httpx.AsyncClient(timeout=30) as client:
        with anyio.fail_after(120):
            with run_apps(engine, log_dir, prefix) as servers:
                async with open_events(client, f"{servers[0].base_url}/events/{channel}") as reader:
                    await wait_until(lambda: has_subscriber(client, servers[0], channel))
                    await publish_values(client, servers[1], channel, list(range(5)))
                    seen = await read_data(reader, 5)
            # Every app process is gone; something else publishes meanwhile.
            async with Publisher(broker=RedisBroker(engine.url, key_prefix=prefix)) as publisher:
                for n in range(5, 8):
                    await publisher.publish_event(channel, {"data": n})
            with run_apps(engine, log_dir, prefix) as servers:
                await publish_values(client, servers[2], channel, [8, 9])
                headers = {"last-event-id": str(seen[-1].id)}
                async with open_events(
                    client, f"{servers[1].base_url}/events/{channel}", headers=headers
                ) as reader:
                    rest = await read_data(reader, 5)
    assert [e.json() for e in seen + rest] == list(range(10))


@CLIENT_ON_ASYNCIO
async def test_kill_9_of_one_process_its_clients_lose_nothing(engine: RedisEngine, log_dir: Path) -> None:
    channel = unique("kill")
    prefix = unique("kill") + ":"
    got: list[Any] = []
    async with httpx.AsyncClient(timeout=30) as client:
        with anyio.fail_after(120), run_apps(engine, log_dir, prefix) as servers:
            # uvicorn runs in one process (hypercorn's default is a supervisor
            # and a worker: killing the supervisor would leave the worker serving).
            victim = next(server for server in servers if server.kind == "uvicorn")
            survivors = [server for server in servers if server is not victim]
            last_id = ""
            async with anyio.create_task_group() as tg:

                async def publish_burst() -> None:
                    for start in range(0, 400, 20):
                        await publish_values(
                            client, survivors[start // 20 % 2], channel, list(range(start, start + 20))
                        )
                        await anyio.sleep(0.005)

                with contextlib.suppress(httpx.HTTPError, EOFError):
                    async with open_events(client, f"{victim.base_url}/events/{channel}") as reader:
                        await wait_until(lambda: has_subscriber(client, victim, channel))
                        tg.start_soon(publish_burst)
                        while len(got) < 100:
                            event = await reader.next_not_keep_alive()
                            if event.event is None:
                                got.append(event.json())
                                last_id = str(event.id)
                        os.kill(victim.process.pid, signal.SIGKILL)
                        while True:  # what was already on its way, until the connection breaks
                            event = await reader.next_not_keep_alive()
                            if event.event is None:
                                got.append(event.json())
                                last_id = str(event.id)
                headers = {"last-event-id": last_id}
                async with open_events(
                    client, f"{survivors[0].base_url}/events/{channel}", headers=headers
                ) as reader:
                    got += [e.json() for e in await read_data(reader, 400 - len(got))]
            stop_process(victim.process)
    assert got == list(range(400))


@CLIENT_ON_ASYNCIO
async def test_uvicorn_workers_share_channels_through_the_engine(engine: RedisEngine, log_dir: Path) -> None:
    channel = unique("chat")
    env = {"REDIS_URL": engine.url}
    with run_server(
        "uvicorn", "examples.raw_asgi:app", env=env, log_dir=log_dir, extra_args=["--workers", "4"]
    ) as server:
        async with httpx.AsyncClient(timeout=30) as client, contextlib.AsyncExitStack() as stack:
            with anyio.fail_after(120):
                readers: list[EventReader] = []
                # Open streams until at least two workers hold some (workers
                # start one by one; the kernel hands connections to any of them).
                while len(workers_holding_connections(server)) < 2:
                    assert len(readers) < 200, "every stream landed on one worker"
                    reader = await stack.enter_async_context(
                        open_events(client, f"{server.base_url}/api/events/{channel}")
                    )
                    assert (await reader.next()).event == "stream-open"
                    readers.append(reader)
                messages = [
                    {"event": "message", "data": {"text": f"m{n}"}, "channel": channel} for n in range(8)
                ]
                for message in messages:
                    response = await client.post(f"{server.base_url}/api/publish", json=message)
                    assert response.status_code == 202, response.text
                received = [[e.json()["text"] for e in await read_data(reader, 8)] for reader in readers]
            holders = workers_holding_connections(server)
    assert all(texts == [f"m{n}" for n in range(8)] for texts in received)
    # The clients were spread over several workers (a message reached clients of each).
    assert len(holders) >= 2, holders


def workers_holding_connections(server: Server) -> dict[int, int]:
    """Established connections to the server's port, per worker process (from /proc)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == server.port and fields[3] == "01":
                    established.add(fields[9])  # the socket's inode
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    holders: dict[int, int] = {}
    for child in map(int, children):
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{child}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        count = len(inodes & established)
        if count:
            holders[child] = count
    return holders


@CLIENT_ON_ASYNCIO
async def test_engine_restarted_mid_burst_with_app_processes(log_dir: Path) -> None:
    # Publishes go to the three processes in turn while the engine is stopped
    # (SIGTERM: it writes its append-only file) and started again. Publishers
    # get errors or succeed; every acknowledged event reaches every client,
    # once, in order, and no stream is reset or closed.
    channel = unique("outage")
    acknowledged: list[int] = []
    refused: list[str] = []
    with run_redis() as own, run_apps(own, log_dir) as servers:
        async with httpx.AsyncClient(timeout=60) as client, contextlib.AsyncExitStack() as stack:
            readers = [
                await stack.enter_async_context(open_events(client, f"{server.base_url}/events/{channel}"))
                for server in servers
            ]
            for server in servers:
                await wait_until(lambda server=server: has_subscriber(client, server, channel))  # type: ignore[misc]
            with anyio.fail_after(180):
                done = anyio.Event()

                async def burst() -> None:
                    n = 0
                    while not done.is_set():
                        server = servers[n % 3]
                        response = await client.post(
                            f"{server.base_url}/publish", json={"channel": channel, "values": [n]}
                        )
                        if response.status_code == 200:
                            acknowledged.append(n)
                        else:
                            assert response.status_code == 503, response.text
                            refused.append(response.text)
                        n += 1

                async with anyio.create_task_group() as tg:
                    tg.start_soon(burst)
                    await wait_until(lambda: _count_at_least(acknowledged, 50), timeout=60)
                    await anyio.to_thread.run_sync(own.stop)
                    before = len(acknowledged)
                    await anyio.to_thread.run_sync(own.start)
                    await wait_until(lambda: _count_at_least(acknowledged, before + 50), timeout=60)
                    done.set()
                await publish_values(client, servers[0], channel, ["end"])
                for reader in readers:
                    values: list[Any] = []
                    seqs: list[int] = []
                    while not values or values[-1] != "end":
                        event = await reader.next_not_keep_alive()
                        assert event.event not in ("stream-reset", "stream-error"), event
                        if event.event is None:
                            values.append(event.json())
                            seqs.append(int(str(event.id).rsplit("-", 1)[1]))
                    assert len(values) == len(set(values)), "duplicates"
                    assert set(acknowledged) <= set(values), "an acknowledged event is missing"
                    assert seqs == sorted(seqs)
    for text in refused:
        assert f"127.0.0.1:{own.port}" in text


async def _count_at_least(items: list[int], count: int) -> bool:
    return len(items) >= count
