"""Test SSE endpoints without a network server, on asyncio and trio.

httpx's ``ASGITransport`` collects the whole response body before returning
it, so an endless event stream hangs it. :func:`open_stream` instead runs the
ASGI app in a task and hands its body over message by message, decoded with
this library's own :class:`~eventstream.SSEDecoder`::

    from eventstream.testing import open_stream

    async with open_stream(app, "/api/events/7") as response:
        assert response.status == 200
        await stream.wait_subscribers(1, "7")
        await stream.publish_event("7", {"event": "message", "data": 1})
        assert (await response.receive_event()).event == "stream-open"
        assert (await response.receive_event()).json() == 1

Leaving the block sends ``http.disconnect`` to the app and waits for it to
return, so the endpoint's cleanup runs and is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder
from .types import ASGIApp, Message

__all__ = ["StreamResponse", "open_stream"]


class StreamResponse:
    """The response of an app under :func:`open_stream`: status, headers and a live body."""

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: MemoryObjectReceiveStream[bytes]
    ):
        #: The HTTP status the app sent.
        self.status = status
        #: The raw response headers, as the app sent them.
        self.raw_headers = headers
        #: Every body byte received so far.
        self.raw: bytearray = bytearray()
        #: How many ``http.response.body`` messages carried bytes so far.
        self.body_messages: int = 0
        self._body = body
        self._decoder = SSEDecoder()

    def header(self, name: str) -> str | None:
        """The value of response header ``name`` (any case), or ``None``."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.raw_headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def receive_bytes(self) -> bytes:
        """The next non-empty body message.

        Raises:
            anyio.EndOfStream: the response is complete.
        """
        chunk = await self._body.receive()
        self.raw += chunk
        self.body_messages += 1
        self._decoder.feed(chunk)
        return chunk

    async def receive_event(self) -> ServerSentEvent:
        """The next complete event of the body.

        Raises:
            anyio.EndOfStream: the response ended before another event.
        """
        while (event := self._decoder.next_event()) is NEED_DATA:
            await self.receive_bytes()
        return event

    async def read(self) -> bytes:
        """Wait for the end of the response and return the whole body."""
        try:
            while True:
                await self.receive_bytes()
        except anyio.EndOfStream:
            return bytes(self.raw)


@asynccontextmanager
async def open_stream(
    app: ASGIApp,
    url: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    path_params: Mapping[str, Any] | None = None,
    close_timeout: float = 5.0,
) -> AsyncIterator[StreamResponse]:
    """Run ``app`` for one HTTP request and yield its response once headers are sent.

    Args:
        app: Any ASGI 3 app.
        url: The path and query string of the request.
        method: The request method.
        headers: Request headers.
        path_params: Put in ``scope["path_params"]``, as routers do.
        close_timeout: How long, on leaving the block, the app may take to
            return after the client disconnected.

    Raises:
        TimeoutError: the app did not return within ``close_timeout`` seconds
            of the disconnect.
        RuntimeError: the app returned without starting a response.

    The app's own exceptions propagate out of the block. The response body
    is buffered a few messages deep only: an app whose client does not read
    is held up in ``send``, as it would be by a real server.
    """
    parts = urlsplit(url)
    header_items = headers.items() if isinstance(headers, Mapping) else headers
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": parts.path or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in header_items],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    if path_params is not None:
        scope["path_params"] = dict(path_params)

    disconnected = anyio.Event()
    request_sent = False
    started: list[Message] = []
    start_event = anyio.Event()
    body_send, body_receive = anyio.create_memory_object_stream[bytes](4)
    done = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal done
        if disconnected.is_set():
            raise OSError("the client disconnected")
        if message["type"] == "http.response.start":
            started.append(message)
            start_event.set()
        elif message["type"] == "http.response.body":
            if done:
                raise RuntimeError("the app sent a body message after the response was complete")
            if message.get("body"):
                try:
                    await body_send.send(message["body"])
                except anyio.BrokenResourceError:
                    raise OSError("the client disconnected") from None
            if not message.get("more_body", False):
                done = True
                body_send.close()

    app_done = anyio.Event()

    async def run_app() -> None:
        try:
            await app(scope, receive, send)
        finally:
            body_send.close()
            start_event.set()
            app_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_app)
        try:
            await start_event.wait()
            if not started:
                raise RuntimeError("the app returned without starting a response")
            response = StreamResponse(started[0]["status"], list(started[0].get("headers", [])), body_receive)
            yield response
        finally:
            disconnected.set()
            body_receive.close()
            with anyio.move_on_after(close_timeout) as waiting:
                await app_done.wait()
            if waiting.cancelled_caught:
                tg.cancel_scope.cancel()
                raise TimeoutError(
                    f"the app did not return within {close_timeout} s of the client's disconnect"
                )
