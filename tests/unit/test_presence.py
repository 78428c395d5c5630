"""presence=True: who is subscribed to a channel, by the identity of each stream's Grant (in-process)."""

from __future__ import annotations

import gc
import json
from urllib.parse import quote

import anyio
import pytest

from eventstream import EventStream, PresenceMember, ServerSentEvent
from eventstream._core import presence_members
from eventstream.auth import Grant, JWTAuthorizer
from eventstream.testing import StreamResponse, open_stream
from tests.support.tokens import AUDIENCE, ISSUER, SECRET, TICKET_SECRET, hs256

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


async def next_event(page: StreamResponse) -> ServerSentEvent:
    # The next event the page gets that is not the stream's opening.
    while True:
        event = await page.receive_event()
        if event.event != "stream-open":
            return event


def watcher() -> dict[str, str]:
    # A page that watches who is in room-1: its token grants the companion channel.
    return {"authorization": f"Bearer {hs256(sub='watcher', channels=['presence:room-*'])}"}


async def test_join_and_leave_events_on_the_companion_channel() -> None:
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, info_claims=("name",))
    stream = EventStream(authorize=auth, presence=True, keep_alive_interval=None)
    ann = {"authorization": f"Bearer {hs256(sub='ann', name='Ann', channels=['room-1'])}"}
    with anyio.fail_after(10):
        async with open_stream(stream("presence:room-1"), headers=watcher()) as page:
            assert page.status == 200
            async with open_stream(stream("room-1"), headers=ann):
                joined = await next_event(page)
                assert joined.event == "join"
                assert json.loads(joined.text or "") == {
                    "channel": "room-1",
                    "identity": "ann",
                    "info": {"name": "Ann"},
                }
                async with open_stream(stream("room-1"), headers=ann):  # a second stream: no second join
                    await stream.wait_subscribers(2, "room-1")
                await stream.wait_subscribers(1, "room-1")
            left = await next_event(page)  # the next event: the leave of ann's last stream
            assert left.event == "leave"
            assert json.loads(left.text or "") == {"channel": "room-1", "identity": "ann"}
            assert joined.id  # numbered and kept in history: a page that reconnects gets them
            assert left.id


async def test_only_the_chosen_channels_are_kept_and_announced() -> None:
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE)
    stream = EventStream(authorize=auth, presence=["lobby", "room-*"], keep_alive_interval=None)
    with anyio.fail_after(10):
        async with open_stream(stream("presence:room-1"), headers=watcher()) as page:
            async with (
                open_stream(stream("room-2"), headers=bearer("bob")),  # (not watched: room-1 only)
                open_stream(stream(["room-1", "room-2"]), headers=bearer("ann")),
            ):
                event = await next_event(page)
                assert (event.event, json.loads(event.text or "")["identity"]) == ("join", "ann")
                assert await stream.presence("room-2") == [PresenceMember("ann", 1), PresenceMember("bob", 1)]
        with pytest.raises(ValueError, match="not kept"):
            await stream.presence("other")
        with pytest.raises(ValueError, match="not kept"):
            await stream.presence("presence:room-1")  # companions have no presence of their own


async def test_companion_channels_are_reserved_and_the_option_is_checked() -> None:
    stream = EventStream(presence=True)
    with pytest.raises(ValueError, match="presence:"):
        await stream.publish_event("presence:room-1", {"event": "join", "data": {"identity": "eve"}})
    await EventStream().publish_event("presence:room-1", {"data": "x"})  # without presence: a plain name
    with pytest.raises(TypeError):
        EventStream(presence="room-*")
    with pytest.raises(ValueError, match="presence:"):
        EventStream(presence=["presence:*"])
    for bad in (["*"], ["a*b"], [""]):
        with pytest.raises(ValueError, match="prefix ending"):
            EventStream(presence=bad)


def test_grant_info_is_small_json() -> None:
    assert Grant(identity="ann", info={"name": "Ann", "tags": [1, None]}).info == {
        "name": "Ann",
        "tags": [1, None],
    }
    with pytest.raises(ValueError, match="512"):
        Grant(identity="ann", info={"name": "x" * 600})
    with pytest.raises(TypeError):
        Grant(identity="ann", info={"when": object()})
    with pytest.raises(TypeError):
        Grant(identity="ann", info={1: "x"})  # type: ignore[dict-item]
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, info_claims=("name",))
    assert auth.grant({"sub": "ann", "name": "x" * 600}).info is None  # too large: left out
    assert auth.grant({"sub": "ann"}).info is None


async def test_a_ticket_carries_the_info_claims() -> None:
    auth = JWTAuthorizer(
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, info_claims=("name",), ticket_secret=TICKET_SECRET
    )
    token = hs256(sub="ann", name="Ann", secret_note="not for the URL", channels=["room-1"])
    scope = {"type": "http", "headers": [(b"authorization", f"Bearer {token}".encode())], "query_string": b""}
    ticket = auth.mint_ticket(scope)
    query = f"ticket={quote(ticket)}".encode()
    grant = await auth({"type": "http", "headers": [], "query_string": query}, ["room-1"])
    assert isinstance(grant, Grant)
    assert (grant.identity, grant.info) == ("ann", {"name": "Ann"})


async def test_a_channel_whose_companion_would_be_too_long_is_kept_but_not_announced() -> None:
    long = "room-" + "x" * 20  # 25 characters: its companion has 34
    auth = JWTAuthorizer(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, channels=["room-*"])
    stream = EventStream(authorize=auth, presence=True, keep_alive_interval=None, max_channel_name_length=30)
    with anyio.fail_after(10):
        async with open_stream(stream(long), headers=bearer("ann")) as response:
            assert response.status == 200
            assert await stream.presence(long) == [PresenceMember("ann", 1)]
        await stream.wait_subscribers(0)
        assert await stream.presence(long) == []
        assert stream.statistics().events_published == 0  # no join, no leave (and no error)


async def test_a_member_carries_the_info_its_join_event_said() -> None:
    # The info of an identity's first stream on a channel, kept while it has one there; after its
    # last one ended, the next first stream's info.
    names = iter(["Ann", "Ann again", "Annie"])

    def grant(scope: object, channels: list[str]) -> Grant:
        return Grant(identity="ann", info={"name": next(names)})

    stream = EventStream(authorize=grant, presence=True, keep_alive_interval=None)
    with anyio.fail_after(10):
        async with open_stream(stream("room-1")), open_stream(stream("room-1")):
            await stream.wait_subscribers(2)
            assert await stream.presence("room-1") == [PresenceMember("ann", 2, {"name": "Ann"})]
        await stream.wait_subscribers(0)
        async with open_stream(stream("room-1")):
            await stream.wait_subscribers(1)
            (member,) = await stream.presence("room-1")
            assert member == ("ann", 1, {"name": "Annie"})


@pytest.mark.parametrize("collector", ["running", "disabled by the app"])
def test_an_answer_of_many_members_is_made_in_one_go_out_of_the_oldest_generation(collector: str) -> None:
    # A named tuple stays under the garbage collector's watch while it lives: made with the
    # collector running, the passes set off while a 10,000-member answer was being built moved
    # the members made so far into the oldest generation, and every query or two then paid for
    # a full collection. Made in one go, no pass runs meanwhile, and the collector is left as it
    # was; with its counts at zero (the pass after is then a young one), none is old after it.
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    was = gc.isenabled()
    gc.collect()  # (every count at zero)
    if collector == "disabled by the app":
        gc.disable()
    gc.callbacks.append(count)
    try:
        members = presence_members((f"user-{n:05d}", 1, None) for n in range(10_000))
        during = len(passes)  # (before anything else is made: the next allocation may set one off)
        assert during == 0
        assert gc.isenabled() == (collector == "running")
        old = {id(member) for member in gc.get_objects(generation=2) if type(member) is PresenceMember}
        assert not old.intersection(map(id, members))
        assert members[0] == PresenceMember("user-00000", 1)
        assert len(members) == 10_000
    finally:
        gc.callbacks.remove(count)
        if was:
            gc.enable()
