"""The Redis broker's isolation and integrity against a real private redis-server, on asyncio and trio.

Apps on other databases of the engine, or under a prefix that extends
another, never hear each other; an engine that may evict keys is refused; a
lost sequence number never makes ids start again; a forged message on the
feed never silences a channel; an engine back without its data ends quiet
streams within the check interval.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry

from eventstream import BrokerError, EventStream, RedisBroker, ServerSentEvent
from eventstream._redis._suspects import CHECKS_BURST, CHECKS_PER_SECOND
from eventstream.prometheus import register
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import broker_of, follower_of, receive_data, wait_until
from ..support.redis_engine import RedisEngine, run_redis

pytestmark = pytest.mark.anyio


async def receive_until(response: StreamResponse, last: object) -> list[ServerSentEvent]:
    """The data events up to and including the one whose data is ``last``; fails on a reset or an end."""
    events: list[ServerSentEvent] = []
    while not events or events[-1].json() != last:
        event = await response.receive_event()  # anyio.EndOfStream if the stream ends
        assert event.event not in ("stream-reset", "stream-error")
        if event.event is None:
            events.append(event)
    return events


async def read_to_end(response: StreamResponse) -> list[ServerSentEvent]:
    """Every event until the stream ends."""
    events: list[ServerSentEvent] = []
    while True:
        try:
            events.append(await response.receive_event())
        except anyio.EndOfStream:
            return events


# -- item: apps on other databases, nested prefixes ------------------------------


async def test_apps_on_two_databases_with_one_prefix_never_hear_each_other(
    engine: RedisEngine, prefix: str
) -> None:
    from glide import GlideClientConfiguration, NodeAddress

    on_0 = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    # The other through a glide configuration of its own, on database 1.
    configuration = GlideClientConfiguration([NodeAddress("127.0.0.1", engine.port)], database_id=1)
    on_1 = EventStream(broker=RedisBroker(configuration=configuration, key_prefix=prefix))
    with anyio.fail_after(30):
        async with on_0, on_1, open_stream(on_0("news")) as r0, open_stream(on_1("news")) as r1:
            await on_0.wait_subscribers(1, "news")
            await on_1.wait_subscribers(1, "news")
            for n in range(3):
                await on_0.publish_event("news", {"data": f"0:{n}"})
                await on_1.publish_event("news", {"data": f"1:{n}"})
            await on_0.publish_event("news", {"data": "0:end"})
            await on_1.publish_event("news", {"data": "1:end"})
            # Neither stream ended (a foreign feed read as a new epoch ended them all).
            got_0 = await receive_until(r0, "0:end")
            got_1 = await receive_until(r1, "1:end")
            assert broker_of(on_0).epoch != broker_of(on_1).epoch
    assert [e.json() for e in got_0] == ["0:0", "0:1", "0:2", "0:end"]
    assert [e.json() for e in got_1] == ["1:0", "1:1", "1:2", "1:end"]
    assert [e.id for e in got_0] == [f"{broker_of(on_0).epoch}-{n}" for n in range(1, 5)]


async def test_a_prefix_that_extends_another_shares_nothing_with_it(engine: RedisEngine, prefix: str) -> None:
    # Once, "app:" read "app:ch:"'s feed as its channel "ch:news" (another epoch: every
    # stream ended), and its channel "epoch"'s history was the other's epoch key.
    outer = EventStream(broker=RedisBroker(engine.url, key_prefix=f"{prefix}app:"))
    inner = EventStream(broker=RedisBroker(engine.url, key_prefix=f"{prefix}app:ch:"))
    channels = ["news", "ch:news", "epoch", "h:epoch"]
    with anyio.fail_after(30):
        async with (
            outer,
            inner,
            open_stream(outer(channels)) as r_outer,
            open_stream(inner(channels)) as r_inner,
        ):
            await outer.wait_subscribers(1, "news")
            await inner.wait_subscribers(1, "news")
            for channel in channels:
                await inner.publish_event(channel, {"data": f"inner {channel}"})
                await outer.publish_event(channel, {"data": f"outer {channel}"})
            await inner.publish_event("news", {"data": "inner end"})
            await outer.publish_event("news", {"data": "outer end"})
            got_outer = await receive_until(r_outer, "outer end")
            got_inner = await receive_until(r_inner, "inner end")
    assert [e.json() for e in got_outer] == [*(f"outer {c}" for c in channels), "outer end"]
    assert [e.json() for e in got_inner] == [*(f"inner {c}" for c in channels), "inner end"]


@pytest.mark.parametrize("key_prefix", ["app|", "a|b:", "|"])
def test_a_prefix_with_the_separator_is_refused(key_prefix: str) -> None:
    with pytest.raises(ValueError, match=r"'\|'"):
        RedisBroker("redis://127.0.0.1:1/0", key_prefix=key_prefix)


# -- item: eviction, lost sequence numbers ------------------------------------------


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-random", "volatile-ttl"])
async def test_an_engine_that_may_evict_keys_is_refused_unless_allowed(
    prefix: str, caplog: pytest.LogCaptureFixture, policy: str
) -> None:
    # volatile-*: the histories and the kept replies expire, so they may be evicted too.
    with run_redis(options=("--maxmemory-policy", policy)) as own:
        refused = EventStream(broker=RedisBroker(own.url, key_prefix=prefix))
        with anyio.fail_after(30):
            with pytest.raises(BrokerError, match=f"maxmemory-policy is {policy}") as info:
                async with refused:
                    pass
            assert "allow_eviction=True" in str(info.value)
            allowed = EventStream(broker=RedisBroker(own.url, key_prefix=prefix, allow_eviction=True))
            with caplog.at_level(logging.ERROR, logger="eventstream"):
                async with allowed, open_stream(allowed("news")) as response:
                    await allowed.wait_subscribers(1, "news")
                    await allowed.publish_event("news", {"data": "kept"})
                    assert [e.json() for e in await receive_until(response, "kept")] == ["kept"]
    assert any(policy in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_a_user_limited_to_its_prefix_without_config_is_served_with_a_warning(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    with run_redis() as own:
        # The README's ACL: its keys, its channels, its feed's pattern (literally); no CONFIG.
        own.command(
            "ACL", "SETUSER", "app", "on", ">pw", f"~{prefix}|*", f"&{prefix}|*", f"&{prefix}|ch:0:*",
            "+@all", "-config",
        )  # fmt: skip
        url = f"redis://app:pw@127.0.0.1:{own.port}/0"
        stream = EventStream(broker=RedisBroker(url, key_prefix=prefix))
        with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="eventstream"):
            async with stream, open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                await stream.publish_event("news", {"data": "served"})
                assert [e.json() for e in await receive_until(response, "served")] == ["served"]
    assert any("maxmemory-policy" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "lost",
    [
        pytest.param(("seq",), id="its-number"),
        pytest.param(("seq", "h"), id="its-number-and-history"),
        pytest.param(("seq", "last"), id="its-number-and-last-id"),
    ],
)
async def test_a_lost_sequence_number_goes_on_after_the_newest_id(
    engine: RedisEngine, prefix: str, lost: tuple[str, ...]
) -> None:
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30):
        async with stream, other, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            for n in range(3):
                await other.publish_event("news", {"data": n})
            before = await receive_until(response, 2)
            for kind in lost:
                if kind == "seq":
                    assert engine.command("HDEL", f"{prefix}|state", "seq:news").strip() == b"1"
                else:
                    assert engine.command("DEL", f"{prefix}|{kind}:news").strip() == b"1"
            await other.publish_event("news", {"data": "after"})
            after = await receive_until(response, "after")  # the live subscriber gets it
    epoch = before[0].id.rsplit("-", 1)[0]  # type: ignore[union-attr]
    assert [e.id for e in [*before, *after]] == [f"{epoch}-{n}" for n in range(1, 5)]
    assert engine.command("HGET", f"{prefix}|state", "seq:news").strip() == b"4"


async def test_a_deleted_state_starts_a_new_epoch_and_no_id_is_issued_twice(
    engine: RedisEngine, prefix: str
) -> None:
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30):
        async with stream, other:
            async with open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                for n in range(3):
                    await other.publish_event("news", {"data": n})
                before = await receive_until(response, 2)
                old_epoch = broker_of(stream).epoch
                assert engine.command("DEL", f"{prefix}|state").strip() == b"1"
                await other.publish_event("news", {"data": "after"})
                # The subscriber's stream ends (it does not wait silently for ids that were issued).
                ended = await read_to_end(response)
            assert [e.json() for e in ended if e.event is None] == []
            new_epoch = broker_of(stream).epoch
            assert new_epoch != old_epoch
            # Its client reconnects with its last id; the history still holds it.
            last = before[-1].id
            assert last is not None
            async with open_stream(stream("news"), headers={"last-event-id": last}) as response:
                after = await receive_until(response, "after")
    ids = [e.id for e in [*before, *after]]
    assert len(ids) == len(set(ids)) == 4
    assert after[0].id == f"{new_epoch}-4"


@pytest.mark.parametrize("then", ["a publish", "nothing"])
async def test_a_channel_whose_keys_are_all_deleted_ends_its_streams_for_a_reset(
    engine: RedisEngine, prefix: str, then: str
) -> None:
    # Its number and every other key of it gone while the epoch stays: the engine
    # cannot tell it from a new channel, but the processes that follow it can: at its
    # next message, or, with nothing published since, at the periodic check (a quiet
    # channel's streams waited for ever).
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30):
        async with stream, other:
            async with open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                for n in range(3):
                    await other.publish_event("news", {"data": n})
                before = await receive_until(response, 2)
                engine.command("HDEL", f"{prefix}|state", "seq:news")
                engine.command("DEL", f"{prefix}|last:news", f"{prefix}|h:news")
                if then == "a publish":
                    await other.publish_event("news", {"data": "again"})
                ended = await read_to_end(response)  # not left waiting silently
            assert [e.json() for e in ended if e.event is None] == []
            last = before[-1].id
            assert last is not None
            async with open_stream(stream("news"), headers={"last-event-id": last}) as response:
                assert (await response.receive_event()).event == "stream-open"
                assert (await response.receive_event()).event == "stream-reset"
                await other.publish_event("news", {"data": "new"})
                assert [e.json() for e in await receive_until(response, "new")] == ["new"]


# -- item: forged or malformed messages on the feed ----------------------------------


async def test_forged_and_malformed_feed_messages_never_silence_a_channel(
    engine: RedisEngine, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    streams = [EventStream(broker=RedisBroker(engine.url, key_prefix=prefix)) for _ in range(2)]
    feed = f"{prefix}|ch:0:news"
    with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="eventstream"):
        async with streams[0], streams[1]:
            async with open_stream(streams[0]("news")) as r0, open_stream(streams[1]("news")) as r1:
                for stream in streams:
                    await stream.wait_subscribers(1, "news")
                await streams[0].publish_event("news", {"data": 0})
                epoch = broker_of(streams[0]).epoch
                forged = [
                    # far ahead: once taken as the newest event, every real one was dropped
                    f'{epoch}\n1000000\n{epoch}-1000000\n{epoch}-999999\n0\ndata: "far"\n',
                    # the next number, of another epoch: once ended every stream
                    '0badf00d\n2\n0badf00d-2\n0badf00d-1\n0\ndata: "epoch"\n',
                    "not an entry at all",
                    f"{epoch}\n-5\n{epoch}-x\n\n0\ndata: 1\n",
                    # an event already delivered, told otherwise
                    f'{epoch}\n1\n{epoch}-1\n{epoch}-0\n0\ndata: "other"\n',
                ]
                for message in forged:
                    engine.command("PUBLISH", feed, message)
                for n in range(1, 4):
                    await streams[1].publish_event("news", {"data": n})
                got = [await receive_until(r, 3) for r in (r0, r1)]
    for events in got:
        assert [e.json() for e in events] == [0, 1, 2, 3]
        assert [e.id for e in events] == [f"{epoch}-{n}" for n in range(1, 5)]
    messages = [r.getMessage() for r in caplog.records]
    assert any("event 1000000" in m for m in messages)
    assert any("0badf00d" in m for m in messages)
    assert any("not the one the engine" in m for m in messages)


#: PUBLISHes ARGV[2] forged messages on the feed channel KEYS[1], each far ahead of the channel.
_FORGE_FAR_AHEAD = """
local e = ARGV[1]
for i = 1, tonumber(ARGV[2]) do
  local s = 1000000 + i
  redis.call('PUBLISH', KEYS[1], e .. '\\n' .. s .. '\\n' .. e .. '-' .. s .. '\\n' .. e .. '-' .. (s - 1)
    .. '\\n0\\ndata: "far"\\n')
end
return 0
"""


async def test_a_flood_of_forged_feed_messages_costs_a_bounded_number_of_engine_reads(
    engine: RedisEngine, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Each message far ahead was checked against the engine with the follower's lock held: 2,000
    # of them cost 2,000 reads (and 2,000 warnings), one round trip each during which the feed of
    # every channel waited. Past CHECKS_BURST, CHECKS_PER_SECOND are checked; the rest are ignored.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    feed = f"{prefix}|ch:0:news"
    with anyio.fail_after(60), caplog.at_level(logging.WARNING, logger="eventstream"):
        async with stream, other, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            await other.publish_event("news", {"data": 0})
            await receive_until(response, 0)
            epoch = broker_of(stream).epoch
            reads = engine.calls("evalsha")
            start = time.monotonic()
            await anyio.to_thread.run_sync(engine.command, "EVAL", _FORGE_FAR_AHEAD, "1", feed, epoch, "2000")
            for n in range(1, 4):  # the real next ones, behind the forged ones on the feed
                await other.publish_event("news", {"data": n})
            got = await receive_until(response, 3)
            suspects = follower_of(stream).suspects

            def checked() -> int:  # (each forged message checked is reported once)
                return sum("ignoring a feed message for event 10" in r.getMessage() for r in caplog.records)

            async def all_seen() -> bool:
                return suspects.refused + checked() == 2000

            await wait_until(all_seen, timeout=30)
            reads = engine.calls("evalsha") - reads - 3  # (the three publishes are script calls too)
            elapsed = time.monotonic() - start
            stats = stream.statistics().broker
    assert [(e.id, e.json()) for e in got] == [(f"{epoch}-{n + 1}", n) for n in range(1, 4)]
    assert checked() <= reads <= CHECKS_BURST + CHECKS_PER_SECOND * elapsed + 2
    ignored = [r for r in caplog.records if "would have had to confirm" in r.getMessage()]
    assert len(ignored) == 1  # (one warning per WARN_EVERY seconds)
    assert stats is not None
    assert stats.feed_unchecked == 2000 - checked()  # (eventstream_broker_feed_unchecked_total)


async def test_events_missed_while_the_feed_was_down_are_read_as_soon_as_it_is_back(
    engine: RedisEngine, prefix: str
) -> None:
    # With check_interval an hour, what was published on quiet channels while the feed's
    # connection was down (more channels than CHECKS_BURST) waited for the next check, or for
    # later messages of each channel that the check budget left unchecked: the feed's coming
    # back now asks for a check at once.
    stream = EventStream(
        broker=RedisBroker(engine.url, key_prefix=prefix, check_interval=3600), max_channels=64
    )
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    channels = [f"c{n}" for n in range(2 * CHECKS_BURST)]
    with anyio.fail_after(30):
        async with stream, other, open_stream(stream(channels)) as response:
            await stream.wait_subscribers(1)
            await anyio.to_thread.run_sync(engine.command, "CLIENT", "KILL", "TYPE", "pubsub")
            for channel in channels:  # (the first ones at least while the feed is down)
                await other.publish_event(channel, {"data": channel})
            got = await receive_data(response, len(channels))
    assert sorted(event.json() for event in got) == sorted(channels)


async def test_a_forged_message_whose_time_is_out_of_range_is_refused(
    engine: RedisEngine, prefix: str
) -> None:
    # The next number, which the engine has, published at a time of 400 digits: with metrics
    # on, the feed's lag (from that time) overflowed a float, and the error ended the feed.
    a, b = (EventStream(broker=RedisBroker(engine.url, key_prefix=prefix)) for _ in range(2))
    register(b, CollectorRegistry())  # metrics on: the lag is observed from each message's time
    feed = f"{prefix}|ch:0:news"
    with anyio.fail_after(30):
        async with a, b, open_stream(b("news")) as response:
            await b.wait_subscribers(1, "news")
            epoch = broker_of(a).epoch
            follower = follower_of(b)
            async with follower.lock:  # b takes nothing in meanwhile: the forgery comes first
                engine.command("PUBLISH", feed, f'{epoch}\n1\n{epoch}-1\n{epoch}-0\n{"9" * 400}\ndata: "x"\n')
                await a.publish_event("news", {"data": 1})  # the engine numbers 1
            await a.publish_event("news", {"data": 2})
            got = await receive_until(response, 2)
    assert [(e.id, e.json()) for e in got] == [(f"{epoch}-1", 1), (f"{epoch}-2", 2)]


async def test_a_feed_batch_that_raises_what_nothing_foresaw_does_not_end_the_feed(
    engine: RedisEngine, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # (The 400-digit time above raised OverflowError, which ended the feed of every process.)
    # Whatever a batch raises is logged; the feed goes on, and the gap fills from history.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="eventstream"):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            follower = follower_of(stream)
            receive = follower.receive

            async def unforeseen(batch: list[tuple[str, Any]]) -> None:
                if any(b"boom" in entry.body for _channel, entry in batch):
                    raise ArithmeticError("nothing foresaw this")
                await receive(batch)

            monkeypatch.setattr(follower, "receive", unforeseen)
            # (Each message through the reader's batches: none taken in by the feed's task at once.)
            monkeypatch.setattr(follower, "receive_now", lambda channel, entry: False)
            await stream.publish_event("news", {"data": "boom"})
            await stream.publish_event("news", {"data": "after"})
            got = await receive_until(response, "after")
    assert [e.json() for e in got] == ["boom", "after"]  # "boom" read from history, in order
    assert "could not be taken in" in caplog.text
    assert "nothing foresaw this" in caplog.text


# -- item: an engine back without its data, on a quiet channel -------------------------


async def test_an_engine_back_without_its_data_ends_quiet_streams_within_the_check_interval(
    prefix: str,
) -> None:
    with run_redis() as own:
        stream = EventStream(broker=RedisBroker(own.url, key_prefix=prefix, check_interval=0.2))
        with anyio.fail_after(30):
            async with stream:
                async with open_stream(stream("quiet")) as response:
                    await stream.wait_subscribers(1, "quiet")
                    await stream.publish_event("quiet", {"data": "only"})
                    seen = await receive_until(response, "only")
                    await anyio.to_thread.run_sync(own.stop)
                    for path in own.directory.iterdir():  # no append-only file, no snapshot
                        if path.name != "redis.log":
                            await anyio.to_thread.run_sync(_remove, path)
                    await anyio.to_thread.run_sync(own.start)
                    # Nobody publishes: the periodic check notices the new epoch.
                    with anyio.fail_after(10):
                        await read_to_end(response)
                last = seen[0].id
                assert last is not None
                async with open_stream(stream("quiet"), headers={"last-event-id": last}) as response:
                    assert (await response.receive_event()).event == "stream-open"
                    assert (await response.receive_event()).event == "stream-reset"


def _remove(path: object) -> None:
    import shutil
    from pathlib import Path

    assert isinstance(path, Path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


async def test_an_acl_without_the_feeds_pattern_keeps_one_subscription_per_channel(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Past feed_channels_max, the whole feed would come through the pattern; the ACL
    # does not grant it: a warning names the grant, and each channel stays subscribed.
    with run_redis() as own:
        own.command(
            "ACL", "SETUSER", "app", "on", ">pw", f"~{prefix}|*", f"&{prefix}|*", "+@all", "-config",
        )  # fmt: skip
        url = f"redis://app:pw@127.0.0.1:{own.port}/0"
        stream = EventStream(broker=RedisBroker(url, key_prefix=prefix, feed_channels_max=2))
        channels = ["a", "b", "c"]
        with anyio.fail_after(30), caplog.at_level(logging.WARNING, logger="eventstream"):
            async with stream, open_stream(stream(channels)) as response:
                await stream.wait_subscribers(1, "a")
                await stream.publish_event("c", {"data": "served"})
                assert [e.json() for e in await receive_until(response, "served")] == ["served"]
                feed = stream.statistics().broker
                assert feed is not None
                assert (feed.feed_whole, feed.feed_channels) == (False, 3)
    assert any(f"{prefix}|ch:0:*" in r.getMessage() for r in caplog.records), caplog.text
