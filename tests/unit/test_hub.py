"""The hub, writers and the endpoint, driven in-process through eventstream.testing."""

from __future__ import annotations

import importlib
import re
from collections.abc import AsyncIterator

import anyio
import anyio.lowlevel
import pytest

import eventstream._stream._singleton
from eventstream import EventStream, MemoryHistory, ServerSentEvent, encode, get_event_stream_singleton
from eventstream._core import Hub
from eventstream.testing import StreamResponse, open_stream
from eventstream.types import Message, Scope

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


async def _is(value: object, expected: object) -> bool:
    return value == expected


async def next_data(response: StreamResponse) -> object:
    event = await response.receive_event()
    while event.event in ("stream-open", "keep-alive"):
        event = await response.receive_event()
    return event.json()


async def test_publish_reaches_every_subscriber_once_in_order() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with (
            open_stream(stream("news")) as first,
            open_stream(stream(["news", "sport"])) as both,
            open_stream(stream("sport")) as sport,
        ):
            await stream.wait_subscribers(2, "news")
            await stream.wait_subscribers(2, "sport")
            for i in range(50):
                await stream.publish_event("news", {"event": "message", "data": i})
                await stream.publish_event("sport", ServerSentEvent(data=-i))
            assert [await next_data(first) for _ in range(50)] == list(range(50))
            assert [await next_data(sport) for _ in range(50)] == [-i for i in range(50)]
            received = [await next_data(both) for _ in range(100)]
            assert received == [x for i in range(50) for x in (i, -i)]
        assert stream.subscriber_count() == 0
    stats = stream.statistics()
    assert stats.events_published == 100
    assert stats.events_delivered == 200
    assert dict(stats.channels) == {}


async def test_duplicate_channels_in_one_request_deliver_once() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with open_stream(stream(["a", " a ", "a"])) as response:
            await stream.wait_subscribers(1, "a")
            await stream.publish_event("a", {"data": 1})
            await stream.publish_event("a", {"data": 2})
            assert [await next_data(response), await next_data(response)] == [1, 2]
            assert dict(stream.statistics().channels) == {"a": 1}


async def test_stream_open_bytes_and_headers() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with open_stream(stream("test")) as response:
            assert response.status == 200
            assert response.header("content-type") == "text/event-stream"
            assert response.header("cache-control") == "no-cache"
            assert response.header("x-accel-buffering") == "no"
            assert response.header("connection") is None
            await stream.wait_subscribers(1, "test")
            await stream.publish_event("test", {"event": "message", "data": {"name": "John"}})
            await response.receive_event()
            await response.receive_event()
            assert re.fullmatch(
                rb"event: stream-open\ndata: \n\n"
                rb'event: message\ndata: {"name":"John"}\nid: [0-9a-f]{8}-1\n\n',
                bytes(response.raw),
            )


async def test_publish_without_subscribers_returns_at_once() -> None:
    stream = EventStream()
    with anyio.fail_after(1):
        for _ in range(1000):
            await stream.publish_event("nobody", {"data": 1})
    assert stream.statistics().events_published == 1000


async def test_invalid_publish_raises_and_sends_nothing() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with open_stream(stream("x")) as response:
            await stream.wait_subscribers(1, "x")
            with pytest.raises(ValueError, match="CR, LF or NUL"):
                await stream.publish_event("x", {"event": "bad\nname", "data": 1})
            with pytest.raises(ValueError, match="CR, LF or NUL"):
                await stream.publish_event("x", {"id": "1\r", "data": 1})
            with pytest.raises(TypeError, match="not JSON serializable"):
                await stream.publish_event("x", {"data": {1, 2}})
            with pytest.raises(TypeError, match="unexpected keyword"):
                await stream.publish_event("x", {"nonsense": 1})
            with pytest.raises(TypeError, match="ServerSentEvent or a mapping"):
                await stream.publish_event("x", "just a string")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="must not be empty"):
                await stream.publish_event("", {"data": 1})
            await stream.publish_event("x", {"data": "good"})
            assert await next_data(response) == "good"
    assert stream.statistics().events_published == 1


async def test_a_publisher_that_never_waits_lets_others_run_and_can_be_cancelled() -> None:
    # Most publishes return without yielding (no coroutine, no checkpoint); one in
    # every few yields, so the rest of the program runs and cancellation lands.
    stream = EventStream()
    turns = 0
    published = 0
    stop = anyio.Event()

    async def other_task() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await anyio.lowlevel.checkpoint()

    async def publisher() -> None:
        nonlocal published
        while True:
            await stream.publish_event("nobody", {"data": 1})
            published += 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            await anyio.lowlevel.checkpoint()
            with anyio.move_on_after(0) as scope:  # already expired: cancelled at its first checkpoint
                await publisher()
            assert scope.cancelled_caught
            assert 0 < published <= 64
            before = turns
            for _ in range(640):
                await stream.publish_event("nobody", {"data": 1})
            assert turns - before >= 10  # the other task ran while this one published
            stop.set()


class _LooksLikeX:
    """Not a str, yet equal to "x" and hashed like it (a dict lookup cannot tell them apart)."""

    def __hash__(self) -> int:
        return hash("x")

    def __eq__(self, other: object) -> bool:
        return other == "x"


async def test_a_publish_checks_its_channel_name_whether_or_not_anybody_listens() -> None:
    # Names somebody subscribed to were checked then; the publish must still refuse
    # what is not a str, and a name past the limit that nobody subscribed to.
    stream = EventStream(max_channel_name_length=12)
    with anyio.fail_after(10):
        async with open_stream(stream(["x", "twelve-chars"])) as response:
            await stream.wait_subscribers(1, "x")
            with pytest.raises(TypeError, match="must be a str, not _LooksLikeX"):
                await stream.publish_event(_LooksLikeX(), {"data": 1})  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="must be a str, not list"):
                await stream.publish_event(["x"], {"data": 1})  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="control character"):
                await stream.publish_event("x\x00", {"data": 1})
            with pytest.raises(ValueError, match="the limit is 12"):
                await stream.publish_event("thirteen-char", {"data": 1})
            with pytest.raises(AttributeError):
                stream.max_channel_name_length = 8  # type: ignore[misc]  # built from frozen options
            await stream.publish_event("x", {"data": "good"})
            assert await next_data(response) == "good"
    assert stream.statistics().events_published == 1


async def test_writer_blocks_while_a_subscriber_is_full() -> None:
    # Backpressure without deadline is the "block" policy; the default one
    # leaves a subscriber behind when it takes nothing (tested below).
    stream = EventStream(buffer_size=2, send_timeout=30, slow_consumer="block")
    produced = 0

    async def ticker(n: int) -> AsyncIterator[ServerSentEvent]:
        nonlocal produced
        for i in range(n):
            produced += 1
            yield ServerSentEvent(event="tick", data=i)

    with anyio.fail_after(20):
        async with open_stream(stream("ticks")) as response, anyio.create_task_group() as tg:
            await stream.wait_subscribers(1, "ticks")

            async def pipe() -> None:
                async with stream.channel_writer("ticks") as writer:
                    assert await writer.pipe(ticker(500)) == 500

            tg.start_soon(pipe)
            await anyio.wait_all_tasks_blocked()
            # The client reads nothing: the producer is held after a handful of
            # events (buffers of the subscriber, the pump and the transport).
            blocked_at = produced
            assert 0 < blocked_at < 20
            await anyio.wait_all_tasks_blocked()
            assert produced == blocked_at
            assert [await next_data(response) for _ in range(500)] == list(range(500))
    assert stream.statistics().subscribers_dropped == 0


async def test_slow_subscriber_is_evicted_while_fast_ones_keep_receiving() -> None:
    stream = EventStream(buffer_size=4, send_timeout=0.2)
    with anyio.fail_after(20):
        async with open_stream(stream("c")) as fast, open_stream(stream("c")) as slow:
            await stream.wait_subscribers(2, "c")
            async with anyio.create_task_group() as tg:

                async def publish() -> None:
                    for i in range(1000):
                        await stream.publish_event("c", {"data": i})

                tg.start_soon(publish)
                assert [await next_data(fast) for _ in range(1000)] == list(range(1000))
            # Left behind once it took nothing (the test transport holds 4 messages, of at most
            # 8 x buffer_size events each, while nobody reads), cut 0.2 s after its last progress.
            await wait_until(lambda: _is(stream.statistics().subscribers_dropped, 1))
            assert stream.subscriber_count("c") == 1
            # The evicted stream ends after what it held; it never saw all 1000.
            body = await slow.read()
            assert body.count(b"\n\n") < 1001
            assert stream.subscriber_count("c") == 1


async def test_a_new_client_that_never_reads_never_holds_the_publisher() -> None:
    # A client that stops reading at once: its connection is held in a send while its buffer
    # fills. Publishes do not wait for it at all (it holds up to 8 x 32 events more, then it is
    # left behind, and cut send_timeout later); the honest reader beside it gets everything.
    stream = EventStream(buffer_size=4, send_timeout=0.5)
    total = 2000
    with anyio.fail_after(20):
        async with open_stream(stream("c")) as honest, open_stream(stream("c")):
            await stream.wait_subscribers(2, "c")
            published = anyio.Event()
            received: list[object] = []

            async def publish() -> None:
                for i in range(total):
                    await stream.publish_event("c", {"data": i})
                published.set()

            async def read() -> None:
                while len(received) < total:
                    event = await honest.receive_event()
                    assert event.event in (None, "stream-open"), event  # no stream-reset
                    if event.event is None:
                        received.append(event.json())

            async with anyio.create_task_group() as tg:
                tg.start_soon(publish)
                tg.start_soon(read)
                # Every task is blocked only once the publisher is done: before, it waited
                # 0.1 s for the non-reader (blocked) while nothing else could run.
                await anyio.wait_all_tasks_blocked()
                assert published.is_set()
            assert received == list(range(total))
            await wait_until(lambda: _is(stream.statistics().subscribers_dropped, 1))
            assert stream.subscriber_count("c") == 1


async def test_concurrent_publishers_into_a_full_buffer_keep_their_order() -> None:
    # Publishes that find the buffer full queue behind it and wait their turn:
    # nothing is lost and each publisher's events arrive in its own order.
    stream = EventStream(buffer_size=2, slow_consumer="block")
    with anyio.fail_after(20):
        async with open_stream(stream("c")) as response, anyio.create_task_group() as tg:
            await stream.wait_subscribers(1, "c")

            async def publisher(name: str) -> None:
                for i in range(50):
                    await stream.publish_event("c", {"data": [name, i]})

            tg.start_soon(publisher, "a")
            tg.start_soon(publisher, "b")
            received: list[list[object]] = []
            for _ in range(100):
                data = await next_data(response)
                assert isinstance(data, list)
                received.append(data)
    for name in ("a", "b"):
        assert [item[1] for item in received if item[0] == name] == list(range(50))


async def test_left_behind_subscriber_catches_up_from_history() -> None:
    # A client that reads nothing while 200 events are published does not hold
    # the publisher (it waits for it at most 0.1 s), and once it reads it gets
    # every event, in order, from its queue and then from history.
    stream = EventStream(buffer_size=4, send_timeout=30)
    with anyio.fail_after(20):
        async with open_stream(stream("c")) as paused:
            await stream.wait_subscribers(1, "c")
            started = anyio.current_time()
            for i in range(200):
                await stream.publish_event("c", {"data": i})
            assert anyio.current_time() - started < 5  # not 200 x send_timeout, nor one
            received: list[object] = []
            while len(received) < 200:
                event = await paused.receive_event()
                assert event.event not in ("stream-reset", "stream-error")
                if event.event is None:
                    received.append(event.json())
            assert received == list(range(200))
            # Rejoined: live events come through the queue again.
            await stream.publish_event("c", {"data": "live"})
            assert await next_data(paused) == "live"
    stats = stream.statistics()
    assert stats.subscribers_dropped == 0
    assert stats.events_delivered == 201


async def test_left_behind_subscriber_gets_reset_when_history_is_short() -> None:
    stream = EventStream(buffer_size=4, send_timeout=30, history=MemoryHistory(max_events=10))
    with anyio.fail_after(20):
        async with open_stream(stream("c")) as paused:
            await stream.wait_subscribers(1, "c")
            for i in range(1000):
                await stream.publish_event("c", {"data": i})
            # Runs of consecutive events, each after a reset but the first: what it held, in
            # order, then a reset where history (10 events) no longer had what it missed. (The
            # test transport holds a few messages while nobody reads, so the client may be left
            # behind, and told to reset, more than once.) After a reset, the next event comes.
            runs: list[list[int]] = [[]]
            while True:
                event = await paused.receive_event()
                if event.event == "stream-reset":
                    runs.append([])
                    await stream.publish_event("c", {"data": "after"})
                elif event.event is None:
                    data = event.json()
                    if data == "after":
                        break
                    assert isinstance(data, int)
                    runs[-1].append(data)
            assert len(runs) > 1
            assert runs[0] == list(range(len(runs[0])))
            assert all(run == list(range(run[0], run[0] + len(run))) for run in runs[1:] if run)
            assert sum(map(len, runs)) < 990


async def test_unsubscribe_on_disconnect() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        for _ in range(20):
            async with open_stream(stream(["a", "b"])):
                await stream.wait_subscribers(1, "a")
                assert stream.statistics().channels == {"a": 1, "b": 1}
            assert stream.subscriber_count() == 0
            assert dict(stream.statistics().channels) == {}


async def test_writes_are_coalesced() -> None:
    stream = EventStream(buffer_size=100)
    with anyio.fail_after(10):
        async with open_stream(stream("c")) as response:
            await stream.wait_subscribers(1, "c")
            await response.receive_event()  # stream-open
            messages_before = response.body_messages
            for i in range(50):
                await stream.publish_event("c", {"data": i})
            assert [await next_data(response) for _ in range(50)] == list(range(50))
            assert response.body_messages - messages_before < 10


async def test_keep_alive_after_idle_interval() -> None:
    stream = EventStream(keep_alive_interval=0.05)
    with anyio.fail_after(10):
        async with open_stream(stream("idle")) as response:
            assert (await response.receive_event()).event == "stream-open"
            event = await response.receive_event()
            assert event.event == "keep-alive"
            assert encode(event) == b"event: keep-alive\ndata: \n\n"


async def test_no_keep_alive_does_not_busy_loop() -> None:
    stream = EventStream(keep_alive_interval=None)
    with anyio.fail_after(10):
        async with open_stream(stream("idle")) as response:
            await response.receive_event()
            await anyio.wait_all_tasks_blocked()
            assert response.body_messages == 1
            await stream.publish_event("idle", {"data": 1})
            assert await next_data(response) == 1


async def test_channel_writer_is_an_object_send_stream() -> None:
    stream = EventStream()
    writer = stream.channel_writer("w")
    assert isinstance(writer, anyio.abc.ObjectSendStream)
    async with writer:
        await writer.send({"data": 1})
        with pytest.raises(ValueError, match="CR, LF or NUL"):
            await writer.send({"id": "\n"})
    with pytest.raises(anyio.ClosedResourceError):
        await writer.send({"data": 2})
    await writer.aclose()  # idempotent
    with pytest.raises(ValueError, match="channel name"):
        stream.channel_writer("bad;name")


async def test_channel_publisher() -> None:
    stream = EventStream()
    publisher = stream.get_channel_publisher("p")
    assert publisher.channel == "p"
    with anyio.fail_after(10):
        async with open_stream(stream("p")) as response:
            await stream.wait_subscribers(1, "p")
            await publisher.publish_event(ServerSentEvent(event="message", data="hi"))
            assert await next_data(response) == "hi"


async def test_aclose_ends_streams_and_refuses_new_ones() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with open_stream(stream("x")) as response:
            await stream.wait_subscribers(1, "x")
            await stream.publish_event("x", {"data": "last"})
            async with stream:
                pass
            body = await response.read()
            assert re.search(rb'data: "last"\nid: \S+\n\n$', body)
        async with open_stream(stream("x")) as refused:
            assert refused.status == 503
        with pytest.raises(anyio.ClosedResourceError):
            await stream.publish_event("x", {"data": 1})


async def test_callable_channels_sync_and_async() -> None:
    stream = EventStream()

    async def async_channels(scope: Scope) -> list[str]:
        return ["async-" + str(scope["path"]).strip("/")]

    with anyio.fail_after(10):
        async with (
            open_stream(stream(lambda scope: "sync"), "/") as sync_response,
            open_stream(stream(async_channels), "/room") as async_response,
        ):
            await stream.wait_subscribers(1, "sync")
            await stream.wait_subscribers(1, "async-room")
            await stream.publish_event("sync", {"data": "s"})
            await stream.publish_event("async-room", {"data": "a"})
            assert await next_data(sync_response) == "s"
            assert await next_data(async_response) == "a"


async def test_path_params_fill_tokens() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        async with open_stream(stream(["room-{id}", "user-{user}"]), path_params={"id": 7, "user": "u"}):
            await stream.wait_subscribers(1, "room-7")
            await stream.wait_subscribers(1, "user-u")


async def test_run_direct_form() -> None:
    stream = EventStream()

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await stream.run(scope, receive, send, ["direct"])  # type: ignore[arg-type]

    with anyio.fail_after(10):
        async with open_stream(app) as response:  # type: ignore[arg-type]
            await stream.wait_subscribers(1, "direct")
            await stream.publish_event("direct", {"data": 1})
            assert await next_data(response) == 1


async def test_lifespan_is_answered() -> None:
    stream = EventStream()
    app = stream("x")
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[object] = []

    async def receive() -> dict[str, str]:
        return next(incoming)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    with anyio.fail_after(5):
        await app({"type": "lifespan"}, receive, send)  # type: ignore[arg-type]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_singleton_survives_reload() -> None:
    first = get_event_stream_singleton()
    assert get_event_stream_singleton() is first
    assert get_event_stream_singleton("other", buffer_size=8) is not first
    reloaded = importlib.reload(eventstream._stream._singleton)
    assert reloaded.get_event_stream_singleton() is first


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"buffer_size": 0}, "buffer_size"),
        ({"send_timeout": 0}, "send_timeout"),
        ({"keep_alive_interval": -1}, "keep_alive_interval"),
        ({"max_channels": 0}, "max_channels"),
        ({"send_timeout": True}, "send_timeout must be a positive number of seconds, not True"),
        ({"keep_alive_interval": True}, "keep_alive_interval must be a positive number of seconds or None"),
    ],
)
def test_invalid_options(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EventStream(**kwargs)  # type: ignore[arg-type]


async def test_oserror_from_send_ends_the_stream_without_disconnect_message() -> None:
    # ASGI 2.4 servers may only report a gone client by raising OSError from send.
    stream = EventStream()
    sent: list[bytes] = []
    never = anyio.Event()

    async def receive() -> Message:
        await never.wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            if len(sent) == 2:
                raise OSError("connection reset")
            sent.append(message["body"])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            scope: Scope = {"type": "http", "method": "GET", "headers": []}
            tg.start_soon(stream.run, scope, receive, send, "x")
            await stream.wait_subscribers(1, "x")
            for i in range(3):
                await stream.publish_event("x", {"data": i})
                await anyio.wait_all_tasks_blocked()  # one body message per event
            await stream.wait_subscribers(0, "x")
    assert sent[0] == b"event: stream-open\ndata: \n\n"
    assert re.match(rb"data: 0\nid: [0-9a-f]{8}-1\n\n", sent[1])
    assert len(sent) == 2  # nothing was sent after the OSError


async def test_a_closed_hub_refuses_new_subscribers_and_keeps_none() -> None:
    # What a request racing the stream's shutdown meets after its checks (a remote broker's
    # prepare() awaited meanwhile): a clear error, and no subscriber left registered.
    hub = Hub(buffer_size=4, send_timeout=5.0)
    first = hub.subscribe(["news"])
    assert hub.close() == [first]
    with pytest.raises(anyio.ClosedResourceError, match="the event stream has been closed"):
        hub.subscribe(["news"])
    assert first.closed
    assert hub.subscriber_count() == 0  # the one it ended is gone; the refused one never joined


async def test_a_cancelled_wait_for_subscribers_leaves_no_waiter_behind() -> None:
    stream = EventStream()
    with anyio.fail_after(10):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.wait_subscribers, 1, "news")
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        assert stream._lifecycle._waiters == []
        async with anyio.create_task_group() as tg:  # a later wait is still woken
            tg.start_soon(stream.wait_subscribers, 1, "news")
            async with open_stream(stream("news")) as response:
                assert (await response.receive_event()).event == "stream-open"
                await stream.wait_subscribers(1, "news")
