"""presence=True: who is subscribed to a channel, by the identity of each stream's Grant (in-process)."""

from __future__ import annotations

import anyio
import pytest

from eventstream import EventStream, PresenceMember
from eventstream.auth import JWTAuthorizer
from eventstream.testing import open_stream
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, hs256

pytestmark = pytest.mark.anyio


def bearer(sub: str) -> dict[str, str]:
    return {"authorization": f"Bearer {hs256(sub=sub, channels=['room-1', 'room-2'])}"}


async def test_members_join_and_leave_with_their_streams() -> None:
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    stream = EventStream(authorize=auth, presence=True, keep_alive_interval=None)
    assert await stream.presence("room-1") == []
    with anyio.fail_after(10):
        async with (
            open_stream(stream("room-1"), headers=bearer("ann")) as a,
            open_stream(stream(["room-1", "room-2"]), headers=bearer("bob")) as b,
            open_stream(stream("room-1"), headers=bearer("ann")) as c,
        ):
            assert a.status == b.status == c.status == 200
            assert await stream.presence("room-1") == [PresenceMember("ann", 2), PresenceMember("bob", 1)]
            assert await stream.presence("room-2") == [PresenceMember("bob", 1)]
            async with open_stream(stream("room-2"), headers=bearer("cy")):
                assert [m.identity for m in await stream.presence("room-2")] == ["bob", "cy"]
            await stream.wait_subscribers(1, "room-2")
            assert await stream.presence("room-2") == [PresenceMember("bob", 1)]
        await stream.wait_subscribers(0)
        assert await stream.presence("room-1") == []
        assert await stream.presence("room-2") == []


async def test_streams_without_an_identity_are_not_named_and_shutdown_clears_it() -> None:
    stream = EventStream(authorize=lambda scope, channels: True, presence=True, keep_alive_interval=None)
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    named = EventStream(authorize=auth, presence=True, keep_alive_interval=None)
    with anyio.fail_after(10):
        async with open_stream(stream("room-1")):
            await stream.wait_subscribers(1)
            assert await stream.presence("room-1") == []
        async with open_stream(named("room-1"), headers=bearer("ann")) as response:
            assert await named.presence("room-1") == [PresenceMember("ann", 1)]
            await named.aclose()
            await response.read()
        assert await named.presence("room-1") == []


async def test_presence_must_be_asked_for() -> None:
    stream = EventStream()
    with pytest.raises(RuntimeError, match="presence=True"):
        await stream.presence("room-1")
    with pytest.raises(ValueError, match="channel"):
        await EventStream(presence=True).presence("a,b")
