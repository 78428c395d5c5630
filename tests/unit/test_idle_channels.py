"""Which channels the Redis broker's follower stops following, with an engine stood in by a function.

A check looks only at the channels that may have become idle since the one
before (their last subscriber left, their connection's preparation ended),
not at every channel followed. The follower, its interest and the hub are the
real ones (``test_follower_races.py`` has the engine); with a linger of 0, a
channel idle at a check is dropped by it.
"""

from __future__ import annotations

from functools import partial

import anyio
import pytest

from eventstream._core import Hub
from eventstream._redis._follow import EngineFollower
from eventstream._redis._idle import LOOK_AT_ALL_EVERY
from tests.support.helpers import wait_until

from .test_follower_races import Engine, Feed, follower_on

pytestmark = pytest.mark.anyio


async def test_a_channel_whose_connection_never_subscribed_is_dropped() -> None:
    # Prepared (read, subscribed on the feed), then its connection went away
    # before subscribing to the hub: nothing else would say it is idle.
    hub = Hub(buffer_size=16, send_timeout=5)
    follower = follower_on(Engine(2), hub, linger=0)
    with anyio.fail_after(10):
        await follower.prepare(["gone"])
        assert "gone" in follower.loaded
        await follower.channels_to_check()  # idle, and past linger 0: dropped
    assert "gone" not in follower.loaded
    assert "gone" not in follower.interest.subscribed


async def test_a_channel_is_dropped_once_its_last_subscriber_left_not_before() -> None:
    hub = Hub(buffer_size=16, send_timeout=5)
    follower = follower_on(Engine(2), hub, linger=0)
    with anyio.fail_after(10):
        await follower.prepare(["room"])
        first, second = hub.subscribe(("room",)), hub.subscribe(("room",))
        for _ in range(3):
            await follower.channels_to_check()
        assert "room" in follower.loaded  # subscribed: never idle
        hub.unsubscribe(first)
        for _ in range(3):
            await follower.channels_to_check()
        assert "room" in follower.loaded  # one subscriber left
        hub.unsubscribe(second)
        await follower.channels_to_check()  # the hub said its last one left: idle, and past linger 0
    assert "room" not in follower.loaded


async def test_a_channel_seen_idle_that_gains_a_subscriber_is_kept_and_timed_again_when_left() -> None:
    linger = 0.3
    hub = Hub(buffer_size=16, send_timeout=5)
    follower = follower_on(Engine(2), hub, linger=linger)
    with anyio.fail_after(10):
        await follower.prepare(["flap"])
        await follower.channels_to_check()  # seen idle
        back = hub.subscribe(("flap",))  # (a connection on a followed channel: no preparation)
        await anyio.sleep(linger)  # (the linger passes: what is tested)
        await follower.channels_to_check()  # due, but busy: kept
        assert "flap" in follower.loaded
        hub.unsubscribe(back)
        await follower.channels_to_check()  # idle again, from now: not due
        assert "flap" in follower.loaded
        await anyio.sleep(linger)
        await follower.channels_to_check()
    assert "flap" not in follower.loaded


async def test_a_channel_subscribed_for_a_connection_gone_meanwhile_is_dropped() -> None:
    # Connection c's read goes in the request connection b sends (one request in
    # flight at a time: a's was out when both came); c goes away while that request
    # waits for the feed's subscription, and the check then finds c's channel
    # not followed. The subscription, made after, is for nobody: it is dropped.
    engine, feed = Engine(2), Feed()
    engine.together_gate = anyio.Event()
    hub = Hub(buffer_size=16, send_timeout=5)
    hub.subscribe(("a",))  # (a stays busy: the check below drops nothing)
    follower = follower_on(engine, hub, linger=0, feed=feed)
    subscribed = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            try:
                tg.start_soon(follower.prepare, ["a"])
                await engine.together_held.wait()  # a's request is out
                gone = anyio.CancelScope()  # (c's connection's)
                tg.start_soon(follower.prepare, ["b"])
                await wait_until(lambda: preparing(follower, "b"))  # (queued: b sends next, not c)
                tg.start_soon(partial(cancellable_prepare, follower, "c", gone))
                await wait_until(lambda: preparing(follower, "c"))
                feed.gate = subscribed  # the next subscription waits
                engine.together_gate.set()  # a's request comes back; b sends b's and c's reads
                await feed.held.wait()
                gone.cancel()  # c's connection goes away
                await wait_until(lambda: not_preparing(follower, "c"))
                await follower.channels_to_check()  # c: not followed, nothing to forget
                assert "c" not in follower.interest.subscribed
            finally:
                subscribed.set()  # the subscription of b and c is made
                engine.together_gate.set()  # (and, on a failure, nothing is left waiting)
        assert "c" in follower.interest.subscribed
        assert "c" not in follower.loaded
        await follower.channels_to_check()
    assert "c" not in follower.interest.subscribed
    assert "b" not in follower.interest.subscribed  # (no subscriber either: linger 0)


async def test_a_channel_followed_by_a_way_the_check_is_not_told_of_is_dropped_within_its_full_look() -> None:
    hub = Hub(buffer_size=16, send_timeout=5)
    follower = follower_on(Engine(2), hub, linger=0)
    with anyio.fail_after(10):
        await follower.prepare(["seen"])
        hub.subscribe(("seen",))
        await follower.channels_to_check()  # the first check
        follower.loaded["stray"] = None  # (as a way missed would leave it)
        for _ in range(LOOK_AT_ALL_EVERY - 2):
            await follower.channels_to_check()
        assert "stray" in follower.loaded
        await follower.channels_to_check()  # every channel followed is looked at
    assert "stray" not in follower.loaded
    assert "seen" in follower.loaded


async def cancellable_prepare(follower: EngineFollower, channel: str, scope: anyio.CancelScope) -> None:
    with scope:
        await follower.prepare([channel])


async def preparing(follower: EngineFollower, channel: str) -> bool:
    return channel in follower._preparer.preparing


async def not_preparing(follower: EngineFollower, channel: str) -> bool:
    return channel not in follower._preparer.preparing
