"""Client-side helpers for the tests: read a live SSE response event by event."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx

from eventstream import NEED_DATA, EventStream, RedisBroker, ServerSentEvent, SSEDecoder
from eventstream._redis._follow import EngineFollower
from eventstream.testing import StreamResponse
from eventstream.types import ASGIApp, Message


class EventReader:
    """Decodes a streaming httpx response with the library's own decoder, keeping the raw bytes."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.decoder = SSEDecoder()
        self.raw = bytearray()
        self._chunks: AsyncGenerator[bytes] = response.aiter_raw()  # type: ignore[assignment]

    async def next(self) -> ServerSentEvent:
        """The next event; raises ``EOFError`` if the stream ends first."""
        while True:
            event = self.decoder.next_event()
            if event is not NEED_DATA:
                return event
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                raise EOFError("the stream ended") from None
            self.raw += chunk
            self.decoder.feed(chunk)

    async def next_not_keep_alive(self) -> ServerSentEvent:
        while (event := await self.next()).event == "keep-alive":
            pass
        return event

    async def read_to_end(self) -> bytes:
        async for chunk in self._chunks:
            self.raw += chunk
        return bytes(self.raw)

    async def aclose(self) -> None:
        await self._chunks.aclose()


@asynccontextmanager
async def open_events(client: httpx.AsyncClient, url: str, **kwargs: Any) -> AsyncIterator[EventReader]:
    """GET ``url`` as a stream and yield a reader of its events (status not checked)."""
    async with client.stream("GET", url, **kwargs) as response:
        reader = EventReader(response)
        try:
            yield reader
        finally:
            await reader.aclose()


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not await predicate():
            await anyio.sleep(0.02)


async def answers_to_lifespan_and_websocket(app: ASGIApp) -> list[str]:
    """The message types ``app`` sends for a lifespan (startup, then shutdown) and a websocket scope."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    with anyio.fail_after(5):
        await app({"type": "lifespan"}, receive, send)
        await app({"type": "websocket"}, receive, send)
    return [message["type"] for message in sent]


def broker_of(stream: EventStream) -> RedisBroker:
    """The stream's Redis broker (a test looks inside it)."""
    broker = stream._broker
    assert isinstance(broker, RedisBroker)
    return broker


def follower_of(stream: EventStream) -> EngineFollower:
    """The running Redis broker's follower of the engine (a test looks inside it)."""
    follower = broker_of(stream)._parts.follower
    assert follower is not None
    return follower


async def receive_data(response: StreamResponse, count: int) -> list[ServerSentEvent]:
    """The next ``count`` events of an in-process stream, past ``stream-open`` and keep-alives.

    Fails on ``stream-reset`` or ``stream-error``: a test that expects one reads it itself.
    """
    events: list[ServerSentEvent] = []
    while len(events) < count:
        event = await response.receive_event()
        assert event.event not in ("stream-reset", "stream-error"), event
        if event.event not in ("stream-open", "keep-alive"):
            events.append(event)
    return events


def run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter of this environment (for what a process has once: its
    imports, OpenTelemetry's global provider); fail with its stderr unless it exits with 0."""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
