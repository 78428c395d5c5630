"""What an EventStream gets from either broker, the in-process one and the Redis one (a real engine)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import anyio
import pytest

from eventstream import EventStream, RedisBroker, ServerSentEvent
from eventstream.testing import StreamResponse, open_stream

from ..support.redis_engine import run_redis

pytestmark = pytest.mark.anyio

_prefixes = itertools.count()

MakeStream = Callable[..., EventStream]


@pytest.fixture(params=["local", "redis"])
def make_stream(request: pytest.FixtureRequest) -> Iterator[MakeStream]:
    """Builds event streams on the in-process broker, or on a private redis-server."""
    if request.param == "local":
        yield EventStream
        return
    with run_redis() as engine:

        def on_redis(**options: object) -> EventStream:
            broker = RedisBroker(engine.url, key_prefix=f"i{next(_prefixes)}:")
            return EventStream(broker=broker, **options)  # type: ignore[arg-type]

        yield on_redis


async def _take(response: StreamResponse, count: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while len(events) < count:
        event = await response.receive_event()
        if event.event not in ("stream-open", "keep-alive"):
            events.append(event)
    return events


async def _read(
    stream: EventStream, channels: list[str], count: int, into: list[ServerSentEvent], got: anyio.Event
) -> None:
    # In a task of its own, so that the stream is closed by leaving its
    # ``async with`` (a shared broker's task group ends where it started).
    async with open_stream(stream(channels)) as response:
        into += await _take(response, count)
        got.set()  # (a shared broker delivers through its feed, after publish_event returned)
        into += await _take(response, 1)  # the shutdown event
        await response.read()  # then the response ends


async def test_the_shutdown_event_ends_every_open_stream_after_its_events(make_stream: MakeStream) -> None:
    stream = make_stream(shutdown_event={"event": "bye"})
    first: list[ServerSentEvent] = []
    mixed: list[ServerSentEvent] = []
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            async with stream:
                got = [anyio.Event(), anyio.Event()]
                tg.start_soon(_read, stream, ["a"], 1, first, got[0])
                tg.start_soon(_read, stream, ["a", "b"], 2, mixed, got[1])
                await stream.wait_subscribers(2, "a")
                await stream.publish_event("a", {"data": 1})
                await stream.publish_event("b", {"data": 2})
                for event in got:
                    await event.wait()
    assert [e.event for e in first] == [None, "bye"]
    assert [e.event for e in mixed] == [None, None, "bye"]
    assert [first[0].json(), mixed[0].json(), mixed[1].json()] == [1, 1, 2]
    # The shutdown event leaves the client's last event id where it was: on one
    # channel it has no id line, on several it repeats the connection's position.
    assert first[1].id is None
    assert mixed[2].id == mixed[1].id


async def test_a_stream_reenters_and_closes_again_with_either_broker(make_stream: MakeStream) -> None:
    stream = make_stream(shutdown_event={"event": "bye"})
    with anyio.fail_after(20):
        for round_ in range(2):
            received: list[ServerSentEvent] = []
            async with anyio.create_task_group() as tg:
                async with stream:
                    got = anyio.Event()
                    tg.start_soon(_read, stream, ["a"], 1, received, got)
                    await stream.wait_subscribers(1, "a")
                    await stream.publish_event("a", {"data": round_})
                    await got.wait()
            assert [(e.event, e.json() if e.event is None else e.event) for e in received] == [
                (None, round_),
                ("bye", "bye"),
            ]
        with pytest.raises(anyio.ClosedResourceError):
            await stream.publish_event("a", {"data": "after"})
