"""A resuming Server-Sent Events client for Python: :class:`EventSource`.

It behaves like the browser's ``EventSource`` (the WHATWG rules), on anyio
(asyncio or trio) and httpx, and decodes with this library's own
:class:`~eventstream.SSEDecoder`::

    from eventstream.client import EventSource

    async with EventSource("https://example.com/api/events/7") as source:
        async for event in source:      # ServerSentEvent: .event, .id, .data / .json()
            ...

When the connection fails or the response ends, it waits the server's
``retry`` (3 s until the server names one, as Chromium; backing off with
jitter while attempts keep failing) and reconnects with ``Last-Event-ID``, so
a server that keeps history (as eventstream does) sends what was missed. It
stops with :class:`EventSourceError` when the server answers anything but
``200`` with ``Content-Type: text/event-stream`` (``204 No Content`` is how a
server says "stop reconnecting").
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Final, NoReturn

import anyio
import httpx

from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder

__all__ = ["EventSource", "EventSourceError", "ServerSentEvent"]

#: Chromium's default reconnection time (Firefox uses 5 s); WHATWG leaves it to the client.
DEFAULT_RECONNECT_DELAY: Final = 3.0
#: Fallback for the backoff when the server asked for ``retry: 0``.
_BACKOFF_UNIT: Final = 0.1


class EventSourceError(Exception):
    """The server refused the stream, or sent an event too large; :class:`EventSource` stops.

    Attributes:
        url: The URL that answered (after redirects).
        status_code: The HTTP status of the answer.
        content_type: Its ``Content-Type`` header, or ``None``.
    """

    def __init__(self, message: str, *, url: str, status_code: int, content_type: str | None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.content_type = content_type


def _is_event_stream(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def _positive(name: str, value: float | None, *, allow_none: bool = False, allow_zero: bool = False) -> None:
    if value is None and allow_none:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ValueError(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number (seconds), not {value!r}"
        )


class EventSource:
    """Reads a Server-Sent Events stream, reconnecting and resuming as a browser does.

    Use it as an async context manager and iterate it: each item is a
    :class:`~eventstream.ServerSentEvent` (``.event`` is ``None`` for the
    default type a browser calls ``message``; ``.id`` the id given in that
    event; ``.text`` the data as sent; ``.json()`` parses it). Every event of
    the stream comes through, whatever its type: eventstream's own
    ``stream-open``, ``keep-alive`` and ``stream-reset`` too.

    Args:
        url: An ``http://`` or ``https://`` URL. Redirects are followed.
        headers: Extra request headers (authorization, for instance).
            ``Accept: text/event-stream`` and ``Cache-Control: no-cache`` are
            sent unless given here; ``Last-Event-ID`` is the client's own.
        client: An ``httpx.AsyncClient`` to send the requests with (its
            transport, proxies, TLS settings and HTTP/2 choice apply); it is
            left open. Without one, a client is made and closed with the
            ``EventSource``.
        last_event_id: The id to resume from on the first request.
        reconnect_delay: Seconds to wait before reconnecting until the server
            sends ``retry:`` (which then replaces it). Default 3 s, as Chromium.
        max_reconnect_delay: The cap of the exponential backoff applied while
            attempts keep failing. A server's ``retry`` above it is still obeyed.
        connect_timeout: Seconds to establish each connection.
        read_timeout: Seconds without receiving any byte after which a
            connection is taken as dead and reopened. Keep it above the
            server's keep-alive interval (eventstream's default is 20 s);
            ``None`` waits forever.
        max_event_size: The most characters one event may hold while it is
            received (its data lines and unfinished line): a server that sends
            more without ending the event gets :class:`EventSourceError`
            instead of filling the memory. ``None`` sets no limit.

    Raises:
        ValueError: a bad ``url`` scheme, delay, timeout or
            ``last_event_id`` (CR, LF or NUL), or a ``Last-Event-ID`` in
            ``headers`` (pass ``last_event_id`` instead).

    Reconnection follows WHATWG: after a network error, a read timeout or the
    end of the response, wait :attr:`reconnect_delay` and send the request
    again with ``Last-Event-ID:`` :attr:`last_event_id` (when not empty).
    When attempts fail one after the other (no byte of body received), the
    wait doubles each time up to ``max_reconnect_delay``, with jitter (between
    half and all of it, never below the server's ``retry``). It reconnects
    for as long as it is iterated; bound it with ``anyio.fail_after`` if needed.
    """

    def __init__(
        self,
        url: str | httpx.URL,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        last_event_id: str = "",
        reconnect_delay: float = DEFAULT_RECONNECT_DELAY,
        max_reconnect_delay: float = 30.0,
        connect_timeout: float = 10.0,
        read_timeout: float | None = 60.0,
        max_event_size: int | None = 16 * 1024 * 1024,
    ) -> None:
        self.url = httpx.URL(url)
        if self.url.scheme not in ("http", "https"):
            raise ValueError(f"an EventSource URL must be http:// or https://, not {str(self.url)!r}")
        self._headers = httpx.Headers(headers or {})
        if "last-event-id" in self._headers:
            raise ValueError("give the id to resume from as last_event_id=..., not as a Last-Event-ID header")
        self._headers.setdefault("accept", "text/event-stream")
        self._headers.setdefault("cache-control", "no-cache")
        SSEDecoder(last_event_id=last_event_id)  # validates it
        _positive("reconnect_delay", reconnect_delay, allow_zero=True)
        _positive("max_reconnect_delay", max_reconnect_delay)
        _positive("connect_timeout", connect_timeout)
        _positive("read_timeout", read_timeout, allow_none=True)
        if max_event_size is not None and (
            isinstance(max_event_size, bool) or not isinstance(max_event_size, int) or max_event_size < 1
        ):
            raise ValueError(f"max_event_size must be a positive int or None, not {max_event_size!r}")
        self._max_event_size = max_event_size
        self._client = client
        self._own_client = client is None
        self._last_event_id = last_event_id
        self._delay = float(reconnect_delay)
        self._max_delay = float(max_reconnect_delay)
        self._timeout = httpx.Timeout(
            connect_timeout, read=read_timeout, write=connect_timeout, pool=connect_timeout
        )
        self._random = random.Random()
        self._entered = False
        self._closed = False
        self._wakeup: anyio.Event | None = None  # made in __aenter__, inside the event loop
        self._reading = False
        self._response: httpx.Response | None = None
        self._chunks: AsyncGenerator[bytes] | None = None
        self._decoder: SSEDecoder | None = None
        self._attempts = 0
        self._failures = 0
        self.connections = 0
        """How many responses were accepted (``200`` with an event stream) so far."""

    @property
    def last_event_id(self) -> str:
        """The ``Last-Event-ID`` a reconnection would send: the id of the last event handed out.

        Per WHATWG, an event without an ``id:`` line keeps the previous one, an
        empty ``id:`` resets it, and an event cut before its end never counts.
        """
        return self._last_event_id

    @property
    def reconnect_delay(self) -> float:
        """Seconds to wait before reconnecting: the server's last ``retry``, or the initial value."""
        return self._delay

    @property
    def response(self) -> httpx.Response | None:
        """The response being read (its headers, ``http_version``), ``None`` between connections."""
        return self._response

    async def __aenter__(self) -> EventSource:
        if self._entered:
            raise RuntimeError("an EventSource can be entered only once")
        self._entered = True
        self._wakeup = anyio.Event()
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (and the client, when this object made it). Iteration then ends.

        May be called from another task than the one iterating: that iteration
        ends (``StopAsyncIteration``) instead of waiting to reconnect. Safe to
        call more than once; runs to the end even when cancelled.
        """
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()  # ends an iteration waiting to reconnect
        with anyio.CancelScope(shield=True):
            await self._drop()
            if self._own_client and self._client is not None:
                await self._client.aclose()

    def __aiter__(self) -> EventSource:
        return self

    async def __anext__(self) -> ServerSentEvent:
        """The next event, connecting and reconnecting as needed.

        Raises:
            EventSourceError: the server answered a status other than 200
                (204 included) or a ``Content-Type`` other than
                ``text/event-stream``, or sent an event larger than
                ``max_event_size``; the source is then closed.
            StopAsyncIteration: the source was closed.
            RuntimeError: the source is not entered (``async with``).
            httpx.HTTPError: errors that reconnecting cannot cure, such as
                ``httpx.TooManyRedirects`` or ``httpx.UnsupportedProtocol``.

        Cancellation: the connection being read is closed (an event half
        received is dropped, and :attr:`last_event_id` does not include it);
        the next call reconnects after :attr:`reconnect_delay`.
        """
        if not self._entered:
            raise RuntimeError("use the EventSource in `async with EventSource(...) as source:`")
        while not self._is_closed():
            decoder = self._decoder
            if decoder is not None:
                event = decoder.next_event()
                self._last_event_id = decoder.last_event_id
                if event is not NEED_DATA:
                    return event
                if self._max_event_size is not None and decoder.buffered > self._max_event_size:
                    await self._refuse_event()  # only once the events before it were taken
            chunks = self._chunks
            if chunks is None:
                await self._connect()
                continue
            try:
                self._reading = True
                try:
                    chunk = await chunks.__anext__()
                finally:
                    self._reading = False
            except (StopAsyncIteration, httpx.TransportError, httpx.DecodingError):
                await self._drop()
                continue
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await self._drop()
                if self._is_closed() and isinstance(exc, Exception):
                    break  # aclose() from another task closed the response under us
                raise
            if chunk and decoder is not None:
                self._failures = 0
                decoder.feed(chunk)
                if decoder.retry is not None:
                    self._delay = decoder.retry / 1000
        with anyio.CancelScope(shield=True):
            await self._drop()
        raise StopAsyncIteration

    async def _refuse_event(self) -> NoReturn:
        response = self._response
        assert response is not None
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._drop()
        raise EventSourceError(
            f"{response.url} sent an event of more than {self._max_event_size} characters"
            " (max_event_size) without ending it",
            url=str(response.url),
            status_code=response.status_code,
            content_type=response.headers.get("content-type"),
        )

    def _is_closed(self) -> bool:
        return self._closed

    def _next_delay(self) -> float:
        if self._failures <= 1:
            return self._delay
        unit = self._delay or _BACKOFF_UNIT
        backoff = min(self._max_delay, unit * 2.0 ** min(self._failures - 1, 32))
        return max(self._delay, backoff * self._random.uniform(0.5, 1.0))

    async def _connect(self) -> None:
        assert self._client is not None
        if self._attempts:
            assert self._wakeup is not None
            with anyio.move_on_after(self._next_delay()):
                await self._wakeup.wait()
            if self._is_closed():
                return
        self._attempts += 1
        self._failures += 1  # until a byte of body arrives
        headers = self._headers.copy()
        if self._last_event_id:  # as browsers send it: UTF-8, whatever the characters
            headers = httpx.Headers([*headers.raw, (b"last-event-id", self._last_event_id.encode())])
        request = self._client.build_request("GET", self.url, headers=headers, timeout=self._timeout)
        try:
            response = await self._client.send(request, stream=True, follow_redirects=True)
        except httpx.UnsupportedProtocol:
            raise
        except httpx.TransportError:
            return
        except Exception:
            if self._is_closed():  # aclose() from another task closed the client
                return
            raise
        if self._is_closed():
            with anyio.CancelScope(shield=True):
                await response.aclose()
            return
        try:
            self._check(response)
        except BaseException:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        self.connections += 1
        self._response = response
        self._chunks = response.aiter_bytes()  # type: ignore[assignment]
        self._decoder = SSEDecoder(last_event_id=self._last_event_id)

    @staticmethod
    def _check(response: httpx.Response) -> None:
        status, content_type = response.status_code, response.headers.get("content-type")
        if status == 204:
            message = f"{response.url} answered 204 No Content: the server asks the client to stop"
        elif status != 200:
            message = f"{response.url} answered {status} {response.reason_phrase}, not 200"
        elif not _is_event_stream(content_type):
            message = f"{response.url} answered Content-Type {content_type!r}, not text/event-stream"
        else:
            return
        raise EventSourceError(message, url=str(response.url), status_code=status, content_type=content_type)

    async def _drop(self) -> None:
        chunks, response = self._chunks, self._response
        self._response = self._decoder = None
        if self._reading:
            # aclose() from another task, which is inside chunks.__anext__(): closing
            # the response ends that read; the reading task then drops the rest.
            with contextlib.suppress(Exception):
                if response is not None:
                    await response.aclose()
            return
        self._chunks = None
        with contextlib.suppress(httpx.TransportError):
            if chunks is not None:
                await chunks.aclose()
            if response is not None:
                await response.aclose()
