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

import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder
from .types import ASGIApp, Message

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

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


def _request_scope(
    url: str,
    method: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    path_params: Mapping[str, Any] | None,
    client: tuple[str, int] = ("127.0.0.1", 50000),
) -> dict[str, Any]:
    """The ASGI ``http`` scope of one request from ``client`` to ``testserver``."""
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
        "client": (client[0], client[1]),
        "server": ("testserver", 80),
    }
    if path_params is not None:
        scope["path_params"] = dict(path_params)
    return scope


class _Exchange:
    """The client's side of one request: ``receive`` and ``send`` for the app, and its response."""

    def __init__(self) -> None:
        self.disconnected = anyio.Event()
        self.started = anyio.Event()
        self.returned = anyio.Event()
        self.start: Message | None = None
        self.body_send, self.body_receive = anyio.create_memory_object_stream[bytes](4)
        self._request_sent = False
        self._complete = False

    async def receive(self) -> Message:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set():
            raise OSError("the client disconnected")
        if message["type"] == "http.response.start":
            self.start = message
            self.started.set()
        elif message["type"] == "http.response.body":
            if self._complete:
                raise RuntimeError("the app sent a body message after the response was complete")
            if message.get("body"):
                try:
                    await self.body_send.send(message["body"])
                except anyio.BrokenResourceError:
                    raise OSError("the client disconnected") from None
            if not message.get("more_body", False):
                self._complete = True
                self.body_send.close()

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        finally:
            self.body_send.close()
            self.started.set()
            self.returned.set()


def _alone(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` and its nested groups, or None if it holds several."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error


@asynccontextmanager
async def open_stream(
    app: ASGIApp,
    url: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    path_params: Mapping[str, Any] | None = None,
    close_timeout: float = 5.0,
    client: tuple[str, int] = ("127.0.0.1", 50000),
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
        client: The client's ``(host, port)``, put in ``scope["client"]``.

    Raises:
        TimeoutError: the app did not return within ``close_timeout`` seconds
            of the disconnect.
        RuntimeError: the app returned without starting a response, or sent
            a body message after the complete response.

    The app's own exceptions and those raised in the block propagate out of
    it as they are; only several at once come out as an exception group.
    The response body is buffered a few messages deep only: an app whose
    client does not read is held up in ``send``, as it would be by a real
    server.
    """
    scope = _request_scope(url, method, headers, path_params, client)
    exchange = _Exchange()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(exchange.run, app, scope)
            try:
                await exchange.started.wait()
                if exchange.start is None:
                    raise RuntimeError("the app returned without starting a response")
                start = exchange.start
                yield StreamResponse(start["status"], list(start.get("headers", [])), exchange.body_receive)
            finally:
                exchange.disconnected.set()
                exchange.body_receive.close()
                with anyio.move_on_after(close_timeout) as waiting:
                    await exchange.returned.wait()
                if waiting.cancelled_caught:
                    tg.cancel_scope.cancel()
                    raise TimeoutError(
                        f"the app did not return within {close_timeout} s of the client's disconnect"
                    )
    except BaseExceptionGroup as group:
        error = _alone(group)
        if error is None:
            raise
    else:
        return
    raise error  # outside the handler: its own cause and context stay as they were
