"""The disconnect watch on its own: what ends the response's block, and what does not."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest

from eventstream._disconnect import DisconnectWatch
from eventstream._hub import Hub, Subscriber
from eventstream.types import Message

from .helpers import wait_until

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
