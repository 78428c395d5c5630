"""Counts and presence across processes on a real private redis-server (several brokers in one test).

Each EventStream with its own RedisBroker stands for a process: their parts
add up; one that leaves takes its part with it; one that stops beating
drops out after the expiry; prefixes never see each other; an engine down
is a BrokerError, not a hang. (Real app processes and kill -9:
test_broker_presence_processes.py.)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import anyio
import pytest

from eventstream import BrokerError, EventStream, PresenceMember, RedisBroker
from eventstream.auth import JWTAuthorizer
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import wait_until
from ..support.redis_engine import RedisEngine, run_redis
from ..support.tokens import AUDIENCE, ISSUER, SECRET, hs256

pytestmark = pytest.mark.anyio

AUTH = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["room-*"])


def bearer(sub: str) -> dict[str, str]:
    return {"authorization": f"Bearer {hs256(sub=sub)}"}


def app(
    url: str, prefix: str, *, interval: float = 0.1, expiry: float = 0.5, authorize: JWTAuthorizer = AUTH
) -> EventStream:
    broker = RedisBroker(url, key_prefix=prefix, heartbeat_interval=interval, heartbeat_expiry=expiry)
    return EventStream(broker=broker, authorize=authorize, presence=True, keep_alive_interval=None)


@contextlib.asynccontextmanager
async def streams(*opened: tuple[EventStream, str, str]) -> AsyncIterator[None]:
    """Open each (stream, channel, identity) and hold it."""
    async with contextlib.AsyncExitStack() as stack:
        for stream, channel, who in opened:
            response = await stack.enter_async_context(
                open_stream(stream(channel), f"/{channel}", headers=bearer(who))
            )
            assert response.status == 200
        yield


async def test_counts_and_presence_add_up_across_brokers(engine: RedisEngine, prefix: str) -> None:
    a, b, c = (app(engine.url, prefix) for _ in range(3))
    expected = [PresenceMember("ann", 2), PresenceMember("bob", 1), PresenceMember("cy", 1)]
    with anyio.fail_after(30):
        async with a, b, c:
            async with streams(
                (a, "room-1", "ann"), (b, "room-1", "ann"), (b, "room-1", "bob"), (c, "room-1", "cy"),
                (c, "room-2", "cy"),
            ):  # fmt: skip

                async def everyone_sees_it() -> bool:
                    for s in (a, b, c):
                        if await s.presence("room-1") != expected:
                            return False
                        counts = [await s.subscriber_count_all(ch) for ch in ("room-1", "room-2", None)]
                        if counts != [4, 1, 5]:
                            return False
                    return True

                await wait_until(everyone_sees_it)
                assert await a.presence("room-2") == [PresenceMember("cy", 1)]
                assert await a.subscriber_count_all("room-3") == 0
                assert a.subscriber_count("room-1") == 1  # the synchronous count stays this process's
            # The streams ended: each process's next beat says so.
            await wait_until(lambda: _all_zero((a, b, c)))
            assert await b.presence("room-1") == []


async def _all_zero(apps: tuple[EventStream, ...]) -> bool:
    for s in apps:
        if await s.subscriber_count_all() or await s.presence("room-1"):
            return False
    return True


async def test_a_broker_that_stops_takes_its_part_at_once(engine: RedisEngine, prefix: str) -> None:
    # An expiry far longer than the test: only the clean leave can remove it.
    a = app(engine.url, prefix, interval=0.1, expiry=60)
    b = app(engine.url, prefix, interval=0.1, expiry=60)
    with anyio.fail_after(30):
        async with a:
            async with b, streams((b, "room-1", "bob")):
                await wait_until(lambda: _sees(a, [PresenceMember("bob", 1)]))
            assert await a.presence("room-1") == []  # b left before its stream ended
            assert await a.subscriber_count_all() == 0


async def _sees(stream: EventStream, members: list[PresenceMember], channel: str = "room-1") -> bool:
    return await stream.presence(channel) == members


def engine_ms(engine: RedisEngine) -> int:
    seconds, micros = engine.command("TIME").split()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_process_that_stops_beating_drops_out_after_the_expiry(
    engine: RedisEngine, prefix: str
) -> None:
    a = app(engine.url, prefix, interval=0.1, expiry=1.0)
    with anyio.fail_after(30):
        async with a:
            # A process that beat just now and then died (kill -9): its part, as its beats wrote it.
            engine.command("HSET", f"{prefix}|pr:n:dead", "", "3", "room-1", "3")
            engine.command("HSET", f"{prefix}|pr:m:dead:room-1", "zoe", "3")
            engine.command("SADD", f"{prefix}|pr:c:dead", "room-1")
            engine.command("ZADD", f"{prefix}|pr:live", str(engine_ms(engine)), "dead")
            died = anyio.current_time()
            assert await a.subscriber_count_all("room-1") == 3
            assert await a.presence("room-1") == [PresenceMember("zoe", 3)]
            await wait_until(lambda: _counts(a, "room-1", 0))
            assert anyio.current_time() - died < 1.0 + 0.5  # the expiry (and a little for the polling)
            assert await a.presence("room-1") == []
            # a's next beat deletes the dead one's keys, and leaves a mark that expires in a minute.
            await wait_until(lambda: _no_keys(engine, f"{prefix}|pr:[cmn]:*dead*"))
            assert 0 < int(engine.command("PTTL", f"{prefix}|pr:b:dead")) <= 60_000


async def test_each_member_s_info_crosses_processes(engine: RedisEngine, prefix: str) -> None:
    named = JWTAuthorizer(
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["room-*"], info_claims=["name"]
    )
    a, b = (app(engine.url, prefix, authorize=named) for _ in range(2))

    def as_(sub: str, name: str) -> dict[str, str]:
        return {"authorization": f"Bearer {hs256(sub=sub, name=name)}"}

    with anyio.fail_after(30):
        async with a, b:
            async with open_stream(b("room-1"), headers=as_("ann", "Ann in b")) as in_b:
                assert in_b.status == 200
                await wait_until(lambda: _sees(a, [PresenceMember("ann", 1, {"name": "Ann in b"})]))
                async with open_stream(a("room-1"), headers=as_("ann", "Ann in a")) as in_a:
                    assert in_a.status == 200
                    # Present in both: this process's own stream's info.
                    assert await a.presence("room-1") == [PresenceMember("ann", 2, {"name": "Ann in a"})]
                    await wait_until(lambda: _sees(b, [PresenceMember("ann", 2, {"name": "Ann in b"})]))


async def test_what_the_engine_holds_that_no_process_wrote_is_left_out(
    engine: RedisEngine, prefix: str
) -> None:
    # Another app on the engine (or a hand) wrote into a live process's part: a value that is not a
    # count is left out, and info that is not a JSON object (or nests too deep to decode) is taken
    # as none.
    a = app(engine.url, prefix, interval=0.1, expiry=30.0)
    deep = "3 " + "[" * 100_000
    with anyio.fail_after(30):
        async with a:
            engine.command(
                "HSET",
                f"{prefix}|pr:m:other:room-1",
                "eve",
                "x {",
                "zed",
                "2 [1, 2]",
                "amy",
                "1 {no",
                "deb",
                deep,
            )
            # Counts int() would take, and an identity that is not UTF-8 (the byte 0xfe).
            engine.command("HSET", f"{prefix}|pr:m:other:room-1", "neg", "-5", "und", "1_000")
            engine.command("HSET", f"{prefix}|pr:m:other:room-1", "spc", " 7", "nul", "0", "\udcfe", "1")
            engine.command("HSET", f"{prefix}|pr:n:other", "room-1", "abc", "", "-4")
            engine.command("ZADD", f"{prefix}|pr:live", str(engine_ms(engine)), "other")
            expected = [PresenceMember("amy", 1), PresenceMember("deb", 3), PresenceMember("zed", 2)]
            assert await a.presence("room-1") == expected
            assert await a.subscriber_count_all("room-1") == 0
            assert await a.subscriber_count_all() == 0


async def test_counts_alone_that_no_process_wrote_are_read_one_by_one(
    engine: RedisEngine, prefix: str
) -> None:
    # Every value a count alone (the usual answer, read without a loop in Python), but one with a
    # leading 0, or an identity that is not UTF-8: each is read as the values with info are.
    a = app(engine.url, prefix, interval=0.1, expiry=30.0)
    with anyio.fail_after(30):
        async with a:
            key = f"{prefix}|pr:m:other:room-1"
            engine.command("ZADD", f"{prefix}|pr:live", str(engine_ms(engine)), "other")
            engine.command("HSET", key, "ok", "3", "two", "12")
            assert await a.presence("room-1") == [PresenceMember("ok", 3), PresenceMember("two", 12)]
            engine.command("HSET", key, "lead", "02")
            expected = [PresenceMember("lead", 2), PresenceMember("ok", 3), PresenceMember("two", 12)]
            assert await a.presence("room-1") == expected
            engine.command("HDEL", key, "lead")
            engine.command("HSET", key, "\udcfe", "1")
            assert await a.presence("room-1") == expected[1:]


async def test_a_dead_process_whose_keys_another_app_wrote_is_still_buried(
    engine: RedisEngine, prefix: str
) -> None:
    # Two dead processes as no process of this library leaves them: one's index of channels is
    # not a set (every beat failed on it: the live processes then expired each other), the
    # other's channel name is not UTF-8 (its leave event ended the broker of the process that
    # buried it). Both are deleted, and the live processes go on seeing each other.
    a, b = (app(engine.url, prefix, interval=0.1, expiry=1.0, authorize=WATCHING) for _ in range(2))
    with anyio.fail_after(30):
        async with a, b, streams((b, "room-1", "bob")):
            await wait_until(lambda: _sees(a, [PresenceMember("bob", 1)]))
            base = f"{prefix}|pr:"
            engine.command("SET", f"{base}c:wrong", "not a set")
            engine.command("SADD", f"{base}c:bytes", "\udcff")
            engine.command("HSET", f"{base}m:bytes:\udcff", "zoe", "1")
            engine.command("ZADD", f"{base}live", "1", "wrong", "1", "bytes")

            async def buried() -> bool:  # (but for their marks, b:wrong and b:bytes)
                return (
                    engine.command("KEYS", f"{base}[cmn]:wrong*").split() == []
                    and engine.command("KEYS", f"{base}[cmn]:bytes*").split() == []
                    and engine.command("ZCARD", f"{base}live").split() == [b"2"]
                )

            await wait_until(buried)
            since = engine_ms(engine)

            async def beating_on() -> bool:  # both beat for longer than the expiry since
                scores = engine.command("ZRANGE", f"{base}live", "0", "-1", "WITHSCORES").split()[1::2]
                return len(scores) == 2 and all(int(score) > since + 1000 for score in scores)

            await wait_until(beating_on)
            assert await a.presence("room-1") == [PresenceMember("bob", 1)]
            assert await a.subscriber_count_all("room-1") == 1


async def _counts(stream: EventStream, channel: str, n: int) -> bool:
    return await stream.subscriber_count_all(channel) == n


async def _no_keys(engine: RedisEngine, pattern: str) -> bool:
    return engine.command("KEYS", pattern).split() == []


async def test_a_process_whose_part_the_engine_lost_writes_it_again(engine: RedisEngine, prefix: str) -> None:
    a = app(engine.url, prefix)
    b = app(engine.url, prefix)
    with anyio.fail_after(30):
        async with a, b, streams((b, "room-1", "bob")):
            await wait_until(lambda: _sees(a, [PresenceMember("bob", 1)]))
            engine.command("FLUSHDB")  # the engine restarted empty
            assert await a.presence("room-1") == []
            await wait_until(lambda: _sees(a, [PresenceMember("bob", 1)]))
            assert await a.subscriber_count_all() == 1


async def test_two_prefixes_never_see_each_other(engine: RedisEngine, prefix: str) -> None:
    a = app(engine.url, f"{prefix}one:")
    b = app(engine.url, f"{prefix}one")  # a prefix of the other one's
    with anyio.fail_after(30):
        async with a, b, streams((a, "room-1", "ann"), (a, "room-1", "bob")):
            await wait_until(lambda: _sees(a, [PresenceMember("ann", 1), PresenceMember("bob", 1)]))
            async with streams((b, "room-1", "cy")):
                assert await b.presence("room-1") == [PresenceMember("cy", 1)]
                assert await b.subscriber_count_all("room-1") == 1
                assert await b.subscriber_count_all() == 1
                assert await a.subscriber_count_all("room-1") == 2
                assert [m.identity for m in await a.presence("room-1")] == ["ann", "bob"]
    # Both left cleanly: nothing of theirs stays in the engine.
    assert engine.command("KEYS", f"{prefix}*|pr:*").split() == []


async def test_an_engine_down_is_a_broker_error_not_a_hang() -> None:
    with run_redis() as engine:
        stream = app(engine.url, "down:")
        with anyio.fail_after(30):
            async with stream:
                assert await stream.subscriber_count_all("room-1") == 0
                engine.stop(kill=True)
                with pytest.raises(BrokerError):
                    await stream.subscriber_count_all("room-1")
                with pytest.raises(BrokerError):
                    await stream.presence("room-1")


@pytest.mark.parametrize(
    ("interval", "expiry"),
    [(0, 15), (-1, 15), (5, float("inf")), (float("nan"), 15), (5, 9.9)],
)
def test_heartbeat_options_are_checked(interval: float, expiry: float) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        RedisBroker("redis://127.0.0.1:6379", heartbeat_interval=interval, heartbeat_expiry=expiry)


WATCHING = JWTAuthorizer(
    secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["room-*", "presence:room-*"]
)


async def _announcement(page: StreamResponse) -> tuple[str | None, str]:
    # The next join or leave a page gets: (event, identity).
    while True:
        event = await page.receive_event()
        if event.event in ("join", "leave"):
            return event.event, json.loads(event.text or "")["identity"]


async def test_join_and_leave_events_are_per_process_and_reach_every_process(
    engine: RedisEngine, prefix: str
) -> None:
    # The documented rule: each process announces its own first and last stream of an identity;
    # a page counting joins minus leaves per identity knows in how many processes it is present.
    a, b = (app(engine.url, prefix, authorize=WATCHING) for _ in range(2))
    with anyio.fail_after(30):
        async with a, b:
            async with open_stream(a("presence:room-1"), headers=bearer("page")) as page:
                assert page.status == 200
                async with streams((b, "room-1", "ann")):  # another process: its join reaches this page
                    assert await _announcement(page) == ("join", "ann")
                    async with streams((a, "room-1", "ann")):  # present in a second process: a second join
                        assert await _announcement(page) == ("join", "ann")
                    assert await _announcement(page) == ("leave", "ann")
                    await wait_until(lambda: _sees(a, [PresenceMember("ann", 1)]))  # still present in b
                assert await _announcement(page) == ("leave", "ann")
                await wait_until(lambda: _sees(a, []))


async def test_the_members_of_a_process_that_died_get_their_leave_events_once(
    engine: RedisEngine, prefix: str
) -> None:
    a, b = (app(engine.url, prefix, interval=0.1, expiry=1.0, authorize=WATCHING) for _ in range(2))
    with anyio.fail_after(30):
        async with a, b:
            async with open_stream(a("presence:room-1"), headers=bearer("page")) as page:
                assert page.status == 200
                # A process that beat just now and then died (kill -9): its part, as its beats wrote it.
                engine.command("HSET", f"{prefix}|pr:n:dead", "", "2", "room-1", "2")
                engine.command("HSET", f"{prefix}|pr:m:dead:room-1", "zoe", "1", "yan", "1")
                engine.command("SADD", f"{prefix}|pr:c:dead", "room-1")
                engine.command("ZADD", f"{prefix}|pr:live", str(engine_ms(engine)), "dead")
                assert [m.identity for m in await a.presence("room-1")] == ["yan", "zoe"]
                # One beat (of a or of b) deletes it and announces its members' leaves, once each.
                got = {await _announcement(page), await _announcement(page)}
                assert got == {("leave", "zoe"), ("leave", "yan")}
                async with streams((b, "room-1", "ann")):  # the next announcement is ann's: no third leave
                    assert await _announcement(page) == ("join", "ann")
                assert await _announcement(page) == ("leave", "ann")

                async def nobody() -> bool:  # (b's next beat takes ann out of the engine)
                    return await a.presence("room-1") == []

                await wait_until(nobody)


async def test_a_process_that_closes_announces_its_members_leaves(engine: RedisEngine, prefix: str) -> None:
    # aclose(), as SIGTERM does: every stream ends, and the process takes its part out of the
    # engine at once, so no other process would ever announce its members' leaves: it does.
    a, b = (app(engine.url, prefix, authorize=WATCHING) for _ in range(2))
    with anyio.fail_after(30):
        async with b, open_stream(b("presence:room-1"), headers=bearer("page")) as page:
            assert page.status == 200
            async with a:
                async with open_stream(a("room-1"), "/room-1", headers=bearer("ann")) as ann:
                    assert ann.status == 200
                    assert await _announcement(page) == ("join", "ann")
                    await a.aclose()
                    await ann.read()  # to the end of its response
            assert await _announcement(page) == ("leave", "ann")
            assert await b.presence("room-1") == []


async def test_a_process_taken_for_dead_after_a_stall_announces_its_members_again(
    engine: RedisEngine, prefix: str
) -> None:
    # A process whose beats stop reaching the engine for longer than the expiry (a long pause,
    # a partition) is taken for dead: its members' leaves go out. When it beats again, it
    # learns so and announces their joins again: a page counting joins minus leaves still
    # counts ann while her stream is open, and not after.
    a, b = (app(engine.url, prefix, interval=0.1, expiry=1.0, authorize=WATCHING) for _ in range(2))
    base = f"{prefix}|pr:"
    with anyio.fail_after(30):
        async with a, b, open_stream(b("presence:room-1"), headers=bearer("page")) as page:
            assert page.status == 200
            async with open_stream(a("room-1"), "/room-1", headers=bearer("ann")) as ann:
                assert ann.status == 200
                assert await _announcement(page) == ("join", "ann")
                await wait_until(lambda: _sees(b, [PresenceMember("ann", 1)]))
                [key] = engine.command("KEYS", f"{base}m:*:room-1").split()
                stalled = key.decode().removeprefix(f"{base}m:").removesuffix(":room-1")  # a's id
                engine.command("ZADD", f"{base}live", "1", stalled)  # its last beat: long ago
                assert await _announcement(page) == ("leave", "ann")
                assert await _announcement(page) == ("join", "ann")
                await wait_until(lambda: _sees(b, [PresenceMember("ann", 1)]))
            assert await _announcement(page) == ("leave", "ann")


async def test_the_leaves_of_a_big_dead_process_all_go_out_once(engine: RedisEngine, prefix: str) -> None:
    # 1,000 members (the most a beat reports is 1,024): their leaves go out together, in the
    # broker's batches, not one round trip after another inside the beat that found them.
    a = app(engine.url, prefix, interval=0.1, expiry=1.0, authorize=WATCHING)
    names = [f"m{n:04}" for n in range(1000)]
    with anyio.fail_after(30):
        async with a, open_stream(a("presence:room-1"), headers=bearer("page")) as page:
            assert page.status == 200
            members = [part for name in names for part in (name, "1")]
            engine.command("HSET", f"{prefix}|pr:m:dead:room-1", *members)
            engine.command("SADD", f"{prefix}|pr:c:dead", "room-1")
            engine.command("ZADD", f"{prefix}|pr:live", "1", "dead")
            got = [await _announcement(page) for _ in names]
    assert sorted(got) == [("leave", name) for name in names]
