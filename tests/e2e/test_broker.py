"""The Redis broker against a real private redis-server, in-process, on asyncio and trio.

Several ``EventStream`` instances on one engine stand for several processes
here (each has its own hub, feed connection and copy of history); the
multi-process tests are in ``test_broker_processes.py``.
"""

from __future__ import annotations

import json
import re
import time

import anyio
import pytest

from eventstream import BrokerError, EventStream, GripPublisher, Publisher, RedisBroker, ServerSentEvent
from eventstream._redis._batching import Pending
from eventstream._redis._history import SharedHistory
from eventstream._redis._idle import FORGET_AT_ONCE
from eventstream._redis._layout import EngineLayout
from eventstream._redis._publish import BatchSender
from eventstream._redis._reader import _READ_FULL, _READ_TOGETHER
from eventstream._redis._scripts import PUBLISH
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import receive_data
from ..support.redis_engine import RedisEngine, run_redis

pytestmark = pytest.mark.anyio


def make_stream(engine: RedisEngine, prefix: str, **options: object) -> EventStream:
    return EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, **options))  # type: ignore[arg-type]


async def test_events_from_every_stream_reach_every_stream_in_one_order(
    engine: RedisEngine, prefix: str
) -> None:
    streams = [make_stream(engine, prefix) for _ in range(3)]
    with anyio.fail_after(20):
        async with streams[0], streams[1], streams[2]:
            async with (
                open_stream(streams[0]("news")) as r0,
                open_stream(streams[1]("news")) as r1,
                open_stream(streams[2]("news")) as r2,
            ):
                for stream in streams:
                    await stream.wait_subscribers(1, "news")

                async def publish_from(index: int) -> None:
                    for n in range(30):
                        await streams[index].publish_event("news", {"data": f"{index}:{n}"})

                async with anyio.create_task_group() as tg:
                    for index in range(3):
                        tg.start_soon(publish_from, index)
                received = [await receive_data(r, 90) for r in (r0, r1, r2)]
    # The same events, in the same order, with the same ids, everywhere.
    assert [(e.id, e.json()) for e in received[0]] == [(e.id, e.json()) for e in received[1]]
    assert [(e.id, e.json()) for e in received[0]] == [(e.id, e.json()) for e in received[2]]
    datas = [e.json() for e in received[0]]
    assert sorted(datas) == sorted(f"{i}:{n}" for i in range(3) for n in range(30))
    for index in range(3):  # each publisher's own order is kept
        mine = [d for d in datas if d.startswith(f"{index}:")]
        assert mine == [f"{index}:{n}" for n in range(30)]
    seqs = [int(str(e.id).rsplit("-", 1)[1]) for e in received[0]]
    assert seqs == list(range(1, 91))
    assert all(re.fullmatch(rf"{streams[0]._epoch}-\d+", str(e.id)) for e in received[0])


async def test_resume_on_another_stream_and_after_every_stream_restarted(
    engine: RedisEngine, prefix: str
) -> None:
    with anyio.fail_after(20):
        first = make_stream(engine, prefix)
        async with first, open_stream(first("news")) as response:
            await first.wait_subscribers(1, "news")
            for n in range(5):
                await first.publish_event("news", {"data": n})
            seen = await receive_data(response, 5)
        last_id = seen[2].id
        assert last_id is not None
        # Nothing of `first` runs any more: a new stream (a restarted process)
        # resumes from the engine's history.
        second = make_stream(engine, prefix)
        async with second:
            await second.publish_event("news", {"data": 5})
            async with open_stream(second("news"), headers={"last-event-id": last_id}) as response:
                replay = await receive_data(response, 3)
                await second.publish_event("news", {"data": 6})
                live = await receive_data(response, 1)
    assert [e.json() for e in replay] == [3, 4, 5]
    assert [e.id for e in replay[:2]] == [seen[3].id, seen[4].id]
    assert [e.json() for e in live] == [6]


async def test_multi_channel_ids_are_valid_on_another_stream(engine: RedisEngine, prefix: str) -> None:
    a, b = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with a, b:
            async with open_stream(a(["x", "y"])) as response:
                await a.wait_subscribers(1, "x")
                await a.publish_event("x", {"data": "x1"})
                await b.publish_event("y", {"data": "y1"})
                seen = await receive_data(response, 2)
            await b.publish_event("x", {"data": "x2"})
            await a.publish_event("y", {"data": "y2"})
            last = seen[-1].id
            assert last is not None
            async with open_stream(b(["x", "y"]), headers={"last-event-id": last}) as response:
                replay = await receive_data(response, 2)
    assert sorted(e.json() for e in replay) == ["x2", "y2"]


async def test_a_connection_on_more_channels_than_one_read_holds_gets_each_ones_history(
    engine: RedisEngine, prefix: str
) -> None:
    # The channels a connection needs are read together, _READ_TOGETHER per call of the
    # read script: three calls here, for channels followed already and channels new here.
    names = [f"c{n}" for n in range(2 * _READ_TOGETHER + 3)]
    reader, writer = (
        EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), max_channels=len(names)) for _ in "rw"
    )
    with anyio.fail_after(30):
        async with reader, writer:
            async with open_stream(reader(names[: _READ_TOGETHER + 1])) as response:  # followed from now on
                await reader.wait_subscribers(1)
            async with open_stream(writer(names)) as response:
                await writer.wait_subscribers(1)
                for name in names:
                    await writer.publish_event(name, {"data": f"{name}-1"})
                last = (await receive_data(response, len(names)))[-1].id
            assert last is not None
            for name in names:
                await writer.publish_event(name, {"data": f"{name}-2"})
            async with open_stream(reader(names), headers={"last-event-id": last}) as response:
                replay = await receive_data(response, len(names))
    assert sorted(e.json() for e in replay) == sorted(f"{name}-2" for name in names)


async def test_channels_read_together_get_their_number_whatever_their_names(
    engine: RedisEngine, prefix: str
) -> None:
    # The read script takes each channel's field in the state hash from its key's
    # name: names holding the key's separators, spaces or "seq:" get their own number
    # (also where the engine lost their history: the number alone tells how far it went).
    names = ["a|b", "h:x", "|lead", "two words", "seq:y", "caf\u00e9 \u2603"]
    writer, reader = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(30):
        async with writer, reader:
            for name in names:
                for n in range(2 + names.index(name)):
                    await writer.publish_event(name, {"data": f"{name}-{n}"})
            engine.command("DEL", f"{prefix}|h:two words")  # its number stays in the state hash
            async with open_stream(reader(names)) as response:
                await reader.wait_subscribers(1)
                history = reader._broker.history
                assert isinstance(history, SharedHistory)
                assert {name: history.last_seq[name] for name in names} == {
                    name: 2 + index for index, name in enumerate(names)
                }
                await writer.publish_event("two words", {"data": "next"})
                (event,) = await receive_data(response, 1)
                assert event.json() == "next"
                assert history.last_seq["two words"] == 2 + names.index("two words") + 1


async def test_connections_opening_together_on_new_channels_share_reads_and_miss_nothing(
    engine: RedisEngine, prefix: str
) -> None:
    # Connections that open at the same time on channels new to this process are
    # read together (fewer requests than connections); each channel's copy holds
    # its history, then the events that follow, without a gap, and each
    # connection gets the events of its own channels, once each.
    connections, per = 12, 8
    names = [[f"n{c}-{k}" for k in range(per)] for c in range(connections)]
    writer = make_stream(engine, prefix)
    reader = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), max_channels=per)
    received: dict[int, list[str]] = {c: [] for c in range(connections)}
    with anyio.fail_after(30):
        async with writer, reader:
            for group in names:
                for name in group:
                    for n in range(2):
                        await writer.publish_event(name, {"data": f"{name}-{n}"})
            calls = engine.calls("evalsha")

            async def follow(c: int) -> None:
                async with open_stream(reader(names[c])) as response:
                    received[c] = [event.json() for event in await receive_data(response, per)]

            async with anyio.create_task_group() as tg:
                for c in range(connections):
                    tg.start_soon(follow, c)
                await reader.wait_subscribers(connections)
                reads = engine.calls("evalsha") - calls
                for group in names:
                    for name in group:
                        await writer.publish_event(name, {"data": f"{name}-2"})
            history = reader._broker.history
            assert isinstance(history, SharedHistory)
            kept = {name: history.since(name, 0) for group in names for name in group}
    assert 1 <= reads < connections
    assert received == {c: [f"{name}-2" for name in names[c]] for c in range(connections)}
    for name, entries in kept.items():
        assert entries is not None
        assert [(entry.seq, json.loads(entry.body.removeprefix(b"data: "))) for entry in entries] == [
            (n + 1, f"{name}-{n}") for n in range(3)
        ]


async def test_a_read_of_channels_with_long_histories_takes_several_calls_and_keeps_every_entry(
    engine: RedisEngine, prefix: str
) -> None:
    # One call of the read script returns about _READ_FULL channels' full
    # histories at most: a connection on more full channels than that reads the
    # others in a second call; empty channels cost nothing against that budget.
    full = [f"full{n}" for n in range(_READ_FULL + 6)]
    empty = [f"empty{n}" for n in range(40)]
    names = [*full[:30], *empty, *full[30:]]
    writer = make_stream(engine, prefix, max_events=2)
    reader = EventStream(
        broker=RedisBroker(engine.url, key_prefix=prefix, max_events=2), max_channels=len(names)
    )
    with anyio.fail_after(30):
        async with writer, reader:
            for name in full:
                for n in range(2):
                    await writer.publish_event(name, {"data": f"{name}-{n}"})
            async with open_stream(reader("warm-up")):  # the engine has the read script from now on
                pass
            calls = engine.calls("evalsha")
            async with open_stream(reader(names)):
                await reader.wait_subscribers(1)
                reads = engine.calls("evalsha") - calls
            history = reader._broker.history
            assert isinstance(history, SharedHistory)
            kept = {name: history.since(name, 0) for name in names}
    assert reads == 2
    assert {name: [e.seq for e in entries or ()] for name, entries in kept.items()} == {
        **{name: [1, 2] for name in full},
        **{name: [] for name in empty},
    }
    assert all(
        json.loads(entry.body.removeprefix(b"data: ")) == f"{name}-{entry.seq - 1}"
        for name in full
        for entry in kept[name] or ()
    )


async def test_channels_of_any_valid_name_are_read_together_each_from_its_own_keys(
    engine: RedisEngine, prefix: str
) -> None:
    # Names with white space, the separators of the keys' layout, escapes and other
    # scripts' characters: each is read, in one call, from its own keys.
    names = ["a b", "x|h:y", "seq:z", "100%", "back\\slash", "é-ü", "名前", "'quoted'", "[*]", "n" * 200]
    writer = make_stream(engine, prefix, max_events=3)
    reader = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix, max_events=3))
    with anyio.fail_after(30):
        async with writer, reader:
            for number, name in enumerate(names):
                for n in range(number % 3 + 1):
                    await writer.publish_event(name, {"data": f"{name}/{n}"})
            async with open_stream(reader("warm-up")):  # the engine has the read script from now on
                pass
            calls = engine.calls("evalsha")
            async with open_stream(reader(names)) as response:
                await reader.wait_subscribers(1)
                reads = engine.calls("evalsha") - calls
                await writer.publish_event("a b", {"data": "live"})
                assert [e.json() for e in await receive_data(response, 1)] == ["live"]
            history = reader._broker.history
            assert isinstance(history, SharedHistory)
            kept = {
                name: [json.loads(e.body.removeprefix(b"data: ")) for e in history.since(name, 0) or ()]
                for name in names[1:]
            }
    assert reads == 1
    assert kept == {
        name: [f"{name}/{n}" for n in range(number % 3 + 1)] for number, name in enumerate(names) if number
    }


async def test_lost_history_gets_stream_reset(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine, prefix, max_events=3)
    with anyio.fail_after(20):
        async with stream:
            for n in range(5):  # the history keeps 3-5, and the client has seen only 1
                await stream.publish_event("news", {"data": n})
            async with open_stream(
                stream("news"), headers={"last-event-id": f"{stream._epoch}-1"}
            ) as response:
                assert (await response.receive_event()).event == "stream-open"
                assert (await response.receive_event()).event == "stream-reset"


async def test_own_ids_and_find(engine: RedisEngine, prefix: str) -> None:
    a, b = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with a, b:
            await a.publish_event("news", {"data": 1, "id": "mine-1"})
            await a.publish_event("news", {"data": 2})
            async with open_stream(b("news"), headers={"last-event-id": "mine-1"}) as response:
                replay = await receive_data(response, 1)
    assert replay[0].json() == 2


class _Unannounced(EngineLayout):
    """The broker's keys, but pub/sub channels that no feed reads."""

    def __init__(self, key_prefix: str) -> None:
        super().__init__(key_prefix, 0)
        self.feed_prefix = f"{key_prefix}|nowhere:"


async def publish_unannounced(engine: RedisEngine, stream: EventStream, channel: str, *data: object) -> None:
    """Publish as the broker does (its sender and script, on the engine, a connection of the test's
    own), but announce the events on a pub/sub channel no feed reads: as if every feed missed them."""
    from glide import GlideClient, GlideClientConfiguration, NodeAddress, Script

    broker = stream._broker
    assert isinstance(broker, RedisBroker)
    sender = BatchSender(
        engine=broker.description,
        layout=_Unannounced(broker.key_prefix),
        max_events=broker.max_events,
        max_bytes=broker.max_bytes,
        max_age=broker.max_age,
        request_timeout=broker.request_timeout,
        publish_timeout=broker.publish_timeout,
    )
    items = [Pending(channel, ServerSentEvent(data=each)._body, None, time.monotonic() + 10) for each in data]
    client = await GlideClient.create(GlideClientConfiguration([NodeAddress("127.0.0.1", engine.port)]))
    try:
        await sender.send(client, Script(PUBLISH), items)  # type: ignore[no-untyped-call]
    finally:
        await client.close()
    assert [item.error for item in items] == [None] * len(items)


async def test_a_feed_gap_is_filled_from_history_before_newer_events(
    engine: RedisEngine, prefix: str
) -> None:
    stream, other = make_stream(engine, prefix), make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with stream, other, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            await other.publish_event("news", {"data": 0})
            assert [e.json() for e in await receive_data(response, 1)] == [0]
            await publish_unannounced(engine, other, "news", 1, 2)
            await other.publish_event("news", {"data": 3})
            received = await receive_data(response, 3)
    assert [e.json() for e in received] == [1, 2, 3]
    assert [int(str(e.id).rsplit("-", 1)[1]) for e in received] == [2, 3, 4]


async def test_a_quiet_channel_catches_up_by_the_periodic_check(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine, prefix, check_interval=0.2)
    with anyio.fail_after(20):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            await publish_unannounced(engine, stream, "news", "missed")
            received = await receive_data(response, 1)
    assert received[0].json() == "missed"


async def read_forever(response: StreamResponse, into: list[ServerSentEvent]) -> None:
    while True:
        into.append(await response.receive_event())


async def test_history_gone_for_a_gap_ends_the_stream_for_a_reset(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine, prefix, max_events=2)
    with anyio.fail_after(20):
        async with stream:
            async with open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                await stream.publish_event("news", {"data": 0})
                last = (await receive_data(response, 1))[0].id
                # far beyond what MAXLEN ~ keeps (whole nodes of 100)
                await publish_unannounced(engine, stream, "news", *range(1, 400))
                await stream.publish_event("news", {"data": "new"})
                after: list[ServerSentEvent] = []
                with pytest.raises(anyio.EndOfStream):
                    await read_forever(response, after)
                # The stream ended without skipping silently to newer events.
                assert [e for e in after if e.event != "keep-alive"] == []
            assert last is not None
            async with open_stream(stream("news"), headers={"last-event-id": last}) as response:
                assert (await response.receive_event()).event == "stream-open"
                assert (await response.receive_event()).event == "stream-reset"


async def test_unreachable_engine_is_a_clear_error(prefix: str) -> None:
    from ..support.servers import free_port

    stream = EventStream(broker=RedisBroker(f"redis://127.0.0.1:{free_port()}/0", publish_timeout=2))
    with anyio.fail_after(20), pytest.raises(BrokerError, match=r"redis://127\.0\.0\.1:\d+/0"):
        async with stream:
            pass


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost",
        "redis://",
        "redis://host:99999",
        "redis://host/x",
        "redis://host/0?x=1",
        "redis://h:1/0#f",
    ],
)
def test_malformed_urls_are_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match=r"broker URL|port"):
        EventStream(broker=url)


def test_password_is_not_echoed() -> None:
    with pytest.raises(ValueError, match="database number") as info:
        EventStream(broker="redis://user:s3cret@host/db")
    assert "s3cret" not in str(info.value)


def test_history_and_grip_options_conflict_with_a_broker() -> None:
    from eventstream import MemoryHistory

    with pytest.raises(ValueError, match="history"):
        EventStream(broker="redis://127.0.0.1:1/0", history=MemoryHistory())
    with pytest.raises(TypeError):
        EventStream(broker=42)  # type: ignore[arg-type]


async def test_not_entered_refuses_streams_and_publishes(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine, prefix)
    with anyio.fail_after(10):
        async with open_stream(stream("news")) as response:
            assert response.status == 503
        with pytest.raises(RuntimeError, match="not running"):
            await stream.publish_event("news", {"data": 1})


async def test_publisher_reaches_streams_async_and_from_a_thread(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine, prefix)
    with anyio.fail_after(30):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            async with Publisher(broker=RedisBroker(engine.url, key_prefix=prefix)) as publisher:
                first_id = await publisher.publish_event("news", {"event": "message", "data": "async"})
                with pytest.raises(ValueError, match="channel"):
                    await publisher.publish_event("bad,name", {"data": 1})
            blocking = Publisher(broker=RedisBroker(engine.url, key_prefix=prefix))
            try:
                ids = [
                    await anyio.to_thread.run_sync(blocking.publish_event_sync, "news", {"data": n})
                    for n in range(3)
                ]
            finally:
                await anyio.to_thread.run_sync(blocking.close)
            received = await receive_data(response, 4)
    assert [e.json() for e in received] == ["async", 0, 1, 2]
    assert [e.id for e in received] == [first_id, *ids]


async def test_publisher_must_be_entered(engine: RedisEngine, prefix: str) -> None:
    publisher = Publisher(broker=engine.url)
    with pytest.raises(RuntimeError, match="enter"):
        await publisher.publish_event("news", {"data": 1})


def test_sync_publisher_reports_an_unreachable_engine() -> None:
    from ..support.servers import free_port

    publisher = Publisher(broker=RedisBroker(f"redis://127.0.0.1:{free_port()}/0", publish_timeout=2))
    with publisher, pytest.raises(BrokerError, match=r"cannot connect|timed out"):
        publisher.publish_event_sync("news", {"data": 1})


async def test_engine_restart_mid_burst_loses_nothing_acknowledged(prefix: str) -> None:
    with run_redis() as own:
        stream, other = make_stream(own, prefix), make_stream(own, prefix)
        acknowledged: list[int] = []
        failures: list[BrokerError] = []
        with anyio.fail_after(60):
            async with stream, other, open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")

                done = anyio.Event()

                async def burst() -> None:
                    n = 0
                    while not done.is_set():
                        try:
                            await other.publish_event("news", {"data": n})
                        except BrokerError as exc:
                            failures.append(exc)
                        else:
                            acknowledged.append(n)
                        n += 1

                async with anyio.create_task_group() as tg:
                    tg.start_soon(burst)
                    received: list[ServerSentEvent] = []
                    received += await receive_data(response, 50)
                    await anyio.to_thread.run_sync(own.stop)  # SIGTERM: the append-only file is written
                    before = len(acknowledged)
                    await anyio.to_thread.run_sync(own.start)
                    while len(acknowledged) < before + 50:  # the burst goes on after the restart
                        await anyio.sleep(0.01)  # polled under the test's deadline
                    done.set()
                await other.publish_event("news", {"data": "end"})
                while not received or received[-1].json() != "end":
                    event = await response.receive_event()
                    assert event.event not in ("stream-reset", "stream-error")
                    if event.event is None:
                        received.append(event)
    values = [e.json() for e in received[:-1]]
    assert len(values) == len(set(values)), "duplicates"
    assert set(acknowledged) <= set(values), "an acknowledged event is missing"
    seqs = [int(str(e.id).rsplit("-", 1)[1]) for e in received]
    assert seqs == sorted(seqs)
    for failure in failures:
        assert own.url.rsplit("/", 1)[0] in str(failure)


async def test_engine_down_publish_fails_within_the_timeout_and_streams_stay_open(prefix: str) -> None:
    with run_redis() as own:
        stream = EventStream(
            broker=RedisBroker(own.url, key_prefix=prefix, publish_timeout=1.5, request_timeout=0.5),
            keep_alive_interval=0.2,
        )
        with anyio.fail_after(60):
            async with stream, open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                await anyio.to_thread.run_sync(own.stop)
                started = anyio.current_time()
                with pytest.raises(BrokerError) as info:
                    await stream.publish_event("news", {"data": "lost"})
                elapsed = anyio.current_time() - started
                assert own.url.rsplit("/", 1)[0] in str(info.value)
                assert info.value.attempts > 1
                # Attempts went unanswered: the engine may have run one.
                assert info.value.maybe_published
                assert "may have published" in str(info.value)
                assert 1.5 <= elapsed < 5
                # The stream stays open: keep-alives go on.
                events = [await response.receive_event() for _ in range(3)]
                assert [e.event for e in events][-2:] == ["keep-alive", "keep-alive"]
                await anyio.to_thread.run_sync(own.start)
                await wait_published(stream, "back")
                # "May have published": an attempt the engine's client still held (on a busy
                # machine) can reach the engine once it is back. Then it is delivered once,
                # in its place in the channel's order.
                data: list[object] = []
                while not data or data[-1] != "back":
                    event = await response.receive_event()
                    if event.event != "keep-alive":
                        data.append(event.json())
                assert data in (["back"], ["lost", "back"])


async def wait_published(stream: EventStream, data: str) -> None:
    """Publish once the engine is back (the client reconnects with backoff)."""
    while True:
        try:
            await stream.publish_event("news", {"data": data})
            return
        except BrokerError:
            await anyio.sleep(0.1)  # retried under the caller's deadline


async def test_sync_publish_is_refused_inside_an_event_loop(engine: RedisEngine) -> None:
    publisher = Publisher(broker=engine.url)
    with pytest.raises(RuntimeError, match="await publish_event"):
        publisher.publish_event_sync("news", {"data": 1})
    publisher.close()


async def test_credentials_from_the_url(prefix: str) -> None:
    with run_redis() as own:
        own.command("ACL", "SETUSER", "app", "on", ">s3cret", "~*", "&*", "+@all")
        own.command("CONFIG", "SET", "requirepass", "other")  # the default user needs a password now
        url = f"redis://app:s3cret@127.0.0.1:{own.port}/0"
        stream = make_stream_url(url, prefix)
        with anyio.fail_after(30):
            async with stream, open_stream(stream("news")) as response:
                await stream.wait_subscribers(1, "news")
                await stream.publish_event("news", {"data": "authenticated"})
                assert (await receive_data(response, 1))[0].json() == "authenticated"
            wrong = make_stream_url(f"redis://app:wrong@127.0.0.1:{own.port}/0", prefix)
            with pytest.raises(BrokerError) as info:
                async with wrong:
                    pass
            assert "wrong" not in str(info.value)


async def test_an_event_the_engine_refuses_is_known_unpublished(prefix: str) -> None:
    with run_redis() as own:
        # A user that may read and write keys but not run scripts.
        own.command("ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-@scripting")
        stream = make_stream_url(f"redis://noscripts:pw@127.0.0.1:{own.port}/0", prefix)
        with anyio.fail_after(30):
            async with stream:
                with pytest.raises(BrokerError) as info:
                    await stream.publish_event("news", {"data": "refused"})
        assert info.value.attempts == 1
        assert not info.value.maybe_published
        assert "NOPERM" in info.value.reason or "permission" in info.value.reason.lower()
        assert "may have published" not in str(info.value)


def make_stream_url(url: str, prefix: str) -> EventStream:
    return EventStream(broker=RedisBroker(url, key_prefix=prefix, publish_timeout=3))


async def test_engine_down_new_streams_on_followed_channels_only(prefix: str) -> None:
    with run_redis() as own:
        stream = EventStream(broker=RedisBroker(own.url, key_prefix=prefix, request_timeout=0.5))
        with anyio.fail_after(60):
            async with stream:
                async with open_stream(stream("followed")) as response:
                    assert response.status == 200
                await anyio.to_thread.run_sync(own.stop)
                async with open_stream(stream("followed")) as response:
                    assert response.status == 200  # served from this process's copy
                async with open_stream(stream("never-seen")) as response:
                    assert response.status == 503
                    assert response.header("retry-after") == "5"
                    assert f"127.0.0.1:{own.port}" in (await response.read()).decode()


async def test_concurrent_publishes_batched_some_cancelled(engine: RedisEngine, prefix: str) -> None:
    # The stream is read only after the burst: history covers all of it, so a
    # subscriber left behind on a loaded machine catches up instead of getting stream-reset.
    stream = make_stream(engine, prefix, max_events=4096, max_bytes=4 * 1024 * 1024)
    acknowledged: list[str] = []
    with anyio.fail_after(60):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")

            async def publisher(name: str) -> None:
                for n in range(5):
                    await stream.publish_event("news", {"data": f"{name}:{n}"})
                    acknowledged.append(f"{name}:{n}")

            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as doomed:
                    async with anyio.create_task_group() as cancelled:
                        for index in range(100):
                            cancelled.start_soon(publisher, f"c{index}")
                        for index in range(200):
                            tg.start_soon(publisher, f"p{index}")
                        await anyio.sleep(0)
                        doomed.cancel()
            # Every call returned (none was left waiting for a batch), and the
            # engine numbered what it got without holes.
            assert all(f"p{index}:4" in acknowledged for index in range(200))
            await stream.publish_event("news", {"data": "end"})
            received: list[ServerSentEvent] = []
            while not received or received[-1].json() != "end":
                received += await receive_data(response, 1)
    values = [e.json() for e in received[:-1]]
    assert len(values) == len(set(values))
    assert set(acknowledged) <= set(values)
    seqs = [int(str(e.id).rsplit("-", 1)[1]) for e in received]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_a_task_publishing_without_pause_can_be_cancelled(engine: RedisEngine, prefix: str) -> None:
    # A lone publisher sends each batch itself (shielded, so others' events are
    # not stranded); it must still see cancellation between publishes.
    stream = make_stream(engine, prefix)
    published = 0
    fifty = anyio.Event()
    with anyio.fail_after(20):
        async with stream:
            async with anyio.create_task_group() as tg:

                async def publish_forever() -> None:
                    nonlocal published
                    while True:
                        await stream.publish_event("news", {"data": published})
                        published += 1
                        if published == 50:
                            fifty.set()

                tg.start_soon(publish_forever)
                await fifty.wait()
                tg.cancel_scope.cancel()
            stopped_at = published
            # Nothing publishes once the task group is left.
            await stream.publish_event("news", {"data": "after"})
            assert published == stopped_at


async def test_channels_nobody_asked_for_are_not_copied_and_idle_ones_are_forgotten(
    engine: RedisEngine, prefix: str
) -> None:
    stream = make_stream(engine, prefix, max_age=0.5, check_interval=0.1)
    other = make_stream(engine, prefix)
    with anyio.fail_after(20):
        async with stream, other:
            broker = stream._broker
            assert isinstance(broker, RedisBroker)
            history = broker.history
            assert isinstance(history, SharedHistory)
            await other.publish_event("unwatched", {"data": 1})
            async with open_stream(stream("watched")) as response:
                await stream.wait_subscribers(1, "watched")
                await other.publish_event("watched", {"data": 2})
                assert [e.json() for e in await receive_data(response, 1)] == [2]
            assert history.last("unwatched") is None  # never followed: no copy
            assert history.last("watched") is not None
            while "watched" in history.last_seq:  # aged out and idle: forgotten
                await anyio.sleep(0.05)  # polled under the deadline
            async with open_stream(
                stream("watched"), headers={"last-event-id": f"{stream._epoch}-0"}
            ) as response:
                assert (await response.receive_event()).event == "stream-open"
                assert (await response.receive_event()).event == "stream-reset"  # the engine aged it out too


async def test_thousands_of_idle_channels_are_all_forgotten_and_a_watched_one_is_kept(
    engine: RedisEngine, prefix: str
) -> None:
    # The periodic check forgets idle channels FORGET_AT_ONCE at a time: more than two slices here.
    names = [f"idle{n}" for n in range(2 * FORGET_AT_ONCE + 64)]
    stream = EventStream(
        broker=RedisBroker(engine.url, key_prefix=prefix, check_interval=0.1, max_age=0.5), max_channels=64
    )
    with anyio.fail_after(30):
        async with stream:
            broker = stream._broker
            assert isinstance(broker, RedisBroker)
            history = broker.history
            assert isinstance(history, SharedHistory)
            async with open_stream(stream("watched")) as watched:
                await stream.wait_subscribers(1, "watched")
                for start in range(0, len(names), 64):  # each connection loads 64 new channels
                    async with open_stream(stream(names[start : start + 64])):
                        await stream.wait_subscribers(2)
                while any(name in history.last_seq for name in names):  # idle: forgotten
                    await anyio.sleep(0.05)  # polled under the deadline
                assert "watched" in history.last_seq
                await stream.publish_event("watched", {"data": 1})
                assert [e.json() for e in await receive_data(watched, 1)] == [1]


async def test_aclose_from_a_task_of_its_own_ends_the_streams_and_the_exit_stops_the_rest(
    engine: RedisEngine, prefix: str
) -> None:
    broker = RedisBroker(engine.url, key_prefix=prefix)
    grip = GripPublisher("http://127.0.0.1:9/")  # never contacted: nothing is published through it
    stream = EventStream(broker=broker, grip=grip)
    with anyio.fail_after(20):
        async with stream:
            async with open_stream(stream("news")) as response:
                await stream.wait_subscribers(1)
                # Another task, in a task group entered after the stream: its broker and
                # GRIP publisher cannot be stopped from there, only when the stream exits.
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stream.aclose)
                await response.read()  # the stream ended cleanly
            with pytest.raises(anyio.ClosedResourceError):
                await stream.publish_event("news", {"data": 1})
            running = [grip.running]
        running.append(grip.running)
        assert running == [True, False]  # stopped by the exit, not by aclose()
        with pytest.raises(RuntimeError):
            await broker.publish("news", ServerSentEvent(data=1))


async def test_a_running_broker_refuses_a_second_entry_and_a_new_hub(
    engine: RedisEngine, prefix: str
) -> None:
    broker = RedisBroker(engine.url, key_prefix=prefix)
    stream = EventStream(broker=broker)
    with anyio.fail_after(20):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            with pytest.raises(RuntimeError, match="the broker is already running"):
                await broker.__aenter__()
            with pytest.raises(RuntimeError, match="bind the hub before entering the broker"):
                EventStream(broker=broker)  # a second stream would take the running broker's hub
            # The refused calls changed nothing: the stream still publishes and delivers.
            await stream.publish_event("news", {"data": "still served"})
            assert [event.json() for event in await receive_data(response, 1)] == ["still served"]
