"""eventstream.auth with the broker: two EventStreams on one private redis-server stand for two
processes. A stream whose token expires on one resumes on the other with a new token and its
last id, and gets what either published meanwhile, from the engine's history."""

from __future__ import annotations

import anyio
import pytest

from eventstream import EventStream, RedisBroker, ServerSentEvent
from eventstream.auth import JWTAuthorizer
from eventstream.testing import StreamResponse, open_stream

from ..support.redis_engine import RedisEngine
from ..support.tokens import AUDIENCE, ISSUER, SECRET, hs256

pytestmark = pytest.mark.anyio


def make_stream(engine: RedisEngine, prefix: str) -> EventStream:
    authorizer = JWTAuthorizer(
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, leeway=0, channels=["user-{sub}", "room-*"]
    )
    return EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), authorize=authorizer)


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
