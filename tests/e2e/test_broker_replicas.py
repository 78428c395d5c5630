"""Publishes that wait for the engine's replicas (``wait_replicas``), against a real primary and replica.

Both are private redis-servers; the replica follows the primary
(``--replicaof``). To make it stop acknowledging, it is paused (SIGSTOP) and
then let go (SIGCONT), as a replica on a starved or partitioned host would.
On asyncio and trio.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator

import anyio
import pytest

from eventstream import BrokerError, EventStream, RedisBroker, ServerSentEvent

from ..support.helpers import broker_of, wait_until
from ..support.redis_engine import RedisEngine, run_redis
from ..support.reply_cutter import reply_cutter
from .test_broker_retry import publish_sha

pytestmark = pytest.mark.anyio


def _info(engine: RedisEngine, section: str) -> dict[str, str]:
    text = engine.command("INFO", section).decode()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@pytest.fixture(scope="module")
def replicated() -> Iterator[tuple[RedisEngine, RedisEngine]]:
    """A primary and its replica, the replica in step (its link up)."""
    with run_redis() as primary:
        following = ("--replicaof", "127.0.0.1", str(primary.port))
        with run_redis(options=following) as replica:
            deadline = time.monotonic() + 20
            while _info(replica, "replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, replica.log()[-2000:]
                time.sleep(0.02)  # (a poll of the replica's state, under the deadline)
            yield primary, replica


@contextlib.contextmanager
def paused(engine: RedisEngine) -> Iterator[None]:
    """The engine's process stopped (SIGSTOP) in the block, let go (SIGCONT) after it."""
    assert engine.process is not None
    os.kill(engine.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(engine.process.pid, signal.SIGCONT)


def make_stream(engine: RedisEngine, prefix: str, **options: object) -> EventStream:
    return make_stream_at(engine.url, prefix, **options)


def make_stream_at(url: str, prefix: str, **options: object) -> EventStream:
    return EventStream(broker=RedisBroker(url, key_prefix=prefix, **options))  # type: ignore[arg-type]


async def test_a_publish_returns_once_the_replica_acknowledged_it(
    replicated: tuple[RedisEngine, RedisEngine], prefix: str
) -> None:
    primary, replica = replicated
    stream = make_stream(primary, prefix, wait_replicas=1, publish_timeout=20)
    outcome: list[str] = []

    async def publish() -> None:
        outcome.append((await broker_of(stream).publish("news", ServerSentEvent(data="kept"))).id)

    async def waiting_on_the_engine() -> bool:  # (WAIT blocks its client on the primary)
        return _info(primary, "clients").get("blocked_clients") == "1"

    with anyio.fail_after(30):
        async with stream:
            await broker_of(stream).publish("news", ServerSentEvent(data="first"))  # the replica answers
            async with anyio.create_task_group() as tg:
                with paused(replica):
                    tg.start_soon(publish)
                    await wait_until(waiting_on_the_engine)
                    assert not outcome  # the primary has it; the replica did not say so yet
            assert len(outcome) == 1  # returned once the replica was back and acknowledged it
            history = replica.command("XRANGE", f"{prefix}|h:news", "-", "+")
            assert b"kept" in history


async def test_a_publish_retried_on_a_new_connection_still_waits_for_the_replica(
    replicated: tuple[RedisEngine, RedisEngine], prefix: str
) -> None:
    # The publish ran on the primary and its answer was lost with the connection
    # (a relay cuts it): the retry, on a new connection, gets the reply the
    # engine kept, and waits for the replica before it returns, once. (WAIT covers
    # the writes of its own connection, as the engine's documentation says, so the
    # retry writes again. Debian's redis-server 7.0 waits here even without that
    # write: this test passes either way there.)
    primary, replica = replicated
    outcome: list[str] = []
    with reply_cutter(primary.port) as cutter:
        stream = make_stream_at(cutter.url, prefix, wait_replicas=1, publish_timeout=20)

        async def publish() -> None:
            outcome.append((await broker_of(stream).publish("news", ServerSentEvent(data="again"))).id)

        async def the_retry_waits() -> bool:
            return cutter.cut_done.is_set() and _info(primary, "clients").get("blocked_clients") == "1"

        with anyio.fail_after(30):
            async with stream:
                await broker_of(stream).publish("news", ServerSentEvent(data="first"))  # (script loaded)
                async with anyio.create_task_group() as tg:
                    with paused(replica):
                        cutter.arm(publish_sha())
                        tg.start_soon(publish)
                        await wait_until(the_retry_waits)
                        assert not outcome
                assert len(outcome) == 1
    assert primary.command("XLEN", f"{prefix}|h:news").strip() == b"2"  # published once


async def test_a_publish_the_replicas_do_not_acknowledge_in_time_fails_and_says_why(
    replicated: tuple[RedisEngine, RedisEngine], prefix: str
) -> None:
    primary, replica = replicated
    waiting = make_stream(primary, prefix, wait_replicas=1, publish_timeout=1)
    not_waiting = make_stream(primary, prefix)
    with anyio.fail_after(30):
        async with waiting, not_waiting:
            with paused(replica):
                started = time.monotonic()
                with pytest.raises(BrokerError, match="fewer than 1 of its replicas") as raised:
                    await broker_of(waiting).publish("news", ServerSentEvent(data="unconfirmed"))
                took = time.monotonic() - started
                assert raised.value.maybe_published
                # Without wait_replicas, publishing goes on while the replica is away.
                await broker_of(not_waiting).publish("news", ServerSentEvent(data="async"))
            assert took < 1 + 1.5  # publish_timeout, plus a small constant
            # Back, the replica acknowledges again: the same broker publishes.
            await broker_of(waiting).publish("news", ServerSentEvent(data="confirmed"))
        history = primary.command("XRANGE", f"{prefix}|h:news", "-", "+")
        assert b"unconfirmed" in history  # (published on the primary: maybe_published)
