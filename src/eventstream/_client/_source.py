"""The reconnecting reader, :class:`EventSource` (public as ``eventstream.client.EventSource``)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Final, NoReturn

import anyio
import httpx

from .._base import check_seconds
from .._sse import NEED_DATA, ServerSentEvent, SSEDecoder, header_problem
from ._body import ACCEPT_ENCODING, Body, codings
from ._http import INCURABLE, EventSourceError, cannot_resume, check_response, open_stream, too_large

__all__ = ["DEFAULT_RECONNECT_DELAY", "EventSource"]

#: Chromium's default reconnection time (Firefox uses 5 s); WHATWG leaves it to the client.
DEFAULT_RECONNECT_DELAY: Final = 3.0
#: Fallback for the backoff when the server asked for ``retry: 0``.
_BACKOFF_UNIT: Final = 0.1
#: A response open this long (seconds) ends the backoff; one that ends sooner counts as a failure.
_STEADY_AFTER: Final = 1.0
#: The most bytes of body decompressed and decoded at a time, once the events before are taken.
_PIECE: Final = 64 * 1024


class EventSource:
    """Reads a Server-Sent Events stream, reconnecting and resuming as a browser does.

    Use it as an async context manager and iterate it: each item is a
    :class:`~eventstream.ServerSentEvent` (``.event`` is ``None`` for the
    default type a browser calls ``message``; ``.id`` the id given in that
    event; ``.text`` the data as sent; ``.json()`` parses it). Every event of
    the stream comes through, whatever its type: eventstream's own
    ``stream-open``, ``keep-alive`` and ``stream-reset`` too.

    Args:
        url: An ``http://`` or ``https://`` URL. Redirects are followed
            (unless the ``client`` given has ``follow_redirects=False``), up to
            the client's ``max_redirects``; to another origin (scheme, host or
            port), without ``headers``, ``Last-Event-ID`` nor the client's
            ``Authorization`` and ``auth``.
        headers: Extra request headers (authorization, for instance), sent to
            the URL's origin only. ``Accept: text/event-stream``,
            ``Cache-Control: no-cache`` and ``Accept-Encoding: gzip, deflate``
            are sent unless given here; ``Last-Event-ID`` is the client's own.
            Bodies in gzip or deflate are decompressed a piece at a time, as
            events are taken: a small compressed body cannot fill the memory
            (a corrupt one is dropped and the stream resumed, as after a
            network error).
        client: An ``httpx.AsyncClient`` to send the requests with (its
            transport, proxies, TLS settings, HTTP/2 choice and
            ``follow_redirects`` apply); it is left open. Without one, a
            client that follows redirects is made and closed with the
            ``EventSource``.
        last_event_id: The id to resume from on the first request.
        reconnect_delay: Seconds to wait before reconnecting until the server
            sends ``retry:`` (which then replaces it). Default 3 s, as Chromium.
        max_reconnect_delay: The cap of the exponential backoff applied while
            attempts keep failing or responses keep ending at once. A server's
            ``retry`` above it is still obeyed.
        connect_timeout: Seconds to establish each connection.
        read_timeout: Seconds without receiving any byte after which a
            connection is taken as dead and reopened. Keep it above the
            server's keep-alive interval (eventstream's default is 20 s);
            ``None`` waits forever.
        max_event_size: The most one event may hold while it is received: the
            characters of its data lines and unfinished line, each data line
            counting 24 more (what a line costs besides its characters: the
            memory held stays under about 4 bytes a unit). A server that sends
            more without ending the event gets :class:`EventSourceError`
            instead of filling the memory. ``None`` sets no limit.

    Raises:
        ValueError: a bad ``url`` scheme, delay, timeout or
            ``last_event_id`` (CR, LF, NUL, another control character but a
            tab, or a space or tab at an end: it could not be sent in a
            header), or a ``Last-Event-ID`` in ``headers`` (pass
            ``last_event_id`` instead).

    Reconnection follows WHATWG: after a network error, a read timeout or the
    end of the response, wait :attr:`reconnect_delay` and send the request
    again with ``Last-Event-ID:`` :attr:`last_event_id` (when not empty).
    When attempts fail one after the other (no connection, or a response
    that ended within a second without handing out an event), the wait
    doubles each time up to ``max_reconnect_delay``, with jitter (between
    half and all of it, never below the server's ``retry``). After any
    response that ended within a second, the wait is at least 0.05 to 0.1 s,
    even with ``retry: 0``. It reconnects for as long as it is iterated;
    bound it with ``anyio.fail_after`` if needed.
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
        self.url: httpx.URL = httpx.URL(url)
        if self.url.scheme not in ("http", "https"):
            raise ValueError(f"an EventSource URL must be http:// or https://, not {str(self.url)!r}")
        self._headers = httpx.Headers(headers or {})
        if "last-event-id" in self._headers:
            raise ValueError("give the id to resume from as last_event_id=..., not as a Last-Event-ID header")
        # What goes to another origin after a redirect: none of the headers given here.
        self._plain_headers = httpx.Headers(
            {"accept": "text/event-stream", "cache-control": "no-cache", "accept-encoding": ACCEPT_ENCODING}
        )
        for name, value in self._plain_headers.items():
            self._headers.setdefault(name, value)
        SSEDecoder(last_event_id=last_event_id)  # validates it
        if (problem := header_problem(last_event_id)) is not None:
            raise ValueError(
                f"last_event_id {last_event_id!r} cannot be sent in a Last-Event-ID header: {problem}"
            )
        check_seconds("reconnect_delay", reconnect_delay, allow_zero=True)
        check_seconds("max_reconnect_delay", max_reconnect_delay)
        check_seconds("connect_timeout", connect_timeout)
        check_seconds("read_timeout", read_timeout, allow_none=True)
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
        self._connecting: anyio.CancelScope | None = None  # the wait and request of _connect
        self._iterating = False  # a task is inside __anext__
        self._reading = False
        self._response: httpx.Response | None = None
        self._chunks: AsyncGenerator[bytes] | None = None
        self._body: Body | None = None
        self._decoder: SSEDecoder | None = None
        self._opened_at = 0.0
        self._handed_out = False  # the response being read handed out an event
        self._quick = False  # the last response ended less than _STEADY_AFTER seconds after it began
        self._answered: tuple[str, int, str | None] = (str(self.url), 0, None)  # the last accepted response
        self._attempts = 0
        self._failures = 0
        self.connections: int = 0
        """How many responses were accepted (``200`` with an event stream) so far."""

    @property
    def last_event_id(self) -> str:
        """The ``Last-Event-ID`` a reconnection would send: the id of the last event handed out.

        Per WHATWG, an event without an ``id:`` line keeps the previous one, an
        empty ``id:`` resets it, and an event cut before its end never counts.
        It is kept as received; one that cannot be sent in a header makes the
        next reconnection raise :class:`EventSourceError`. Non-ASCII ids are
        sent as UTF-8, as browsers do.
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
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (and the client, when this object made it). Iteration then ends.

        May be called from another task than the one iterating: that iteration
        ends (``StopAsyncIteration``), whether it was reading, waiting to
        reconnect or waiting for an answer (the request is cancelled: a client
        passed in is not closed, yet the wait ends). Safe to call more than
        once; runs to the end even when cancelled.
        """
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()  # the iteration then finds the source closed
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
                (204 included, and a redirect the client does not follow), a
                ``Content-Type`` other than ``text/event-stream``, a
                ``Content-Encoding`` other than gzip or deflate, or a redirect
                to a URL that is not ``http://`` or ``https://``; or sent an
                event larger than ``max_event_size``; or the source must
                reconnect after an ``id`` it cannot send back in
                ``Last-Event-ID`` (a space or tab at an end, a control
                character), as resuming is then impossible. The source is
                then closed.
            StopAsyncIteration: the source was closed.
            RuntimeError: the source is not entered (``async with``), or
                another task is iterating it (that one reads on, undisturbed).
            httpx.HTTPError: errors that reconnecting cannot cure, such as
                ``httpx.TooManyRedirects``, ``httpx.UnsupportedProtocol`` or
                ``httpx.LocalProtocolError`` (a header the client refuses to
                send); the source is then closed.
            httpx.InvalidURL: a redirect to a malformed URL; the source is
                then closed.

        Cancellation: the connection being read is closed (an event half
        received is dropped, and :attr:`last_event_id` does not include it);
        the next call reconnects after :attr:`reconnect_delay`.
        """
        if not self._entered:
            raise RuntimeError("use the EventSource in `async with EventSource(...) as source:`")
        if self._iterating:  # before touching anything: the connection is the other task's
            raise RuntimeError("this EventSource is already being iterated by another task")
        self._iterating = True
        try:
            return await self._next_event()
        finally:
            self._iterating = False

    async def _next_event(self) -> ServerSentEvent:
        while not self._is_closed():
            decoder = self._decoder
            if decoder is not None:
                event = decoder.next_event()
                self._last_event_id = decoder.last_event_id
                if event is not NEED_DATA:
                    self._handed_out = True
                    return event
                if self._max_event_size is not None and decoder.buffered > self._max_event_size:
                    await self._refuse_event()  # only once the events before it were taken
            chunks, body = self._chunks, self._body
            if chunks is None or body is None or decoder is None:
                await self._connect()
                continue
            try:
                piece = body.take(_PIECE)  # decoded only as events are taken: a bounded piece
            except httpx.DecodingError:
                await self._drop()
                continue
            if piece:
                decoder.feed(piece)
                if decoder.retry is not None:
                    self._delay = decoder.retry / 1000
                continue
            try:
                self._reading = True
                try:
                    body.give(await chunks.__anext__())
                finally:
                    self._reading = False
            except (StopAsyncIteration, httpx.TransportError):
                await self._drop()
                continue
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await self._drop()
                if self._is_closed() and isinstance(exc, Exception):
                    break  # aclose() from another task closed the response under us
                raise
        with anyio.CancelScope(shield=True):
            await self._drop()
        raise StopAsyncIteration

    async def _refuse_event(self) -> NoReturn:
        response, limit = self._response, self._max_event_size
        assert response is not None
        assert limit is not None
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._drop()
        raise too_large(response, limit)

    def _is_closed(self) -> bool:
        return self._closed

    def _next_delay(self) -> float:
        if self._failures <= 1:
            if self._quick:  # the last response ended at once, whatever it held: never at once again
                return max(self._delay, _BACKOFF_UNIT * self._random.uniform(0.5, 1.0))
            return self._delay
        unit = self._delay or _BACKOFF_UNIT
        backoff = min(self._max_delay, unit * 2.0 ** min(self._failures - 1, 32))
        return max(self._delay, backoff * self._random.uniform(0.5, 1.0))

    async def _connect(self) -> None:
        assert self._client is not None
        response = None
        try:  # aclose() cancels the wait and the request: closing a client passed in is not its to do
            with anyio.CancelScope() as self._connecting:
                response = await self._open(self._client)
        finally:
            self._connecting = None
        if response is None:
            return
        if self._is_closed():
            with anyio.CancelScope(shield=True):
                await response.aclose()
            return
        try:
            check_response(response, following=self._client.follow_redirects)
        except BaseException:
            self._closed = True
            with anyio.CancelScope(shield=True):
                await response.aclose()
            raise
        self.connections += 1
        self._response = response
        self._answered = (str(response.url), response.status_code, response.headers.get("content-type"))
        self._opened_at = anyio.current_time()
        self._handed_out = False
        found = codings(response)
        self._body = Body(found[0] if found else None)
        self._chunks = response.aiter_raw()  # type: ignore[assignment]
        self._decoder = SSEDecoder(last_event_id=self._last_event_id)

    async def _open(self, client: httpx.AsyncClient) -> httpx.Response | None:
        """The response to a new request, after the wait; ``None`` after a network error."""
        if self._attempts:
            await anyio.sleep(self._next_delay())
        if self._last_event_id and (problem := header_problem(self._last_event_id)) is not None:
            self._closed = True
            raise cannot_resume(self._answered, self._last_event_id, problem)
        self._attempts += 1
        self._failures += 1  # until a response hands out an event or stays open _STEADY_AFTER seconds
        try:
            return await open_stream(
                client,
                self.url,
                headers=self._headers,
                plain_headers=self._plain_headers,
                last_event_id=self._last_event_id,
                timeouts=self._timeout,
            )
        except (*INCURABLE, EventSourceError):
            self._closed = True  # reconnecting cannot cure these
            raise
        except httpx.TransportError:
            return None
        except Exception:
            if self._is_closed():  # aclose() from another task closed the client
                return None
            raise

    async def _drop(self) -> None:
        chunks, response = self._chunks, self._response
        self._response = self._decoder = self._body = None
        if response is not None:
            self._quick = anyio.current_time() - self._opened_at < _STEADY_AFTER
            if self._handed_out or not self._quick:
                self._failures = 0  # the next attempt waits reconnect_delay again
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
