"""The broker's own pub/sub connection against a real redis-server and hostile servers (asyncio, trio)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from eventstream import BrokerError
from eventstream._redis._endpoint import FeedEndpoint
from eventstream._redis._feed import FeedInbox
from eventstream._redis._feedconn import FeedConnection

from ..support.helpers import wait_until
from ..support.redis_engine import RedisEngine, run_redis

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def running(
    endpoint: FeedEndpoint, inbox: FeedInbox, *, request_timeout: float = 2.0, idle_seconds: float = 5.0
) -> AsyncIterator[FeedConnection]:
    connection = FeedConnection(
        endpoint, inbox, engine="test", request_timeout=request_timeout, idle_seconds=idle_seconds
    )
    await connection.connect(within=5)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(connection.run)
            yield connection
            tg.cancel_scope.cancel()
    finally:
        await connection.aclose()


def numsub(engine: RedisEngine, channel: str) -> int:
    return int(engine.command("PUBSUB", "NUMSUB", channel).split()[1])


async def publish(engine: RedisEngine, channel: str, data: str) -> None:
    await anyio.to_thread.run_sync(engine.command, "PUBLISH", channel, data)


async def messages(inbox: FeedInbox, count: int) -> list[tuple[bytes, bytes]]:
    taken: list[tuple[bytes, bytes]] = []
    while len(taken) < count:
        await inbox.wait()
        inbox.take_missed()  # (reported until taken: a wait would return at once for ever)
        taken += inbox.take(count - len(taken))
    return taken


async def test_it_subscribes_delivers_in_order_and_unsubscribes(engine: RedisEngine) -> None:
    inbox = FeedInbox()
    with anyio.fail_after(20):
        async with running(FeedEndpoint(host="127.0.0.1", port=engine.port), inbox) as feed:
            await feed.subscribe([b"fc:a", b"fc:b"])
            assert (numsub(engine, "fc:a"), numsub(engine, "fc:b")) == (1, 1)
            for n in range(3):
                await publish(engine, "fc:a", f"a{n}")
            await publish(engine, "fc:b", "b0")
            assert await messages(inbox, 4) == [
                (b"fc:a", b"a0"),
                (b"fc:a", b"a1"),
                (b"fc:a", b"a2"),
                (b"fc:b", b"b0"),
            ]
            await feed.unsubscribe([b"fc:a"])

            async def unsubscribed() -> bool:
                return numsub(engine, "fc:a") == 0

            await wait_until(unsubscribed)
            await publish(engine, "fc:a", "not for us")
            await publish(engine, "fc:b", "b1")
            assert await messages(inbox, 1) == [(b"fc:b", b"b1")]
            assert len(inbox) == 0
            # Followed again right after being given up: subscribed in the end.
            await feed.unsubscribe([b"fc:b"])
            await feed.subscribe([b"fc:b"])
            assert numsub(engine, "fc:b") == 1


async def test_it_connects_again_and_subscribes_again_after_the_engine_restarts(engine: RedisEngine) -> None:
    inbox = FeedInbox()
    with anyio.fail_after(30):
        async with running(FeedEndpoint(host="127.0.0.1", port=engine.port), inbox) as feed:
            await feed.subscribe([b"fc:restart"])
            await anyio.to_thread.run_sync(lambda: engine.stop(kill=True))
            await anyio.to_thread.run_sync(engine.start)

            async def subscribed_again() -> bool:
                return feed.connections == 2 and numsub(engine, "fc:restart") == 1

            await wait_until(subscribed_again, timeout=20)
            # What was published while it was down is reported missing, once.
            await inbox.wait()
            assert inbox.take_missed()
            assert not inbox.take_missed()
            await publish(engine, "fc:restart", "after")
            assert await messages(inbox, 1) == [(b"fc:restart", b"after")]


async def test_an_idle_connection_is_pinged_and_kept(engine: RedisEngine) -> None:
    # PING is answered "+PONG" while nothing is subscribed, ["pong", ""] after.
    inbox = FeedInbox()
    with anyio.fail_after(20):
        async with running(
            FeedEndpoint(host="127.0.0.1", port=engine.port), inbox, idle_seconds=0.05
        ) as feed:

            async def pinged_twice() -> bool:
                clients = engine.command("CLIENT", "LIST").decode()
                return clients.count("cmd=ping") >= 1

            await wait_until(pinged_twice)
            await feed.subscribe([b"fc:idle"])
            with anyio.move_on_after(0.3):  # several idle periods, each answered
                await inbox.wait()
            assert feed.connections == 1
            await publish(engine, "fc:idle", "still here")
            assert await messages(inbox, 1) == [(b"fc:idle", b"still here")]


async def test_a_wrong_password_is_refused_at_once() -> None:
    with run_redis(options=("--requirepass", "right")) as engine:
        connection = FeedConnection(
            FeedEndpoint(host="127.0.0.1", port=engine.port, password="wrong"),
            FeedInbox(),
            engine="test",
            request_timeout=2.0,
        )
        with anyio.fail_after(5), pytest.raises(BrokerError, match="the login was refused: WRONGPASS"):
            await connection.connect(within=60)  # (not tried again for a minute)
        right = FeedConnection(
            FeedEndpoint(host="127.0.0.1", port=engine.port, password="right"),
            FeedInbox(),
            engine="test",
            request_timeout=2.0,
        )
        await right.connect(within=5)
        await right.aclose()


async def test_a_subscribe_the_engine_refuses_raises_its_reason(engine: RedisEngine) -> None:
    engine.command("ACL", "SETUSER", "feeder", "on", ">pw", "&allowed:*", "+@all", "~*")
    inbox = FeedInbox()
    endpoint = FeedEndpoint(host="127.0.0.1", port=engine.port, username="feeder", password="pw")
    with anyio.fail_after(20):
        async with running(endpoint, inbox) as feed:
            with pytest.raises(BrokerError, match="refused the feed's subscribe: NOPERM"):
                await feed.subscribe([b"other:x"])
            assert b"other:x" not in feed.wanted
            await feed.subscribe([b"allowed:x"])  # the connection goes on
            await publish(engine, "allowed:x", "ok")
            assert await messages(inbox, 1) == [(b"allowed:x", b"ok")]


Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@contextlib.asynccontextmanager
async def hostile_server(handler: Handler) -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that runs ``handler`` for each connection; yields its port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield port
        tg.cancel_scope.cancel()


async def test_a_server_that_never_answers_fails_the_subscribe_in_time() -> None:
    async def silent(client: anyio.abc.SocketStream) -> None:
        async with client:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await client.receive()

    with anyio.fail_after(20):
        async with hostile_server(silent) as port:
            inbox = FeedInbox()
            async with running(FeedEndpoint(host="127.0.0.1", port=port), inbox, request_timeout=0.3) as feed:
                started = anyio.current_time()
                with pytest.raises(BrokerError, match=r"not confirmed within 0\.3 s"):
                    await feed.subscribe([b"x"])
                assert anyio.current_time() - started < 2
                await feed.unsubscribe([b"x"])
                assert feed.wanted == {}


@pytest.mark.parametrize(
    "reply",
    [
        b"hello\r\n",  # not RESP
        b"$99999999999\r\n",  # a bulk string past the limit
        b"*3\r\n$7\r\nmessage\r\n$1\r\nx\r\n",  # (then closed: half a reply)
        b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n" * 2,  # a confirmation of no command
    ],
)
async def test_a_server_that_sends_what_is_not_the_feed_is_left_and_connected_again(
    reply: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    accepted = 0

    async def hostile(client: anyio.abc.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        async with client:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                await client.receive()  # the SUBSCRIBE
                await client.send(reply)
                await client.receive()

    with anyio.fail_after(20):
        async with hostile_server(hostile) as port:
            inbox = FeedInbox()
            async with running(FeedEndpoint(host="127.0.0.1", port=port), inbox, request_timeout=0.2) as feed:
                with contextlib.suppress(BrokerError):  # (the last one confirms it, then breaks the rules)
                    await feed.subscribe([b"x"])

                async def connected_again() -> bool:
                    return feed.connections >= 2 and accepted >= 2

                await wait_until(connected_again)
                assert b"x" in feed.wanted  # (made again on each connection until given up)
                assert len(inbox) == 0
    assert "the feed's connection to the engine test was lost" in caplog.text


async def test_an_engine_silent_after_a_ping_is_left_and_connected_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    accepted = 0

    async def silent(client: anyio.abc.SocketStream) -> None:
        nonlocal accepted
        accepted += 1
        async with client:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                while True:
                    await client.receive()  # (the PING too: never answered)

    with anyio.fail_after(20):
        async with hostile_server(silent) as port:
            endpoint = FeedEndpoint(host="127.0.0.1", port=port)
            async with running(endpoint, FeedInbox(), idle_seconds=0.05, request_timeout=0.2) as feed:

                async def connected_again() -> bool:
                    return feed.connections >= 2 and accepted >= 2

                await wait_until(connected_again)
    assert "did not answer the feed's PING within 0.2 s" in caplog.text
