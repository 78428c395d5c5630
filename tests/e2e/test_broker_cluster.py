"""The broker on a real Redis Cluster (3 primaries, 3 replicas, sharded pub/sub), on asyncio and trio.

Each ``EventStream`` stands for a process (its own hub, feed and copy of
history); the cluster is a private one of the test module's
(``tests/support/redis_cluster.py``). What is checked on the engine is read
from its nodes: where each key lives (``CLUSTER KEYSLOT``), who is subscribed
to what (``PUBSUB SHARDNUMSUB``, ``PUBSUB NUMSUB``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from eventstream import BrokerError, EventStream, PresenceMember, RedisBroker, ServerSentEvent
from eventstream._redis._layout import ClusterLayout
from eventstream.auth import JWTAuthorizer
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import follower_of, receive_data, wait_until
from ..support.redis_cluster import RedisCluster
from ..support.redis_cluster_node import ClusterNode
from ..support.tokens import AUDIENCE, ISSUER, SECRET, hs256

pytestmark = pytest.mark.anyio


def make_stream(cluster: RedisCluster, prefix: str, **options: object) -> EventStream:
    return EventStream(broker=RedisBroker(cluster.url, key_prefix=prefix, **options))  # type: ignore[arg-type]


def slot_of(cluster: RedisCluster, prefix: str, channel: str) -> int:
    """The slot of ``channel``'s keys, as the engine computes it."""
    return cluster.keyslot(ClusterLayout(prefix).last(channel))


def keys_of(cluster: RedisCluster, prefix: str) -> list[str]:
    """Every key under ``prefix`` on the cluster's primaries."""
    found: list[str] = []
    for node in cluster.primaries():
        found += node.command("--scan", "--pattern", f"*{prefix}|*").decode().split()
    return found


def seq_of(event: ServerSentEvent) -> int:
    assert event.id is not None
    assert event.id.startswith("c-"), event.id
    return int(event.id[2:])


async def test_each_channel_lives_in_one_slot_and_its_feed_on_its_shard(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    a = make_stream(redis_cluster, prefix)
    channels = [f"user-{n}" for n in range(8)]
    with anyio.fail_after(30):
        async with a, contextlib.AsyncExitStack() as stack:
            for channel in channels:
                await stack.enter_async_context(open_stream(a(channel)))
            await a.wait_subscribers(len(channels))
            for channel in channels:
                await a.publish_event(channel, ServerSentEvent(data=channel))
            layout = ClusterLayout(prefix)
            keys = keys_of(redis_cluster, prefix)
            for channel in channels:
                mine = [key for key in keys if key.endswith(f":{channel}")]
                assert {key.split(prefix, 1)[1].split(":", 1)[0] for key in mine} == {"|last", "|h"}
                slot = slot_of(redis_cluster, prefix, channel)
                assert {redis_cluster.keyslot(key) for key in mine} == {slot}
                feed = layout.feed(channel).decode()
                owner = redis_cluster.primary_for_slot(slot)
                assert owner.command("PUBSUB", "SHARDNUMSUB", feed).split()[1] == b"1"
            # The shards' channels only: no classic pub/sub channel of the broker's anywhere.
            for node in redis_cluster.primaries():
                assert prefix not in node.command("PUBSUB", "CHANNELS", "*").decode()
            assert len({slot_of(redis_cluster, prefix, channel) for channel in channels}) > 1


async def test_two_processes_see_one_order_and_the_same_ids(redis_cluster: RedisCluster, prefix: str) -> None:
    a, b = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)
    with anyio.fail_after(30):
        async with a, b, open_stream(a("room")) as on_a, open_stream(b("room")) as on_b:
            await a.wait_subscribers(1, "room")
            await b.wait_subscribers(1, "room")

            async def publish(stream: EventStream, name: str) -> None:
                for n in range(40):
                    await stream.publish_event("room", ServerSentEvent(data=f"{name}{n}"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish, a, "a")
                tg.start_soon(publish, b, "b")
            seen_a = await receive_data(on_a, 80)
            seen_b = await receive_data(on_b, 80)
    assert [(e.id, e.json()) for e in seen_a] == [(e.id, e.json()) for e in seen_b]
    assert [e.json() for e in seen_a if e.json().startswith("a")] == [f"a{n}" for n in range(40)]
    numbers = [seq_of(e) for e in seen_a]
    assert numbers == list(range(numbers[0], numbers[0] + 80))


async def test_a_channels_first_event_read_from_history_before_its_feed_message(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # On a cluster a channel's first number is the engine's clock, not 1. A
    # catch-up that read the first event before the feed brought it (the periodic
    # check, a gap, a resuming stream) once took nothing in and read again for
    # ever, holding the follower's lock: that process delivered nothing more.
    a, b = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)
    with anyio.fail_after(30):
        async with a, b, open_stream(b("fresh")) as on_b:
            await b.wait_subscribers(1, "fresh")
            follower = follower_of(b)
            async with follower.lock:  # b's feed takes nothing in meanwhile: the catch-up comes first
                await a.publish_event("fresh", ServerSentEvent(data=0))
                with anyio.fail_after(5):
                    await follower.catch_up("fresh", follower.history.last_seq.get("fresh", 0))
            await a.publish_event("fresh", ServerSentEvent(data=1))
            got = await receive_data(on_b, 2)
            await a.publish_event("fresh", ServerSentEvent(data=2))
            got += await receive_data(on_b, 1)
    assert [e.json() for e in got] == [0, 1, 2]  # once each: the feed's late copy of the first is ignored
    assert [seq_of(e) for e in got] == [seq_of(got[0]) + n for n in range(3)]


async def test_a_client_resumes_on_another_process_and_after_a_restart(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    a = make_stream(redis_cluster, prefix)
    with anyio.fail_after(30):
        async with a, open_stream(a("jobs")) as on_a:
            await a.wait_subscribers(1, "jobs")
            for n in range(10):
                await a.publish_event("jobs", ServerSentEvent(data=n))
            seen = await receive_data(on_a, 10)
        # A new process (a restart): the client resumes after the fifth event.
        b = make_stream(redis_cluster, prefix)
        async with b:
            headers = {"last-event-id": str(seen[4].id)}
            async with open_stream(b("jobs"), headers=headers) as on_b:
                rest = await receive_data(on_b, 5)
    assert [(e.id, e.json()) for e in rest] == [(e.id, e.json()) for e in seen[5:]]


async def test_a_shard_that_lost_its_data_ends_the_streams_of_its_channels_only(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # Two channels on two different shards; the first one's shard is flushed
    # (replicated to its replica: the shard lost its data).
    lost, kept = _on_two_shards(redis_cluster, prefix)
    a, b = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)
    with anyio.fail_after(30):
        async with a, b, open_stream(b(lost)) as on_lost, open_stream(b(kept)) as on_kept:
            await b.wait_subscribers(2)
            for channel in (lost, kept):
                for n in range(3):
                    await a.publish_event(channel, ServerSentEvent(data=n))
            before = await receive_data(on_lost, 3)
            await receive_data(on_kept, 3)
            redis_cluster.primary_for_slot(slot_of(redis_cluster, prefix, lost)).command("FLUSHALL")
            published = await a._broker.publish(lost, ServerSentEvent(data="after"))
            # Numbered on from the engine's clock: above every id issued before.
            assert int(published.id[2:]) > seq_of(before[-1])
            await a.publish_event(kept, ServerSentEvent(data="still"))
            # The lost channel's stream ends (its client reconnects and is told to reset) ...
            with anyio.fail_after(10):
                while True:
                    try:
                        await on_lost.receive_event()
                    except anyio.EndOfStream:
                        break
            # ... the other shard's channel goes on.
            assert [e.json() for e in await receive_data(on_kept, 1)] == ["still"]
        headers = {"last-event-id": str(before[-1].id)}
        async with b, open_stream(b(lost), headers=headers) as again:
            events = [await again.receive_event() for _ in range(2)]
    assert [e.event for e in events][:1] == ["stream-open"] or "stream-reset" in [e.event for e in events]
    assert "stream-reset" in [e.event for e in events]


def _on_two_shards(cluster: RedisCluster, prefix: str) -> tuple[str, str]:
    owners: dict[int, str] = {}
    for n in range(100):
        channel = f"shard-{n}"
        port = cluster.primary_for_slot(slot_of(cluster, prefix, channel)).port
        owners.setdefault(port, channel)
        if len(owners) == 2:
            first, second = owners.values()
            return first, second
    raise AssertionError("no two channels on two shards")


@contextlib.asynccontextmanager
async def _publishing(
    stream: EventStream, channel: str, count: int, published: list[str], failed: list[tuple[int, str]]
) -> AsyncIterator[None]:
    """Publish ``count`` events on ``channel`` in the background, one every 5 ms, noting each id."""

    async def run() -> None:
        for n in range(count):
            try:
                published.append((await stream._broker.publish(channel, ServerSentEvent(data=n))).id)
            except BrokerError as exc:
                failed.append((n, str(exc)))
            await anyio.sleep(0.005)  # pacing the burst (a rate, not a wait)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        yield


async def _survives(
    redis_cluster: RedisCluster,
    prefix: str,
    change: Callable[[int], object],
    *,
    count: int = 200,
    **publisher_options: object,
) -> tuple[list[str], list[tuple[int, str]], list[ServerSentEvent]]:
    """Publish a burst on one channel from one process while ``change(slot)`` runs on the
    channel's slot; return the ids published, the events that failed and what the other
    process's subscriber received, after every publish ended."""
    publisher = make_stream(redis_cluster, prefix, publish_timeout=30, **publisher_options)
    reader = make_stream(redis_cluster, prefix, check_interval=0.2)
    published: list[str] = []
    failed: list[tuple[int, str]] = []
    slot = slot_of(redis_cluster, prefix, "busy")
    with anyio.fail_after(90):
        async with publisher, reader, open_stream(reader("busy")) as on_reader:
            await reader.wait_subscribers(1, "busy")
            async with _publishing(publisher, "busy", count, published, failed):
                await wait_until(lambda: _at_least(published, 40), timeout=30)
                await anyio.to_thread.run_sync(change, slot)
            received = await _receive_until(on_reader, published[-1])
    return published, failed, received


async def _at_least(items: list[str], count: int) -> bool:
    return len(items) >= count


async def _receive_until(response: StreamResponse, last_id: str) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while not events or events[-1].id != last_id:
        events += await receive_data(response, 1)
    return events


async def test_a_failover_mid_burst_loses_and_reorders_nothing(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    published, failed, received = await _survives(redis_cluster, prefix, redis_cluster.failover)
    assert not failed
    assert [e.id for e in received] == published
    assert [e.json() for e in received] == list(range(len(published)))


async def test_a_slot_migration_mid_burst_loses_and_reorders_nothing(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    def migrate(slot: int) -> None:
        owner = redis_cluster.primary_for_slot(slot)
        target = next(node for node in redis_cluster.primaries() if node.port != owner.port)
        redis_cluster.migrate_slot(slot, target)

    published, failed, received = await _survives(redis_cluster, prefix, migrate)
    assert not failed
    assert [e.id for e in received] == published
    numbers = [int(event_id[2:]) for event_id in published]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


async def test_the_follower_copies_nothing_it_was_not_asked_for(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # A process with no subscribers takes in no feed message, whatever is published.
    a, idle = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)
    with anyio.fail_after(30):
        async with a, idle, open_stream(a("mine")) as on_a:
            await a.wait_subscribers(1, "mine")
            for n in range(20):
                await idle.publish_event("mine", ServerSentEvent(data=n))
            await receive_data(on_a, 20)
            stats = idle.statistics().broker
            assert stats is not None
            assert (stats.feed_messages, stats.feed_channels) == (0, 0)
            assert not follower_of(idle).loaded


def _wait_replicas_in_step(primary: ClusterNode, timeout: float = 10.0) -> None:
    """Wait until every replica of ``primary`` acknowledged all it wrote (a replica acknowledges
    about once a second); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        info = primary.call("INFO", "replication")
        assert isinstance(info, bytes)
        fields = dict(line.split(":", 1) for line in info.decode().splitlines() if ":" in line)
        written = int(fields["master_repl_offset"])
        replicas = [
            dict(part.split("=", 1) for part in value.split(","))
            for name, value in fields.items()
            if name.startswith("slave") and name[5:].isdigit()
        ]
        if replicas and all(int(replica["offset"]) >= written for replica in replicas):
            return
        assert time.monotonic() < deadline, f"the replicas of {primary.address} are not in step:\n{info!r}"
        time.sleep(0.02)  # (a poll of the engine's state, under the deadline)


async def test_kill_9_of_a_primary_mid_burst_loses_and_reorders_nothing(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # The shard's replica takes over (about 3 s with a node timeout of 2 s); the
    # publishes meanwhile are retried within publish_timeout, and the subscriber's
    # feed comes back on the new primary, its gap filled from history. (Replication is
    # asynchronous: what the replica had not received when its primary died is lost, as
    # the how-to says. So the primary first stops taking writes (CLIENT PAUSE: the publishes
    # in flight wait), and is killed once its replicas hold all it acknowledged: this tests
    # the failover, not how far a replica starved of CPU lags. A WAIT on a connection of its
    # own would not do: it waits only for that connection's writes, and it made none.)
    killed = []

    def kill(slot: int) -> None:
        primary = redis_cluster.primary_for_slot(slot)
        primary.call("CLIENT", "PAUSE", 30_000, "WRITE")
        _wait_replicas_in_step(primary)
        killed.append(redis_cluster.kill_primary(slot))

    started = anyio.current_time()
    try:
        published, failed, received = await _survives(redis_cluster, prefix, kill)
    finally:
        for node in killed:
            redis_cluster.restart(node)
    took = anyio.current_time() - started
    assert not failed, (took, failed[:3], len(published))
    assert [e.id for e in received] == published, took


async def test_kill_9_of_a_primary_loses_nothing_reported_published_with_wait_replicas(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # With wait_replicas=1 a publish returns once the shard's replica has it, so the
    # primary is killed mid-burst as it runs (no pause first, unlike the test above):
    # every event reported published is delivered after the failover, in order. The
    # promoted replica has no replica of its own until the killed node comes back as
    # one: the publish in flight meanwhile waits for it (or, past publish_timeout, fails;
    # it may have reached the subscriber).
    killed = []

    def kill_and_bring_back(slot: int) -> None:
        node = redis_cluster.kill_primary(slot)
        killed.append(node)
        redis_cluster.restart(node)  # (a replica of the new primary now)
        killed.remove(node)

    try:
        published, failed, received = await _survives(
            redis_cluster, prefix, kill_and_bring_back, wait_replicas=1
        )
    finally:
        for node in killed:
            redis_cluster.restart(node)
    ids = [e.id for e in received]
    assert [event_id for event_id in ids if event_id in published] == published
    numbers = [e.json() for e in received]
    assert numbers == sorted(set(numbers))  # in order, once each
    maybe = {n for n, _reason in failed}
    assert all(e.id in published or e.json() in maybe for e in received)
    assert len(failed) <= 1, failed


async def test_counts_and_presence_add_up_across_processes(redis_cluster: RedisCluster, prefix: str) -> None:
    # Counts and presence live under one hash tag (their scripts stay in one slot).
    authorize = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["room-*"])

    def app() -> EventStream:
        broker = RedisBroker(
            redis_cluster.url, key_prefix=prefix, heartbeat_interval=0.1, heartbeat_expiry=0.5
        )
        return EventStream(broker=broker, authorize=authorize, presence=True, keep_alive_interval=None)

    a, b = app(), app()
    expected = [PresenceMember("ann", 2), PresenceMember("bob", 1)]

    async def both_see_it() -> bool:
        for stream in (a, b):
            if (
                await stream.presence("room-1") != expected
                or await stream.subscriber_count_all("room-1") != 3
            ):
                return False
        return True

    with anyio.fail_after(30):
        async with a, b, contextlib.AsyncExitStack() as stack:
            for stream, who in ((a, "ann"), (b, "ann"), (b, "bob")):
                headers = {"authorization": f"Bearer {hs256(sub=who)}"}
                await stack.enter_async_context(open_stream(stream("room-1"), "/room-1", headers=headers))
            await wait_until(both_see_it)
            assert a.subscriber_count("room-1") == 1


async def test_a_primary_that_may_evict_keys_is_refused(redis_cluster: RedisCluster, prefix: str) -> None:
    # Every primary is checked, not just the one the client first reached.
    primary = redis_cluster.primaries()[-1]
    primary.command("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
    try:
        with anyio.fail_after(20), pytest.raises(BrokerError, match="maxmemory-policy is allkeys-lru"):
            async with make_stream(redis_cluster, prefix):
                pass
    finally:
        primary.command("CONFIG", "SET", "maxmemory-policy", "noeviction")


def _script_calls(cluster: RedisCluster) -> int:
    """The publish scripts the primaries ran so far (``INFO commandstats``)."""
    total = 0
    for node in cluster.primaries():
        for name, value in node.info("commandstats").items():
            if name in ("cmdstat_evalsha", "cmdstat_eval"):
                total += int(value.split("calls=", 1)[1].split(",", 1)[0])
    return total


async def test_a_burst_over_many_channels_goes_by_primary_and_survives_a_stale_slot_map(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # Concurrent publishes go in one script per primary (not one per slot); after a slot
    # moved, a script sent by the old map is refused before it writes, and goes again slot
    # by slot: nothing lost, doubled or reordered.
    channels = [f"user-{n}" for n in range(30)]
    a, b = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)

    async def burst(first: int) -> None:
        async def publish(channel: str) -> None:
            for n in range(first, first + 5):
                await a.publish_event(channel, ServerSentEvent(data=n))

        async with anyio.create_task_group() as tg:
            for channel in channels:
                tg.start_soon(publish, channel)

    with anyio.fail_after(60):
        async with a, b, contextlib.AsyncExitStack() as stack:
            readers = [await stack.enter_async_context(open_stream(b(channel))) for channel in channels]
            await b.wait_subscribers(len(channels))
            await a.publish_event(channels[0], ServerSentEvent(data="warm-up"))  # (the slot map is read)
            await receive_data(readers[0], 1)
            before = await anyio.to_thread.run_sync(_script_calls, redis_cluster)
            await burst(0)
            scripts = await anyio.to_thread.run_sync(_script_calls, redis_cluster) - before
            assert scripts < len(channels) * 5 / 3, scripts
            slot = slot_of(redis_cluster, prefix, channels[7])
            owner = redis_cluster.primary_for_slot(slot)
            target = next(node for node in redis_cluster.primaries() if node.port != owner.port)
            await anyio.to_thread.run_sync(redis_cluster.migrate_slot, slot, target)
            await burst(5)
            for reader in readers:
                events = await receive_data(reader, 10)
                assert [e.json() for e in events] == list(range(10))
                numbers = [seq_of(e) for e in events]
                assert numbers == list(range(numbers[0], numbers[0] + 10))


async def test_readiness_and_the_feed_through_a_failover(redis_cluster: RedisCluster, prefix: str) -> None:
    # Ready while every subscription is held; after a failover of the channel's shard the feed
    # holds them again (valkey-glide subscribes on the new primary) and the stream is ready.
    stream = make_stream(redis_cluster, prefix)
    with anyio.fail_after(60):
        async with stream, open_stream(stream("watched")) as response:
            await stream.wait_subscribers(1, "watched")
            readiness = await stream.readiness()
            assert readiness.ready, readiness.checks
            stats = stream.statistics().broker
            assert stats is not None
            assert stats.feed_connected
            assert stats.engine_answering
            await anyio.to_thread.run_sync(redis_cluster.failover, slot_of(redis_cluster, prefix, "watched"))
            await stream.publish_event("watched", ServerSentEvent(data="after"))
            assert [e.json() for e in await receive_data(response, 1)] == ["after"]
            await wait_until(lambda: _ready(stream))


async def _ready(stream: EventStream) -> bool:
    readiness = await stream.readiness()
    return readiness.ready


async def test_a_channel_left_is_unsubscribed_on_its_shard_after_the_linger(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    stream = make_stream(redis_cluster, prefix, feed_linger=0.1, check_interval=0.1)
    feed = ClusterLayout(prefix).feed("passing").decode()
    owner = redis_cluster.primary_for_slot(slot_of(redis_cluster, prefix, "passing"))

    async def subscribers_on_shard(count: int) -> bool:
        reply = await anyio.to_thread.run_sync(owner.command, "PUBSUB", "SHARDNUMSUB", feed)
        return reply.split()[1] == str(count).encode()

    with anyio.fail_after(30):
        async with stream:
            async with open_stream(stream("passing")):
                await stream.wait_subscribers(1, "passing")
                assert await subscribers_on_shard(1)
            await wait_until(lambda: subscribers_on_shard(0))
            stats = stream.statistics().broker
            assert stats is not None
            assert stats.feed_channels == 0
            # Followed again when asked for again, and delivered.
            async with open_stream(stream("passing")) as again:
                await stream.wait_subscribers(1, "passing")
                assert await subscribers_on_shard(1)
                await stream.publish_event("passing", ServerSentEvent(data="back"))
                assert [e.json() for e in await receive_data(again, 1)] == ["back"]


async def test_a_stream_on_many_new_channels_reads_them_by_primary_and_survives_a_stale_slot_map(
    redis_cluster: RedisCluster, prefix: str
) -> None:
    # The first reads of a stream's 32 channels go in one read per primary (not one per slot);
    # after a slot moved, a read sent by the old map is refused (it writes nothing) and goes
    # again slot by slot.
    a, b = make_stream(redis_cluster, prefix), make_stream(redis_cluster, prefix)
    first = [f"room-{n}" for n in range(32)]
    second = [f"hall-{n}" for n in range(32)]

    async def publish_to(channels: list[str], data: str) -> None:
        for channel in channels:
            await a.publish_event(channel, ServerSentEvent(data=f"{data} {channel}"))

    with anyio.fail_after(60):
        async with a, b:
            await publish_to(first + second, "before")
            before = await anyio.to_thread.run_sync(_script_calls, redis_cluster)
            async with open_stream(b(first)) as response:
                await b.wait_subscribers(1, first[-1])
                scripts = await anyio.to_thread.run_sync(_script_calls, redis_cluster) - before
                assert scripts < len(first) / 3, scripts
                await publish_to(first, "live")
                got = await receive_data(response, len(first))
                assert sorted(e.json() for e in got) == sorted(f"live {c}" for c in first)
            slot = slot_of(redis_cluster, prefix, second[3])
            owner = redis_cluster.primary_for_slot(slot)
            target = next(node for node in redis_cluster.primaries() if node.port != owner.port)
            await anyio.to_thread.run_sync(redis_cluster.migrate_slot, slot, target)
            async with open_stream(b(second)) as response:
                await b.wait_subscribers(1, second[-1])
                await publish_to(second, "live")
                got = await receive_data(response, len(second))
                assert sorted(e.json() for e in got) == sorted(f"live {c}" for c in second)
