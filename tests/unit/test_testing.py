"""eventstream.testing.open_stream with apps that break the ASGI rules: each gets a clear error,
as a real server would give; and Accept headers naming the same media range twice."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest

from eventstream._serve._http import accepts_event_stream
from eventstream.testing import open_stream
from eventstream.types import ASGIApp, Receive, Scope, Send

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio


async def error_of(app: ASGIApp, *, read: bool = True, **options: Any) -> Exception:
    """What leaving open_stream raised: the error itself, never wrapped in an exception group."""
    try:
        async with open_stream(app, **options) as response:
            if read:
                await response.read()
    except BaseExceptionGroup as group:
        raise AssertionError(f"open_stream raised a group: {group!r}") from group
    except Exception as exc:
        return exc
    raise AssertionError("open_stream raised nothing")


class Refused(Exception):
    pass


async def test_an_error_raised_in_the_block_comes_out_as_it_is() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        await receive()  # returns at the disconnect

    async def block() -> None:
        async with open_stream(app) as response:
            assert response.status == 200
            raise Refused("the block's own error") from KeyError("its cause")

    with anyio.fail_after(5), pytest.raises(Refused) as caught:
        await block()
    assert isinstance(caught.value.__cause__, KeyError)  # the cause it was raised with stays


async def test_the_apps_own_error_comes_out_as_it_is() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise Refused("the app's own error")

    with anyio.fail_after(5):
        error = await error_of(app)
    assert isinstance(error, Refused)
    assert str(error) == "the app's own error"


async def test_errors_of_the_block_and_the_app_together_come_out_as_a_group() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()
        await receive()
        raise Refused("the app's error at the disconnect")

    async def block() -> None:
        async with open_stream(app):
            raise KeyError("the block's error")

    with anyio.fail_after(5), pytest.raises(BaseExceptionGroup) as caught:
        await block()
    assert caught.group_contains(Refused)
    assert caught.group_contains(KeyError)


async def test_an_app_that_returns_without_a_response_is_an_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()

    with anyio.fail_after(5):
        error = await error_of(app)
    assert isinstance(error, RuntimeError)
    assert str(error) == "the app returned without starting a response"


async def test_a_body_after_the_complete_response_is_an_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done", "more_body": False})
        await send({"type": "http.response.body", "body": b"more", "more_body": False})

    with anyio.fail_after(5):
        error = await error_of(app)
    assert isinstance(error, RuntimeError)
    assert str(error) == "the app sent a body message after the response was complete"


async def test_an_app_that_ignores_the_disconnect_is_cut_after_close_timeout() -> None:
    cancelled = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await anyio.sleep_forever()  # never looks at receive(): never sees the disconnect
        finally:
            cancelled.set()

    with anyio.fail_after(5):
        error = await error_of(app, read=False, close_timeout=0.05)
        await cancelled.wait()  # the app's task was cancelled, not left running
    assert isinstance(error, TimeoutError)
    assert str(error) == "the app did not return within 0.05 s of the client's disconnect"


@pytest.mark.parametrize(
    ("accept", "accepted"),
    [
        # The same media range twice: the larger q of the two decides.
        ("text/event-stream;q=0, text/event-stream;q=0.5", True),
        ("text/event-stream;q=0.5, text/event-stream;q=0", True),
        ("text/event-stream;q=0, text/event-stream;q=0", False),
        ("*/*;q=0, */*;q=0.1", True),
        ("text/*;q=0, text/*;q=0, */*;q=1", False),  # the more specific range decides
    ],
)
def test_a_media_range_named_twice(accept: str, accepted: bool) -> None:
    assert accepts_event_stream(accept) is accepted
