"""eventstream.auth with the broker: two EventStreams on one private redis-server stand for two
processes. A stream whose token expires on one resumes on the other with a new token and its
last id, and gets what either published meanwhile, from the engine's history."""

from __future__ import annotations

import time
import types

import anyio
import pytest

import eventstream._auth._authorizer
import eventstream._auth._tickets
from eventstream import EventStream, RedisBroker, ServerSentEvent
from eventstream.auth import JWTAuthorizer, RedisTicketLedger
from eventstream.testing import StreamResponse, open_stream

from ..support.redis_engine import RedisEngine, run_redis
from ..support.tokens import AUDIENCE, ISSUER, SECRET, TICKET_SECRET, hs256

pytestmark = pytest.mark.anyio


def make_stream(engine: RedisEngine, prefix: str) -> EventStream:
    broker = RedisBroker(engine.url, key_prefix=prefix, request_timeout=0.5)
    authorizer = JWTAuthorizer(
        secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=0,
        channels=["user-{sub}", "room-*"],
        ticket_secret=TICKET_SECRET,
        ticket_ledger=RedisTicketLedger(broker),
    )
    return EventStream(broker=broker, authorize=authorizer)


def minted(stream: EventStream, user: str) -> str:
    authorizer = stream.authorize
    assert isinstance(authorizer, JWTAuthorizer)
    scope = {"type": "http", "headers": [(b"authorization", f"Bearer {hs256(sub=user)}".encode())]}
    return authorizer.mint_ticket(scope)


async def data_until_expired(response: StreamResponse) -> list[ServerSentEvent]:
    events = []
    while (event := await response.receive_event()).event != "stream-expired":
        if event.event is None:
            events.append(event)
    return events


async def test_an_expired_stream_resumes_on_another_process_with_a_new_token(
    engine: RedisEngine, prefix: str
) -> None:
    first, second = make_stream(engine, prefix), make_stream(engine, prefix)
    channels = ["user-alice", "room-1"]
    with anyio.fail_after(20):
        async with first, second:
            short = {"authorization": f"Bearer {hs256(sub='alice', lifetime=1)}"}
            async with open_stream(first(channels), headers=short) as response:
                assert response.status == 200
                await first.wait_subscribers(1, "room-1")
                await first.publish_event("room-1", {"data": "r1"})
                await second.publish_event("user-alice", {"data": "u1"})
                seen = await data_until_expired(response)
            assert [event.json() for event in seen] == ["r1", "u1"]
            last_id = seen[-1].id
            assert last_id is not None
            await second.publish_event("room-1", {"data": "r2"})
            await first.publish_event("user-alice", {"data": "u2"})
            # The old token is refused; a new one resumes on the other process.
            refused = {"authorization": f"Bearer {hs256(sub='alice', lifetime=-60)}"}
            async with open_stream(second(channels), headers=refused) as response:
                assert response.status == 401
            renewed = {"authorization": f"Bearer {hs256(sub='alice', lifetime=60)}", "last-event-id": last_id}
            async with open_stream(second(channels), headers=renewed) as response:
                assert response.status == 200
                assert (await response.receive_event()).event == "stream-open"
                replay = [(await response.receive_event()).json() for _ in range(2)]
            # Another user's token does not reach alice's channel on either process.
            bob = {"authorization": f"Bearer {hs256(sub='bob')}"}
            async with open_stream(first(channels), headers=bob) as response:
                assert response.status == 403
    assert sorted(replay) == ["r2", "u2"]  # each channel in its order; across them, any


async def test_a_ticket_is_single_use_across_processes(engine: RedisEngine, prefix: str) -> None:
    first, second = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with first, second:
            ticket = minted(first, "alice")
            url = f"/events/user-alice?ticket={ticket}"
            async with open_stream(second("user-alice"), url) as response:
                assert response.status == 200  # minted by one process, used on the other
            for stream in (first, second):
                async with open_stream(stream("user-alice"), url) as response:
                    assert response.status == 401
            keys = engine.command("KEYS", f"{prefix}|ticket:*").split()
            assert len(keys) == 1
            ttl = int(engine.command("PTTL", keys[0].decode()))
            assert 60_000 < ttl <= 90_000  # the engine forgets it 60 s (clock_skew) after the ticket expires
    with pytest.raises(RuntimeError, match="not running"):
        await RedisTicketLedger(RedisBroker(engine.url)).use("n", 0)
    with pytest.raises(TypeError, match="RedisBroker"):
        RedisTicketLedger(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clock_skew"):
        RedisTicketLedger(RedisBroker(engine.url), clock_skew=-1)


async def test_a_used_ticket_stays_used_in_a_process_whose_clock_is_behind_the_engines(
    engine: RedisEngine, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process's clock 45 s behind the engine's: its tickets (30 s) have expired by the engine's
    clock when they are used, and are still valid by this one's. The engine keeps a used one 60 s past
    its expiry (``clock_skew``), so it is still refused the second time."""
    behind = types.SimpleNamespace(time=lambda: time.time() - 45)
    monkeypatch.setattr(eventstream._auth._authorizer, "time", behind)  # minting: the ticket's expiry
    monkeypatch.setattr(eventstream._auth._tickets, "time", behind)  # redeeming: is it unexpired?
    stream = make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with stream:
            url = f"/events/user-alice?ticket={minted(stream, 'alice')}"
            async with open_stream(stream("user-alice"), url) as response:
                assert response.status == 200
            async with open_stream(stream("user-alice"), url) as response:
                assert response.status == 401


async def test_an_unreachable_ledger_answers_503(prefix: str) -> None:
    """A ticket cannot be checked single-use while the engine is gone: 503, not a 500 nor a pass."""
    with run_redis() as own, anyio.fail_after(30):
        stream = make_stream(own, prefix)
        async with stream:
            ticket = minted(stream, "alice")
            own.stop(kill=True)
            async with open_stream(stream("user-alice"), f"/x?ticket={ticket}") as response:
                assert response.status == 503
                assert response.header("retry-after") == "5"
                assert (await response.read()).startswith(b"Service unavailable")
