"""Clients that stop reading where the live loop does not send: the replay, a catch-up, and
drop-oldest's full buffer; and one that reads again after it was left behind.

A raw ASGI ``send`` stands for the client: it blocks where a client that does not read would
hold the server's send. Timing is read on trio's mock clock (virtual time: a wait shows as
exactly its length); asyncio runs the same steps on the real clock, with the checks that do
not depend on time.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio.testing

from eventstream import EventStream
from eventstream.types import Message, Scope

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


def _trio_mock_clock() -> Any:
    """trio on a mock clock of its own (one per test: a clock keeps its time)."""
    return pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="trio")


_SCOPE: Scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}


async def _is(value: object, expected: object) -> bool:
    return value == expected


@pytest.mark.parametrize("anyio_backend", ["asyncio", _trio_mock_clock()])
async def test_a_resuming_client_that_never_reads_costs_publishers_nothing(anyio_backend: Any) -> None:
    # Its replay fills its socket, and its connection is held in that send: publishes do not
    # wait for it (it has not proven that it reads), as for a new client held in a live send.
    stream = EventStream(buffer_size=4, send_timeout=5.0, keep_alive_interval=None, handle_signals=False)
    released = anyio.Event()

    async def receive() -> Message:
        await released.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if b"data: 0\n" in message.get("body", b""):  # the replay: the client reads no more
            await released.wait()

    scope: Scope = {**_SCOPE, "headers": [(b"last-event-id", b"")]}
    with anyio.fail_after(30):
        for n in range(50):
            await stream.publish_event("a", {"data": n})
        scope["headers"] = [(b"last-event-id", f"{stream._epoch}-0".encode())]
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run, scope, receive, send, "a")
            await stream.wait_subscribers(1, "a")
            (subscriber,) = stream._hub._subscribers
            await wait_until(lambda: _is(subscriber.sending, True))  # held in its replay
            started = anyio.current_time()
            for n in range(50, 70):
                await stream.publish_event("a", {"data": n})
            if anyio_backend != "asyncio":  # virtual time: no publish waited for it
                assert anyio.current_time() == started
            assert len(subscriber.queue) > 4  # it holds more instead (then it is left behind)
            released.set()
    assert stream.statistics().subscribers_dropped == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio", _trio_mock_clock()])
async def test_a_left_behind_client_that_reads_again_is_cut_send_timeout_after_its_last_progress(
    anyio_backend: Any,
) -> None:
    # Left behind, then reading again (slowly) before send_timeout: its connection takes its
    # queue, and is not cut at the deadline it was left behind with; it catches up, ends
    # when its client leaves, and is not counted as dropped.
    send_timeout = 1.0
    stream = EventStream(
        buffer_size=4, send_timeout=send_timeout, keep_alive_interval=None, handle_signals=False
    )
    reading = anyio.Event()
    gone = anyio.Event()
    received: list[bytes] = []

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        body = message.get("body", b"")
        if b"data: " in body:
            if reading.is_set():
                await anyio.sleep(send_timeout * 0.4)  # it reads again, slowly
            else:
                await reading.wait()  # held until the client reads again
            received.append(body)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run, _SCOPE, receive, send, "a")
            await stream.wait_subscribers(1, "a")
            (subscriber,) = stream._hub._subscribers
            n = 0
            while subscriber.stalled is None:
                await stream.publish_event("a", {"data": n})
                n += 1
                await anyio.sleep(0.01)
            left_at = subscriber.stalled
            await anyio.sleep(send_timeout * 0.6)
            reading.set()  # progress before the deadline: the send ends, the queue is taken
            await anyio.sleep(send_timeout * 0.6)  # past the deadline it was left behind with
            assert stream.subscriber_count("a") == 1
            assert anyio.current_time() > left_at + send_timeout
            await wait_until(lambda: _is(subscriber.stalled, None), timeout=30)  # caught up
            await stream.publish_event("a", {"data": "live"})
            await wait_until(lambda: _is(any(b'data: "live"' in body for body in received), True))
            gone.set()
    assert stream.statistics().subscribers_dropped == 0
    data = b"".join(received)
    assert [int(line[6:]) for line in data.split(b"\n") if line[6:].isdigit()] == list(range(n))


@pytest.mark.parametrize("anyio_backend", ["asyncio", _trio_mock_clock()])
async def test_drop_oldest_disconnects_a_client_that_takes_nothing_for_send_timeout(
    anyio_backend: Any,
) -> None:
    # Its buffer full, the oldest events dropped: a client that reads again in time goes on
    # (after stream-reset); one that takes nothing for send_timeout is cut and counted as dropped.
    send_timeout = 0.3
    stream = EventStream(
        buffer_size=4,
        send_timeout=send_timeout,
        slow_consumer="drop-oldest",
        keep_alive_interval=None,
        handle_signals=False,
    )
    gone = anyio.Event()

    async def receive() -> Message:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if b"data: " in message.get("body", b""):
            await anyio.sleep_forever()  # reads nothing more (cancelled when it is cut)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run, _SCOPE, receive, send, "a")
            await stream.wait_subscribers(1, "a")
            (subscriber,) = stream._hub._subscribers
            for _ in range(16):  # a few past buffer_size: found full
                await stream.publish_event("a", {"data": 0})
            full_at = subscriber.full_since
            assert full_at is not None
            while stream.subscriber_count("a"):
                await stream.publish_event("a", {"data": 1})  # never waits (drop-oldest)
                await anyio.sleep(0.02)
            assert anyio.current_time() >= full_at + send_timeout
            if anyio_backend != "asyncio":
                assert anyio.current_time() == pytest.approx(full_at + send_timeout, abs=0.05)
            gone.set()
    statistics = stream.statistics()
    assert statistics.subscribers_dropped == 1
    assert statistics.events_dropped > 0
