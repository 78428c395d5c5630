"""A private Redis Cluster for tests: its own redis-server processes, ports and folders.

Debian's ``redis-server`` (7.0) runs ``primaries * (1 + replicas_per_primary)`` times (6 by
default) on 127.0.0.1, each node with a free client port, a free cluster-bus port of its own
(``--cluster-port``: port + 10000 can pass 65535) and its own folder (``nodes.conf``, the
append-only file, ``redis.log``); ``--cluster-node-timeout 2000``, ``--appendonly yes``, no RDB
snapshots, ``--repl-diskless-sync-delay 0`` (else the replicas' first sync waits 5 s).
``redis-cli --cluster create`` joins them. The cluster is healthy when every live node says
``cluster_state:ok``, all see the same slot owners and every node as it sees itself (a primary
ignores a manual failover asked by a replica it does not know as its own yet), and every node
that owns no slot is a replica with ``master_link_status:up``. At the end every process is
SIGKILLed by PID and the folder removed. A system instance is never used.

The nodes (:class:`ClusterNode`) are in :mod:`tests.support.redis_cluster_node`. The operations
poll conditions every 20 ms under a deadline and raise ``TimeoutError`` (with each
node's state and log tail) when it passes; an error reply raises :class:`ReplyError`. They
block: an async test runs them in a thread.

Timings seen on 2 cores (Redis 7.0.15):

- start: healthy 2.2-3.0 s after the first redis-server starts (``redis-cli --cluster create``
  takes 1-2 s of it, polling in 1 s steps);
- :meth:`RedisCluster.failover`: 0.7-1.0 s; the replica owns the slot within some 20 ms, the rest
  is gossip until every node sees the old primary as a replica;
- :meth:`RedisCluster.kill_primary` (SIGKILL): 3.7-4.1 s (the 2 s node timeout, the election);
- :meth:`RedisCluster.restart`: a killed primary is a synced replica of its successor and seen so
  by all 0.1-1.0 s after it starts; a replica stopped a moment: 0.03 s;
- :meth:`RedisCluster.migrate_slot` of a slot holding 250 keys (3 MIGRATE chunks): 0.03-0.06 s;
- tests/e2e/test_redis_cluster_support.py (13 tests, 2 clusters started): 15.6-18.2 s.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .redis_cluster_node import ClusterNode, ReplyError, SeenNode, free_ports
from .redis_engine import require_redis

__all__ = ["ClusterNode", "RedisCluster", "ReplyError", "SeenNode", "run_redis_cluster"]

#: Keys moved by one MIGRATE while a slot is migrated.
MIGRATE_CHUNK = 100


def _slot_map(view: list[SeenNode]) -> tuple[tuple[int, int, int], ...]:
    """(first slot, last slot, owner's port) of every range, as one node sees them."""
    return tuple(sorted((first, last, seen.port) for seen in view for first, last in seen.slots))


def _owner(slot_map: tuple[tuple[int, int, int], ...], slot: int) -> int | None:
    return next((port for first, last, port in slot_map if first <= slot <= last), None)


@dataclass
class RedisCluster:
    """The running cluster; its nodes are started and stopped only through it (or the nodes')."""

    directory: Path
    nodes: list[ClusterNode]
    #: The primaries when the cluster was created (the seed nodes of :attr:`url`).
    seeds: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.seeds)

    def live(self) -> list[ClusterNode]:
        return [node for node in self.nodes if node.running]

    def node_at(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    def command(self, *args: str) -> bytes:
        """Run one command with ``redis-cli -c`` (following MOVED and ASK) from a live node."""
        cli = ["redis-cli", "-c", "-h", "127.0.0.1", "-p", str(self._any().port), "--raw", *args]
        return subprocess.run(cli, capture_output=True, timeout=10, check=True).stdout

    def primaries(self) -> list[ClusterNode]:
        """The live nodes that own slots, as one live node sees them."""
        owners = {port for *_, port in _slot_map(self._any().view())}
        return [node for node in self.live() if node.port in owners]

    def keyslot(self, key: str) -> int:
        slot = self._any().call("CLUSTER", "KEYSLOT", key)
        assert isinstance(slot, int)
        return slot

    def primary_for_slot(self, slot: int, timeout: float = 10.0) -> ClusterNode:
        """The primary that owns ``slot`` once every live node agrees on it."""
        owners: set[int | None] = set()

        def agreed() -> bool:
            owners.clear()
            owners.update(_owner(_slot_map(node.view()), slot) for node in self.live())
            return len(owners) == 1 and None not in owners

        self._wait(agreed, timeout, f"the live nodes agree on the owner of slot {slot}")
        (port,) = owners
        assert port is not None
        return self.node_at(port)

    def replica_of(self, primary: ClusterNode, timeout: float = 10.0) -> ClusterNode:
        """A live replica of ``primary`` that is in sync with it (``master_link_status:up``)."""
        found: list[ClusterNode] = []

        def synced() -> bool:
            found[:] = [node for node in self.live() if node.synced_to() == primary.port]
            return bool(found)

        self._wait(synced, timeout, f"a synced replica of the node on port {primary.port}")
        return found[0]

    def failover(self, slot: int, timeout: float = 20.0) -> ClusterNode:
        """``CLUSTER FAILOVER`` on the replica of the slot's primary; wait until every live node
        sees it own the slot and the cluster is healthy again. Returns the new primary."""
        replica = self.replica_of(self.primary_for_slot(slot))
        replica.call("CLUSTER", "FAILOVER")
        self._wait_owner(slot, replica, timeout)
        self.wait_ok(timeout)
        return replica

    def kill_primary(self, slot: int, timeout: float = 30.0) -> ClusterNode:
        """SIGKILL the slot's primary; wait until its replica owns the slot as seen by every live
        node and the live nodes are healthy. Returns the killed node (see :meth:`restart`)."""
        primary = self.primary_for_slot(slot)
        replica = self.replica_of(primary)
        primary.stop(kill=True)
        self._wait_owner(slot, replica, timeout)
        self.wait_ok(timeout)
        return primary

    def restart(self, node: ClusterNode, timeout: float = 20.0) -> None:
        """Start a stopped node with the same command line; wait until it has rejoined (it agrees
        with the others on the slots, and a node that owns none is a synced replica)."""
        node.start()
        self.wait_ok(timeout)

    def migrate_slot(self, slot: int, to_node: ClusterNode, timeout: float = 20.0) -> None:
        """Move ``slot`` and its keys to the primary ``to_node`` as resharding does: SETSLOT
        IMPORTING on it, MIGRATING on the owner, MIGRATE of the keys by chunks of
        :data:`MIGRATE_CHUNK`, then SETSLOT NODE on both and every other primary; wait until
        every live node sees ``to_node`` own it. ``to_node`` must be a primary (else
        :class:`ReplyError`)."""
        source = self.primary_for_slot(slot)
        if source is to_node:
            return
        others = {self.node_at(port) for *_, port in _slot_map(source.view())} - {source, to_node}
        to_node.call("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
        source.call("CLUSTER", "SETSLOT", slot, "MIGRATING", to_node.node_id)
        deadline = time.monotonic() + timeout
        while keys := source.call("CLUSTER", "GETKEYSINSLOT", slot, MIGRATE_CHUNK):
            assert isinstance(keys, list)
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} still holds keys after {timeout} s")
            names = [key for key in keys if isinstance(key, bytes)]
            source.call("MIGRATE", "127.0.0.1", to_node.port, "", 0, 5000, "KEYS", *names, timeout=10.0)
        for node in [to_node, source, *others]:
            node.call("CLUSTER", "SETSLOT", slot, "NODE", to_node.node_id)
        self._wait_owner(slot, to_node, timeout)
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until the live nodes are healthy: each says ``cluster_state:ok``, all see the same
        owners of the slots and no live node as failing, and every live node that owns no slot is a
        replica with ``master_link_status:up``."""
        self._wait(self._healthy, timeout, "the cluster is healthy")

    def _healthy(self) -> bool:
        live = self.live()
        if any(node.info("cluster").get("cluster_state") != "ok" for node in live):
            return False
        views = [node.view() for node in live]
        maps = {_slot_map(view) for view in views}
        # Each live node as it sees itself: the others must see it alike (a primary ignores a
        # manual failover asked by a replica it does not know as its own yet) and not failing.
        selves = {seen.port: seen.primary_id for view in views for seen in view if "myself" in seen.flags}
        if len(maps) != 1 or any(
            seen.port in selves and (seen.flags & {"fail", "fail?"} or seen.primary_id != selves[seen.port])
            for view in views
            for seen in view
        ):
            return False
        owners = {port for *_, port in maps.pop()}
        return all(node.port in owners or node.synced_to() in owners for node in live)

    def _wait_owner(self, slot: int, owner: ClusterNode, timeout: float) -> None:
        def owns() -> bool:
            return all(_owner(_slot_map(node.view()), slot) == owner.port for node in self.live())

        self._wait(owns, timeout, f"every live node sees the node on port {owner.port} own slot {slot}")

    def _any(self) -> ClusterNode:
        for node in self.live():
            if node.ping():
                return node
        raise RuntimeError("no node of the cluster answers")

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ReplyError, KeyError, StopIteration):
                if condition():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not seen within {timeout} s: {what}\n{self.describe()}")
            time.sleep(0.02)  # polling a condition under a deadline

    def describe(self) -> str:
        """Each node's state and the end of its log (for failure messages)."""
        parts = []
        for node in self.nodes:
            state = node.info("cluster").get("cluster_state"), node.info("replication").get("role")
            tail = "\n    ".join(node.log().splitlines()[-5:])
            parts.append(f"node {node.port} running={node.running} state={state}:\n    {tail}")
        return "\n".join(parts)


@contextlib.contextmanager
def run_redis_cluster(
    *, primaries: int = 3, replicas_per_primary: int = 1, options: tuple[str, ...] = (), check: bool = True
) -> Iterator[RedisCluster]:
    """Start a private cluster in a temporary folder; SIGKILL every node and remove the folder.

    ``options``: more redis-server options for every node, e.g. ``("--appendfsync", "always")``.
    ``check``: skip (or fail under CI) the calling test when the engine or the client is missing.
    Raises ``RuntimeError`` when the nodes do not start (3 tries with other ports) and
    ``TimeoutError`` when the cluster is not healthy 30 s after ``redis-cli --cluster create``.
    """
    if check:
        require_redis()
    count = primaries * (1 + replicas_per_primary)
    with tempfile.TemporaryDirectory(prefix="eventstream-redis-cluster-") as directory:
        nodes: list[ClusterNode] = []
        try:
            for attempt in range(3):
                ports = free_ports(2 * count)
                nodes = [
                    ClusterNode(Path(directory) / f"{attempt}-{port}", port, bus_port, options)
                    for port, bus_port in zip(ports[:count], ports[count:], strict=True)
                ]
                try:
                    for node in nodes:
                        node.start()
                    break
                except RuntimeError:
                    for node in nodes:  # another process took a port: try others
                        node.stop(kill=True)
            else:
                raise RuntimeError("the cluster's nodes did not start in 3 tries")
            create = [
                "redis-cli", "--cluster", "create", *(node.address for node in nodes),
                "--cluster-replicas", str(replicas_per_primary), "--cluster-yes",
            ]  # fmt: skip
            created = subprocess.run(create, capture_output=True, timeout=60)
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout.decode()}")
            cluster = RedisCluster(Path(directory), nodes)
            cluster.wait_ok()
            cluster.seeds = cluster.primaries()
            yield cluster
        finally:
            for node in nodes:
                node.stop(kill=True)
