"""The tests' private Redis Cluster (tests/support/redis_cluster.py), checked against itself.

Through valkey-glide's cluster client, on asyncio and trio: keys of one hash tag share a slot
and its primary; a sharded publish reaches a sharded subscriber; a failover, a killed primary,
a migrated slot and a restarted node each leave the cluster healthy with the data where the
fixture says it is. The tests share the module's cluster and leave it healthy (a killed node is
restarted); the cluster's own start and stop are checked on one of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from ..support.redis_cluster import RedisCluster, ReplyError, run_redis_cluster
from ..support.servers import _accepting


@contextlib.asynccontextmanager
async def cluster_client(cluster: RedisCluster) -> AsyncIterator[Any]:
    """A glide cluster client of the test's own, seeded with every live node."""
    from glide import GlideClusterClient, GlideClusterClientConfiguration, NodeAddress

    seeds = [NodeAddress("127.0.0.1", node.port) for node in cluster.live()]
    client = await GlideClusterClient.create(GlideClusterClientConfiguration(seeds, request_timeout=2000))
    try:
        yield client
    finally:
        await client.close()


def numbered(tag: str, count: int) -> dict[str, str]:
    """``count`` keys of the hash tag ``tag`` and their values."""
    return {f"{{{tag}}}:{n}": f"value {n}" for n in range(count)}


def mset(keys: dict[str, str]) -> list[str]:
    """MSET of ``keys``, which the server refuses (CROSSSLOT) unless they share a slot."""
    return ["MSET", *(item for pair in keys.items() for item in pair)]


@pytest.mark.anyio
async def test_keys_of_one_hash_tag_land_on_one_slot_of_one_primary(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    keys = numbered(f"{prefix}tag", 3)
    slot = redis_cluster.keyslot(f"{prefix}tag")
    # Only the part in braces is hashed.
    assert [redis_cluster.keyslot(key) for key in keys] == [slot] * 3
    async with cluster_client(redis_cluster) as client:
        assert await client.custom_command(mset(keys)) in ("OK", b"OK")
        assert await client.mget(list(keys)) == [value.encode() for value in keys.values()]
    owner = redis_cluster.primary_for_slot(slot)
    assert owner.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 3
    others = [node for node in redis_cluster.primaries() if node is not owner]
    assert len(others) == 2
    for node in others:
        with pytest.raises(ReplyError, match=f"^MOVED {slot} {owner.address}$"):
            node.call("GET", next(iter(keys)))


@pytest.mark.anyio
async def test_spublish_reaches_a_sharded_subscriber_on_the_slots_primary(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    channel = f"{{{prefix}ch}}:feed"
    owner = redis_cluster.primary_for_slot(redis_cluster.keyslot(channel))
    async with cluster_client(redis_cluster) as subscriber, cluster_client(redis_cluster) as publisher:
        await subscriber.ssubscribe({channel}, timeout_ms=5000)
        assert owner.call("PUBSUB", "SHARDNUMSUB", channel) == [channel.encode(), 1]
        assert await publisher.publish("hello", channel, sharded=True) == 1
        with anyio.fail_after(5):
            message = await subscriber.get_pubsub_message()
    assert (message.message, message.channel) == (b"hello", channel.encode())


@pytest.mark.anyio
async def test_failover_moves_the_slot_to_the_replica_and_the_data_survives(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    keys = numbered(f"{prefix}failover", 10)
    slot = redis_cluster.keyslot(f"{prefix}failover")
    before = redis_cluster.primary_for_slot(slot)
    replica = redis_cluster.replica_of(before)
    async with cluster_client(redis_cluster) as client:
        await client.custom_command(mset(keys))
        promoted = await anyio.to_thread.run_sync(redis_cluster.failover, slot)
        assert promoted is replica
        assert redis_cluster.primary_for_slot(slot) is replica
        assert redis_cluster.replica_of(replica) is before
        assert replica.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 10
        # The client follows the MOVED answers to the new primary.
        with anyio.fail_after(10):
            assert await client.mget(list(keys)) == [value.encode() for value in keys.values()]


@pytest.mark.anyio
async def test_migrate_slot_moves_the_slot_with_its_keys(redis_cluster: RedisCluster, prefix: str) -> None:
    keys = numbered(f"{prefix}migrate", 250)  # more than one MIGRATE chunk
    slot = redis_cluster.keyslot(f"{prefix}migrate")
    source = redis_cluster.primary_for_slot(slot)
    target = next(node for node in redis_cluster.primaries() if node is not source)
    async with cluster_client(redis_cluster) as client:
        await client.custom_command(mset(keys))
        await anyio.to_thread.run_sync(redis_cluster.migrate_slot, slot, target)
        assert redis_cluster.primary_for_slot(slot) is target
        assert target.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 250
        assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        with anyio.fail_after(10):
            assert await client.mget(list(keys)) == [value.encode() for value in keys.values()]


@pytest.mark.anyio
async def test_a_stopped_replica_restarts_as_a_synced_replica(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    keys = numbered(f"{prefix}restart", 20)
    slot = redis_cluster.keyslot(f"{prefix}restart")
    primary = redis_cluster.primary_for_slot(slot)
    replica = redis_cluster.replica_of(primary)
    await anyio.to_thread.run_sync(replica.stop)
    assert not replica.running
    assert not replica.ping()
    async with cluster_client(redis_cluster) as client:
        await client.custom_command(mset(keys))  # while the replica is down
    await anyio.to_thread.run_sync(redis_cluster.restart, replica)
    assert redis_cluster.replica_of(primary) is replica
    assert replica.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 20


@pytest.mark.anyio
async def test_kill_primary_promotes_the_replica_and_acknowledged_writes_survive(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    from glide import SlotKeyRoute, SlotType

    keys = numbered(f"{prefix}kill", 20)
    slot = redis_cluster.keyslot(f"{prefix}kill")
    before = redis_cluster.primary_for_slot(slot)
    replica = redis_cluster.replica_of(before)
    async with cluster_client(redis_cluster) as client:
        await client.custom_command(mset(keys))
        # WAIT answers once the replica has acknowledged every write before it.
        route = SlotKeyRoute(SlotType.PRIMARY, next(iter(keys)))
        assert await client.custom_command(["WAIT", "1", "5000"], route=route) == 1
    killed = await anyio.to_thread.run_sync(redis_cluster.kill_primary, slot)
    assert killed is before
    assert not killed.running
    assert redis_cluster.primary_for_slot(slot) is replica
    # A new client (one connected before the kill takes 15 s or more to follow it).
    async with cluster_client(redis_cluster) as client:
        with anyio.fail_after(10):
            assert await client.mget(list(keys)) == [value.encode() for value in keys.values()]
    # The killed node comes back as the replica of the one that replaced it, with the data.
    await anyio.to_thread.run_sync(redis_cluster.restart, killed)
    assert redis_cluster.replica_of(replica) is killed
    assert killed.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 20


def test_a_cluster_gives_every_node_its_options_and_leaves_nothing_behind() -> None:
    with run_redis_cluster(options=("--appendfsync", "always")) as cluster:
        nodes = list(cluster.nodes)
        assert len(nodes) == 6
        assert len({node.port for node in nodes} | {node.bus_port for node in nodes}) == 12
        assert all(_accepting(node.port) and _accepting(node.bus_port) for node in nodes)
        assert len({node.directory for node in nodes}) == 6
        for node in nodes:
            assert node.directory.parent == cluster.directory
            assert (node.directory / "nodes.conf").is_file()
            assert (node.directory / "appendonlydir").is_dir()
            assert node.command("CONFIG", "GET", "appendfsync").split() == [b"appendfsync", b"always"]
        primaries = cluster.primaries()
        assert len(primaries) == 3
        assert cluster.url == "redis+cluster://" + ",".join(node.address for node in primaries)
        assert sorted(cluster.replica_of(node).port for node in primaries) == sorted(
            node.port for node in nodes if node not in primaries
        )
        # redis-cli -c follows the MOVED answer of whichever node it asked.
        assert cluster.command("SET", "{lifecycle}:k", "v") == b"OK\n"
        assert cluster.command("GET", "{lifecycle}:k") == b"v\n"
        directory = cluster.directory
    assert all(node.process is not None and node.process.poll() is not None for node in nodes)
    assert not any(node.ping() for node in nodes)
    assert not directory.exists()
