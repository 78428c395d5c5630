"""Which channels the Redis broker's follower stops following, with an engine stood in by a function.

A check looks only at the channels that may have become idle since the one
before (their last subscriber left, their connection's preparation ended),
not at every channel followed. The follower, its interest and the hub are the
real ones (``test_follower_races.py`` has the engine); with a linger of 0, a
channel idle at a check is dropped by it.
"""

from __future__ import annotations

import anyio
import pytest

from eventstream._hub import Hub

from .test_follower_races import Engine, follower_on

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


async def test_the_channels_left_before_the_first_check_are_dropped_too() -> None:
    # Left before any check had looked at it busy: its preparation's end put it in the first check.
    hub = Hub(buffer_size=16, send_timeout=5)
    follower = follower_on(Engine(2), hub, linger=0)
    with anyio.fail_after(10):
        await follower.prepare(["early"])
        subscriber = hub.subscribe(("early",))
        await follower.channels_to_check()  # busy
        hub.unsubscribe(subscriber)
        await follower.channels_to_check()
    assert "early" not in follower.loaded
