"""The disconnect watch on its own: what ends the response's block, and what does not."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

from eventstream._backends import DisconnectWatch
from eventstream._core import Hub, Subscriber
from eventstream.types import Message

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


@dataclass
class _Response:
    hub: Hub
    subscriber: Subscriber
    completing: bool = False


def _response() -> _Response:
    hub = Hub(buffer_size=4, send_timeout=5.0)
    return _Response(hub, hub.subscribe(["news"]))


class _Client:
    """A server's receive(): http.request first, then what the test says."""

    def __init__(self) -> None:
        self.calls = 0
        self.gone = anyio.Event()
        self.error: Exception | None = None

    async def receive(self) -> Message:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        if self.error is not None:
            raise self.error
        return {"type": "http.disconnect"}


async def test_a_disconnect_ends_the_block_quietly() -> None:
    client = _Client()
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, _response()):
            client.gone.set()
            await anyio.sleep_forever()
    assert client.calls == 2  # past the request message, to the disconnect


async def test_a_connection_reset_is_a_disconnect() -> None:
    client = _Client()
    client.error = ConnectionResetError("reset by peer")
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, _response()):
            client.gone.set()
            await anyio.sleep_forever()


async def test_a_failing_receive_is_raised_after_the_block() -> None:
    client = _Client()
    client.error = RuntimeError("the server broke")

    async def respond() -> None:
        async with DisconnectWatch(client.receive, _response()):
            client.gone.set()
            await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(Exception) as raised:  # noqa: PT011 - a group on trio
        await respond()
    errors = getattr(raised.value, "exceptions", (raised.value,))
    assert [str(error) for error in errors] == ["the server broke"]


async def test_the_deadline_the_hub_moves_ends_the_block() -> None:
    client = _Client()
    response = _response()
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, response) as watch:
            response.subscriber.cancel_scope = watch.scope
            response.hub.close(grace=0.05)  # moves the scope's deadline
            await anyio.sleep_forever()
    assert not client.gone.is_set()


async def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    client = _Client()
    reached_after = False
    with anyio.fail_after(5):
        with anyio.move_on_after(0.05) as outer:
            async with DisconnectWatch(client.receive, _response()):
                await anyio.sleep_forever()
            reached_after = True
    assert outer.cancelled_caught
    assert not reached_after


async def test_a_disconnect_while_completing_does_not_cancel() -> None:
    client = _Client()
    response = _response()
    finished = False
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, response):
            response.completing = True
            client.gone.set()

            async def asked_twice() -> bool:
                return client.calls == 2

            await wait_until(asked_twice)  # the second receive() returns the disconnect at once
            # Every other task blocked or done: the watch has read the disconnect.
            await anyio.wait_all_tasks_blocked()
            finished = True
    assert finished


# -- trio: a memory channel's receive() also runs the keep-alive ------------------------

_SCOPE = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}


def _task_names() -> list[str]:
    import trio

    names: list[str] = []
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        names.append(task.coro.__qualname__)
        pending.extend(child for nursery in task.child_nurseries for child in nursery.child_tasks)
    return names


@pytest.mark.parametrize("memory_channel", [True, False])
def test_on_trio_a_memory_channel_receive_runs_the_keep_alive_without_a_timer_task(
    memory_channel: bool,
) -> None:
    # hypercorn's receive() is a trio memory channel's, which loses nothing when
    # cancelled: the watcher then waits for messages in a scope whose deadline is the
    # keep-alive's, and no timer task runs. Any other receive() keeps the timer task.
    import trio
    import trio.testing

    from eventstream import EventStream

    async def main() -> None:
        stream = EventStream(keep_alive_interval=5.0)
        to_app, from_client = trio.open_memory_channel[Message](10)
        await to_app.send({"type": "http.request", "body": b"", "more_body": False})

        async def other_receive() -> Message:
            return await from_client.receive()

        bodies: list[tuple[float, bytes]] = []
        changed = trio.Event()

        async def sink(message: Message) -> None:
            nonlocal changed
            bodies.append((trio.current_time(), message.get("body", b"")))
            changed.set()
            changed = trio.Event()

        async def written(part: bytes) -> float:
            with trio.fail_after(60):  # virtual seconds
                while not any(part in body for _, body in bodies):
                    await changed.wait()
            return next(when for when, body in bodies if part in body)

        receive = from_client.receive if memory_channel else other_receive
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.run, dict(_SCOPE), receive, sink, "news")
            opened = await written(b"stream-open")
            await trio.testing.wait_all_tasks_blocked()
            assert ("_TrioWaiter._run_timer" in _task_names()) is not memory_channel
            # Idle: the keep-alive comes after the interval.
            assert await written(b"keep-alive") - opened == pytest.approx(5.0, abs=0.01)
            # A delivery moves it later; a message other than a disconnect is taken and ignored.
            await trio.sleep(3.0)
            await to_app.send({"type": "http.request", "body": b"", "more_body": False})
            await stream.publish_event("news", {"data": "tick"})
            delivered = await written(b"tick")
            bodies.clear()
            assert await written(b"keep-alive") - delivered == pytest.approx(5.0, abs=0.01)
            # The client leaves while a keep-alive deadline is armed: the stream ends at once.
            left = trio.current_time()
            await to_app.send({"type": "http.disconnect"})
            with trio.fail_after(1):
                await stream.wait_subscribers(0)
            assert trio.current_time() - left < 0.01
            assert ("_TrioWaiter._run_timer" in _task_names()) is False

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


class _FailingAtCall:
    """A server's receive() that is a plain callable: the request first, then it raises
    at the call itself, before returning anything to await."""

    def __init__(self, error: Exception) -> None:
        self.calls = 0
        self.error = error

    def receive(self) -> object:
        self.calls += 1
        if self.calls == 1:
            return self._request()
        raise self.error

    async def _request(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}


async def test_a_receive_failing_at_the_call_is_raised_after_the_block() -> None:
    client = _FailingAtCall(RuntimeError("the server broke at the call"))

    async def respond() -> None:
        async with DisconnectWatch(client.receive, _response()):  # type: ignore[arg-type]
            await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(Exception) as raised:  # noqa: PT011 - a group on trio
        await respond()
    errors = getattr(raised.value, "exceptions", (raised.value,))
    assert [str(error) for error in errors] == ["the server broke at the call"]


async def test_an_os_error_at_the_call_is_a_disconnect() -> None:
    client = _FailingAtCall(ConnectionResetError("reset by peer"))
    with anyio.fail_after(5):
        async with DisconnectWatch(client.receive, _response()):  # type: ignore[arg-type]
            await anyio.sleep_forever()
    assert client.calls == 2
