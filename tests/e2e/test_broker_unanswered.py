"""The Redis broker when the engine stops answering, under a flood of new channels, and behind its feed.

A relay (tests/support/relay.py) between a broker and a real private redis-server
holds what it should forward, without cutting anything: the engine accepts
and never answers (or answers one connection only). A second stream,
connected directly, stands for another process. On asyncio and trio.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import anyio
import pytest

from eventstream import BrokerError, EventStream, MemoryHistory, RedisBroker, ServerSentEvent, SubscribeLimits
from eventstream._core import LocalBroker
from eventstream._redis._feed import FeedInbox
from eventstream.testing import open_stream

from ..support.helpers import broker_of, follower_of, receive_data, wait_until
from ..support.redis_engine import RedisEngine
from ..support.relay import Relay

pytestmark = pytest.mark.anyio

#: The relay's connection that carries a broker's commands (the feed connects first, commands second).
COMMANDS = 1


def through(
    instance: Relay, prefix: str, *, request_timeout: float = 2.0, publish_timeout: float = 10.0
) -> EventStream:
    """A stream whose broker reaches the engine through the relay (no periodic check)."""
    broker = RedisBroker(
        f"redis://127.0.0.1:{instance.port}",
        key_prefix=prefix,
        check_interval=3600,
        request_timeout=request_timeout,
        publish_timeout=publish_timeout,
    )
    return EventStream(broker=broker)


@contextlib.asynccontextmanager
async def reading_through(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> AsyncIterator[tuple[EventStream, EventStream]]:
    """A stream through the relay whose engine has the read script, and another one straight to the engine."""
    stream = through(via_relay, prefix, request_timeout=30.0)
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    async with stream, other:
        async with open_stream(stream("warm-up")) as response:  # the engine has the read script
            assert response.status == 200
        yield stream, other


async def test_every_queued_publish_fails_within_the_timeout_of_its_own_call(
    via_relay: Relay, prefix: str
) -> None:
    # 700 publishes at once, then more while they are queued: each raises
    # within publish_timeout of its own call (plus a margin), not after the
    # batches queued ahead of it have each used up a timeout.
    stream = through(via_relay, prefix, publish_timeout=3)
    broker = broker_of(stream)
    outcomes: list[tuple[float, float, BaseException | None]] = []

    async def publish_one(n: int) -> None:
        called = anyio.current_time()
        try:
            await stream.publish_event("news", {"data": n})
        except BrokerError as exc:
            outcomes.append((called, anyio.current_time(), exc))
        else:
            outcomes.append((called, anyio.current_time(), None))

    with anyio.fail_after(60):
        async with stream:
            first = await broker.publish("news", ServerSentEvent(data="answered"))
            via_relay.hold()
            async with anyio.create_task_group() as tg:
                for n in range(700):
                    tg.start_soon(publish_one, n)
                for n in range(700, 760):  # calls spread over 1.5 s, behind the queue
                    await anyio.sleep(0.025)
                    tg.start_soon(publish_one, n)
            via_relay.release()
            # The held requests now reach the engine; this one follows them on the same connection.
            probe = await broker.publish("news", ServerSentEvent(data="probe"))
    assert len(outcomes) == 760
    assert all(isinstance(error, BrokerError) for _, _, error in outcomes)
    waited = [ended - called for called, ended, _ in outcomes]
    assert max(waited) <= 3 + 2.0, sorted(waited)[-5:]
    # Only events whose error says "maybe published" may have been published.
    maybe = sum(1 for _, _, error in outcomes if isinstance(error, BrokerError) and error.maybe_published)
    published = int(probe.id.rsplit("-", 1)[1]) - int(first.id.rsplit("-", 1)[1]) - 1
    assert published <= maybe


async def test_new_streams_wait_together_for_an_engine_that_does_not_answer(
    via_relay: Relay, prefix: str
) -> None:
    # Ten streams on followed channels opened at once are served from the
    # process's copy after one request_timeout, not ten one after another; one
    # on a channel never seen gets 503 within the same bound.
    stream = through(via_relay, prefix, request_timeout=1.0)
    channels = [f"c{n}" for n in range(10)]
    answered: dict[str, tuple[int, float]] = {}

    async def open_one(channel: str, started: float) -> None:
        async with open_stream(stream(channel)) as response:
            answered[channel] = (response.status, anyio.current_time() - started)

    with anyio.fail_after(60):
        async with stream:
            for channel in channels:
                await stream.publish_event(channel, {"data": channel})
            async with open_stream(stream(channels)) as response:  # follows all ten
                assert response.status == 200
            via_relay.hold()
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for channel in [*channels, "never-seen"]:
                    tg.start_soon(open_one, channel, started)
    assert {channel: status for channel, (status, _) in answered.items()} == {
        **dict.fromkeys(channels, 200),
        "never-seen": 503,
    }
    assert max(took for _, took in answered.values()) <= 1.0 + 0.5 + 2.0, answered


async def test_new_streams_whose_reads_wait_behind_others_still_answer_within_their_own_bound(
    via_relay: Relay, prefix: str
) -> None:
    # Reads of streams opening at once are sent together, two requests at a time:
    # those queued behind the first two go out when these time out, and a stream
    # sending them for others gets its 503 within its own bound (request_timeout
    # + 0.5 s from its start), not after a second request_timeout.
    stream = through(via_relay, prefix, request_timeout=2.0)
    answered: dict[int, tuple[int, float]] = {}

    async def open_one(n: int, started: float) -> None:
        async with open_stream(stream([f"new{n}-{k}" for k in range(4)])) as response:
            answered[n] = (response.status, anyio.current_time() - started)

    with anyio.fail_after(60):
        async with stream:
            via_relay.hold()
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for n in range(10):
                    tg.start_soon(open_one, n, started)
    assert {n: status for n, (status, _) in answered.items()} == dict.fromkeys(range(10), 503)
    assert max(took for _, took in answered.values()) <= 2.0 + 0.5 + 1.0, answered


async def test_live_delivery_goes_on_while_new_channels_wait_for_the_engine(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> None:
    # The engine answers none of the process's reads (its command connection
    # is held, for longer than the test lasts); its feed flows. Streams on 8 x
    # 32 new channels wait for their history; live events on a followed
    # channel reach its stream meanwhile.
    stream = through(via_relay, prefix, request_timeout=60.0)
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    opened: list[int] = []

    async def open_new(n: int) -> None:
        async with open_stream(stream([f"new{n}-{k}" for k in range(32)])) as response:
            opened.append(response.status)

    with anyio.fail_after(60):
        async with stream, other, open_stream(stream("live")) as live:
            assert via_relay.connections == 2  # the feed, then commands
            await stream.wait_subscribers(1, "live")
            via_relay.hold(COMMANDS)
            async with anyio.create_task_group() as tg:
                for n in range(8):
                    tg.start_soon(open_new, n)

                async def all_waiting() -> bool:
                    return len(follower_of(stream)._preparer._loading) == 8 * 32

                await wait_until(all_waiting)
                with anyio.fail_after(15):  # the reads would answer after 60 s
                    for n in range(20):
                        await other.publish_event("live", {"data": n})
                    received = await receive_data(live, 20)
                assert [event.json() for event in received] == list(range(20))
                assert opened == []  # still waiting for the engine
                via_relay.release()
    assert opened == [200] * 8


async def test_feed_entries_during_a_first_read_are_kept_for_after_it(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> None:
    # The engine runs the read of a new channel's history, but its answer is
    # held; meanwhile events of that channel arrive on the feed. A stream that
    # resumes from before them gets them all from this process's copy, with
    # no gap and no periodic check.
    with anyio.fail_after(60):
        async with reading_through(engine, via_relay, prefix) as (stream, other):
            first = await broker_of(other).publish("x", ServerSentEvent(data=0))
            seq = int(first.id.rsplit("-", 1)[1])
            via_relay.hold(COMMANDS, replies_only=True)
            async with anyio.create_task_group() as tg:

                async def resume() -> None:
                    async with open_stream(stream("x"), headers={"last-event-id": first.id}) as response:
                        assert response.status == 200
                        received.extend(await receive_data(response, 5))

                received: list[ServerSentEvent] = []
                tg.start_soon(resume)

                async def answered() -> bool:
                    return via_relay.holds_reply(COMMANDS)

                await wait_until(answered)  # the engine ran the read
                for n in range(1, 6):
                    await other.publish_event("x", {"data": n})

                async def on_the_feed() -> bool:
                    loading = follower_of(stream)._preparer._loading.get("x")
                    kept = {entry.seq for entry in loading.entries("x")} if loading is not None else set()
                    return kept >= set(range(seq + 1, seq + 6))

                await wait_until(on_the_feed)
                via_relay.release()
    assert [event.json() for event in received] == [1, 2, 3, 4, 5]
    assert [event.id for event in received] == [f"{other._epoch}-{seq + n}" for n in range(1, 6)]


async def test_the_channels_of_a_first_read_share_one_record_and_keep_their_own_feed_entries(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> None:
    # One record per read, not per channel (under a flood, one per channel lived into the
    # collector's oldest generation); what the feed brings meanwhile is kept per channel.
    with anyio.fail_after(60):
        async with reading_through(engine, via_relay, prefix) as (stream, other):
            via_relay.hold(COMMANDS, replies_only=True)
            preparer = follower_of(stream)._preparer
            async with anyio.create_task_group() as tg:
                opened: list[int] = []

                async def open_three() -> None:
                    async with open_stream(stream(["x", "y", "z"])) as response:
                        opened.append(response.status)

                tg.start_soon(open_three)

                async def reading() -> bool:
                    return via_relay.holds_reply(COMMANDS) and {"x", "y", "z"} <= preparer._loading.keys()

                await wait_until(reading)
                records = {id(preparer._loading[channel]) for channel in ("x", "y", "z")}
                assert len(records) == 1
                published = [await broker_of(other).publish("y", ServerSentEvent(data=n)) for n in range(3)]
                loading = preparer._loading["y"]

                async def set_aside() -> bool:
                    return len(loading.entries("y")) == 3

                await wait_until(set_aside)
                assert [entry.id for entry in loading.entries("y")] == [event.id for event in published]
                assert loading.entries("x") == loading.entries("z") == []
                via_relay.release()
            assert opened == [200]
            assert not preparer._loading


def test_block_is_refused_with_a_broker(engine: RedisEngine) -> None:
    # The feed delivers every channel: one stalled client would stall them all.
    with pytest.raises(ValueError, match='slow_consumer="block" cannot be used with a broker'):
        EventStream(broker=engine.url, slow_consumer="block")
    with pytest.raises(ValueError, match="stall the delivery of every channel"):
        EventStream(broker=RedisBroker(engine.url), slow_consumer="block")
    # In-process, it stalls its channel only: accepted.
    EventStream(slow_consumer="block")
    EventStream(broker=LocalBroker(MemoryHistory()), slow_consumer="block")


async def test_many_new_streams_on_many_new_channels_while_the_periodic_check_runs(
    engine: RedisEngine, prefix: str
) -> None:
    # The periodic check forgets followed channels that have no subscriber:
    # one read early for a stream whose other channels are still being read
    # must not be forgotten before the stream subscribes (it would get 503,
    # or miss every event of that channel).
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, check_interval=0.001))
    names = [[f"s{n}-{k}" for k in range(32)] for n in range(40)]
    received: dict[int, list[object]] = {}

    async def follow(n: int, ready: anyio.Event) -> None:
        async with open_stream(stream(names[n])) as response:
            assert response.status == 200, await response.read()
            ready.set()
            received[n] = [event.json() for event in await receive_data(response, 32)]

    with anyio.fail_after(60):
        async with stream, anyio.create_task_group() as tg:
            readiness = [anyio.Event() for _ in names]
            for n, ready in enumerate(readiness):
                tg.start_soon(follow, n, ready)
            for ready in readiness:
                await ready.wait()
            async with anyio.create_task_group() as publishers:
                for channels in names:
                    for channel in channels:
                        publishers.start_soon(stream.publish_event, channel, {"data": channel})
    assert {n: sorted(str(data) for data in got) for n, got in received.items()} == {
        n: sorted(channels) for n, channels in enumerate(names)
    }


async def test_new_streams_read_history_after_the_engine_lost_its_scripts(
    engine: RedisEngine, prefix: str
) -> None:
    # A stream's channels are read in one pipeline of EVALSHA calls: after
    # SCRIPT FLUSH (or an engine restart) each is read again with the script.
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, check_interval=3600))
    with anyio.fail_after(30):
        async with stream:
            first = await broker_of(stream).publish("a", ServerSentEvent(data="a0"))
            await stream.publish_event("a", {"data": "a1"})
            await stream.publish_event("b", {"data": "b0"})
            await anyio.to_thread.run_sync(engine.command, "SCRIPT", "FLUSH")
            async with open_stream(stream("a"), headers={"last-event-id": first.id}) as response:
                assert response.status == 200
                replayed = await receive_data(response, 1)
            await anyio.to_thread.run_sync(engine.command, "SCRIPT", "FLUSH")
            async with open_stream(stream(["b", "c"])) as response:
                assert response.status == 200
                assert follower_of(stream).history.last_seq == {"a": 2, "b": 1, "c": 0}
    assert [event.json() for event in replayed] == ["a1"]


async def test_the_feed_inbox_keeps_the_newest_messages_up_to_its_limit() -> None:
    inbox = FeedInbox(limit=3)
    messages = [(b"ch", b"%d" % n) for n in range(5)]
    for message in messages:
        inbox.push(message)
    assert (inbox.take(10), inbox.dropped) == (messages[2:], 2)


async def test_the_feed_inbox_keeps_the_newest_messages_up_to_its_bytes() -> None:
    # Messages of up to 64 MiB each: a count alone let a reader held up keep gigabytes.
    inbox = FeedInbox(max_bytes=10 << 20)
    megabyte = [(b"ch", b"%07d" % n + b"x" * ((1 << 20) - 9)) for n in range(100)]  # 1 MiB each
    for message in megabyte:
        inbox.push(message)
    assert (len(inbox), inbox.dropped) == (10, 90)
    assert inbox.take(3) == megabyte[90:93]
    inbox.push(megabyte[0])  # room for it now: nothing more dropped
    assert (inbox.take(10), inbox.dropped) == ([*megabyte[93:], megabyte[0]], 90)


async def test_a_feed_reader_behind_drops_messages_and_fills_the_gaps_from_history(
    engine: RedisEngine, prefix: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The inbox holds 2 messages: a burst of 300 overflows it. Memory stays
    # bounded, and the stream still gets every event, in order.
    monkeypatch.setattr("eventstream._redis._feed.FEED_LIMIT", 2)
    stream = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    with anyio.fail_after(30):
        async with stream, other, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            # Every message held for the reader (none taken in by the feed's task at once,
            # as the first of a burst would be), so that the reader falls behind.
            monkeypatch.setattr(follower_of(stream), "receive_now", lambda channel, entry: False)
            async with anyio.create_task_group() as tg:
                for n in range(300):
                    tg.start_soon(other.publish_event, "news", {"data": n})
            received = await receive_data(response, 300)
    assert "behind; dropping the oldest" in caplog.text
    seqs = [int(str(event.id).rsplit("-", 1)[1]) for event in received]
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    assert sorted(event.json() for event in received) == list(range(300))


async def test_streams_on_one_new_channel_at_once_share_its_first_read(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> None:
    stream = through(via_relay, prefix)
    other = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    opened: list[object] = []

    async def open_shared() -> None:
        async with open_stream(stream("shared")) as response:
            assert response.status == 200
            opened.append((await receive_data(response, 1))[0].json())

    with anyio.fail_after(30):
        async with stream, other:
            via_relay.hold(COMMANDS, replies_only=True)
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(open_shared)

                async def read_once() -> bool:
                    return via_relay.holds_reply(COMMANDS)

                await wait_until(read_once)
                assert list(follower_of(stream)._preparer._loading) == ["shared"]
                via_relay.release()
                await stream.wait_subscribers(5, "shared")
                await other.publish_event("shared", {"data": "to all five"})
    assert opened == ["to all five"] * 5


async def test_a_channel_whose_first_read_failed_is_not_left_subscribed(
    engine: RedisEngine, via_relay: Relay, prefix: str
) -> None:
    # The feed subscribes before the first read; the read is not answered in
    # time (503): the subscription of a channel this process does not follow is
    # dropped like an idle one's. Once the engine answers, the channel streams.
    broker = RedisBroker(
        f"redis://127.0.0.1:{via_relay.port}",
        key_prefix=prefix,
        request_timeout=0.5,
        check_interval=0.05,
        feed_linger=0.0,
    )
    stream = EventStream(broker=broker)
    feed = f"{prefix}|ch:0:late"

    async def subscriptions() -> int:
        return int(engine.command("PUBSUB", "NUMSUB", feed).split()[1])

    with anyio.fail_after(30):
        async with stream:
            via_relay.hold(replies_only=True)
            async with open_stream(stream("late")) as response:
                assert response.status == 503
            via_relay.release()

            async def dropped() -> bool:
                return await subscriptions() == 0

            await wait_until(dropped)
            async with open_stream(stream("late")) as response:
                assert response.status == 200
                await stream.wait_subscribers(1, "late")
                assert await subscriptions() == 1
                await stream.publish_event("late", {"data": "on time"})
                assert [e.json() for e in await receive_data(response, 1)] == ["on time"]


async def test_a_publish_the_engine_leaves_unanswered_counts_until_one_succeeds(
    via_relay: Relay, prefix: str
) -> None:
    # The feed stays connected while the engine does not answer the commands:
    # the broker's own account says the engine does not answer until a publish
    # succeeds again.
    stream = through(via_relay, prefix, request_timeout=0.3, publish_timeout=0.5)

    def answering() -> bool:
        feed = stream.statistics().broker
        assert feed is not None
        return feed.engine_answering

    with anyio.fail_after(30):
        async with stream:
            await stream.publish_event("a", {"data": 1})
            assert answering()
            via_relay.hold(COMMANDS)
            with pytest.raises(BrokerError):
                await stream.publish_event("a", {"data": 2})
            assert not answering()
            feed = stream.statistics().broker
            assert feed is not None
            assert feed.feed_connected
            via_relay.release()

            async def published() -> bool:
                try:
                    await stream.publish_event("a", {"data": 3})
                except BrokerError:
                    return False
                return True

            await wait_until(published)
            assert answering()


async def test_a_stream_closed_while_the_broker_prepares_a_request_answers_503_and_holds_nothing(
    engine: RedisEngine, prefix: str
) -> None:
    # The request waits for its channel's first read (the follower busy); meanwhile the stream
    # is closed (SIGTERM). It used to raise out of the endpoint (the hub refused the subscriber)
    # and keep its slot of max_open; it gets 503, and the slot is given back.
    stream = EventStream(
        broker=RedisBroker(engine.url, key_prefix=prefix), subscribe_limits=SubscribeLimits(max_open=1)
    )
    with anyio.fail_after(30):
        async with stream:
            follower = follower_of(stream)
            async with anyio.create_task_group() as tg:
                statuses: list[int] = []

                async def request() -> None:
                    async with open_stream(stream("fresh")) as response:
                        statuses.append(response.status)

                async with follower.lock:  # the first read's results wait for the lock
                    tg.start_soon(request)
                    await wait_until(lambda: _reading(stream, "fresh"))
                    await stream.aclose()
            assert statuses == [503]
        async with stream, open_stream(stream("fresh")) as again:  # reopened: the slot is free
            assert again.status == 200


async def _reading(stream: EventStream, channel: str) -> bool:
    return channel in follower_of(stream).interest.subscribed


async def test_readiness_checks_sharing_a_ping_whose_caller_was_cancelled_send_their_own(
    via_relay: Relay, engine: RedisEngine, prefix: str
) -> None:
    # Concurrent readiness checks share one PING; when the check that sent it is cancelled
    # (its probe gave up) while the engine's answer is held, the others send their own.
    stream = through(via_relay, prefix)
    broker = broker_of(stream)
    with anyio.fail_after(30):
        async with stream:
            via_relay.hold(COMMANDS, replies_only=True)
            async with anyio.create_task_group() as tg:
                first = anyio.CancelScope()

                async def sender() -> None:
                    with first:
                        await broker.ping()

                tg.start_soon(sender)

                async def answer_held() -> bool:
                    return via_relay.holds_reply(COMMANDS)

                await wait_until(answer_held)
                done = anyio.Event()

                async def sharer() -> None:
                    await broker.ping()
                    done.set()

                tg.start_soon(sharer)
                await anyio.wait_all_tasks_blocked()  # the sharer waits for the PING in flight
                assert broker._parts._ping is not None
                first.cancel()
                via_relay.release()
                await done.wait()
