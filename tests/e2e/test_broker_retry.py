"""A publish whose reply is lost: the engine ran it, the broker retries, nothing is published twice.

A relay between one broker and a real redis-server forwards the publish
script's call to the engine and cuts the connection before the reply reaches
the broker (tests/support/reply_cutter.py). The broker retries the same batch; the
engine answers with the reply it kept. Another stream, connected directly,
stands for another process. On asyncio and trio.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import anyio
import pytest

from eventstream import EventStream, RedisBroker, ServerSentEvent
from eventstream._redis._scripts import PUBLISH
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import broker_of
from ..support.redis_engine import RedisEngine
from ..support.reply_cutter import ReplyCutter, reply_cutter

pytestmark = pytest.mark.anyio


@pytest.fixture
def cutter(engine: RedisEngine) -> Iterator[ReplyCutter]:
    with reply_cutter(engine.port) as cutter:
        yield cutter


def publish_sha() -> bytes:
    """What EVALSHA names the publish script by."""
    return hashlib.sha1(PUBLISH.encode("utf-8")).hexdigest().encode("ascii")


def make_stream(url: str, prefix: str, **options: object) -> EventStream:
    # No periodic check: the broker's command connection carries publishes only.
    broker = RedisBroker(url, key_prefix=prefix, check_interval=3600, **options)  # type: ignore[arg-type]
    return EventStream(broker=broker)


async def receive_until(response: StreamResponse, last: str) -> list[ServerSentEvent]:
    """The data events up to and including the one whose data is ``last``."""
    events: list[ServerSentEvent] = []
    while not events or events[-1].json() != last:
        event = await response.receive_event()
        assert event.event not in ("stream-reset", "stream-error")
        if event.event is None:
            events.append(event)
    return events


def lost_reply_length(cutter: ReplyCutter) -> int:
    """How many elements the lost reply had (it was an array: the script ran)."""
    assert cutter.cut_done.is_set()
    assert len(cutter.dropped) == 1
    reply = cutter.dropped[0]
    assert reply.startswith(b"*"), reply[:80]  # an array, not an error: the script ran
    return int(reply[1 : reply.index(b"\r\n")])


async def test_a_publish_whose_reply_is_lost_is_published_once(
    engine: RedisEngine, cutter: ReplyCutter, prefix: str
) -> None:
    near, far = make_stream(cutter.url, prefix), make_stream(engine.url, prefix)
    with anyio.fail_after(30):
        async with near, far, open_stream(near("news")) as mine, open_stream(far("news")) as theirs:
            await near.wait_subscribers(1, "news")
            await far.wait_subscribers(1, "news")
            await near.publish_event("news", {"data": "first"})  # the engine has the script now
            cutter.arm(publish_sha())
            published = await broker_of(near).publish("news", ServerSentEvent(data="once"))
            assert lost_reply_length(cutter) == 3  # the epoch, its seq and prev-id: it was published
            await far.publish_event("news", {"data": "end"})
            received = [await receive_until(response, "end") for response in (mine, theirs)]
    for events in received:
        assert [e.json() for e in events] == ["first", "once", "end"]
        assert events[1].id == published.id
    assert (published.id, published.prev_id) == (f"{near._epoch}-2", f"{near._epoch}-1")
    assert engine.command("HGET", f"{prefix}|state", "seq:news").strip() == b"3"
    assert engine.command("XLEN", f"{prefix}|h:news").strip() == b"3"


async def test_a_batch_whose_reply_is_lost_is_published_once(
    engine: RedisEngine, cutter: ReplyCutter, prefix: str
) -> None:
    # Events big enough that each channel's history keeps two: the batch's
    # later events trim its earlier ones before the retry asks for them.
    near = make_stream(cutter.url, prefix, max_bytes=2500)
    far = make_stream(engine.url, prefix, max_bytes=2500)
    padding = "x" * 700
    names = [f"{channel}{n}" for n in range(30) for channel in "ab"]
    returned: dict[str, str] = {}
    with anyio.fail_after(60):
        async with near, far:
            async with (
                open_stream(near("a")) as near_a,
                open_stream(near("b")) as near_b,
                open_stream(far("a")) as far_a,
                open_stream(far("b")) as far_b,
            ):
                for stream in (near, far):
                    for channel in "ab":
                        await stream.wait_subscribers(1, channel)
                await near.publish_event("a", {"data": "first"})  # the engine has the script now
                await near.publish_event("b", {"data": "first"})
                cutter.arm(b'xxx"\n', times=2)  # the end of an event's data: a batch of several

                async def publish(name: str) -> None:
                    event = ServerSentEvent(data=f"{name} {padding}")
                    returned[name] = (await broker_of(near).publish(name[0], event)).id

                async with anyio.create_task_group() as tg:
                    for name in names:
                        tg.start_soon(publish, name)
                assert lost_reply_length(cutter) > 3  # a batch of several was lost
                for channel in "ab":
                    await far.publish_event(channel, {"data": "end"})
                received = {
                    (where, channel): await receive_until(response, "end")
                    for where, channel, response in (
                        ("near", "a", near_a),
                        ("near", "b", near_b),
                        ("far", "a", far_a),
                        ("far", "b", far_b),
                    )
                }
    assert set(returned) == set(names)
    for (_where, channel), events in received.items():
        datas = [str(e.json()).split(" ")[0] for e in events]
        assert datas[0] == "first"
        assert datas[-1] == "end"
        mine = datas[1:-1]
        assert sorted(mine) == sorted(name for name in names if name[0] == channel)  # each once
        for event, name in zip(events[1:-1], mine, strict=True):
            assert event.id == returned[name]
    # The engine numbered each event once: 30 events, the first and the end.
    for channel in "ab":
        assert engine.command("HGET", f"{prefix}|state", f"seq:{channel}").strip() == b"32"


async def test_kept_answers_are_deleted_once_acknowledged(engine: RedisEngine, prefix: str) -> None:
    stream = make_stream(engine.url, prefix, publish_timeout=4, request_timeout=1)
    with anyio.fail_after(30):
        async with stream:
            for n in range(20):
                await stream.publish_event("news", {"data": n})
            async with anyio.create_task_group() as tg:
                for n in range(100):
                    tg.start_soon(stream.publish_event, "news", {"data": n})
            await stream.publish_event("news", {"data": "last"})
    # Only the last batch's answer is left (no later batch acknowledged it),
    # and it expires after publish_timeout + request_timeout + 1 s.
    kept = engine.command("KEYS", f"{prefix}|batch:*").split()
    assert len(kept) == 1
    assert 0 < int(engine.command("PTTL", kept[0].decode())) <= 6000
