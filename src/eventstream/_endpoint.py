"""Serving one HTTP request of an event stream: decide from the parsed request, then respond.

The hub facade (:class:`~eventstream.EventStream`, in ``_stream.py``) owns the
options and the state; this module reads a request once (``_request.py``),
refuses it, answers a GRIP proxy with hold instructions, or streams it
directly, and holds :class:`EventStreamEndpoint`, the ASGI app of an endpoint.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from ._auth._grant import Grant, Unauthorized
from ._broker import Broker
from ._channels import BadChannelsResult, BadRequest, ChannelResolver
from ._connection import STREAM_HEADERS, Connection
from ._exceptions import BrokerError
from ._grip import GripPublisher, GripRequest, hold_response
from ._history import HistoryStore
from ._http import send_plain
from ._hub import Hub
from ._loop import LoopBinding, current_thread_id
from ._request import StreamRequest, parse_request
from ._sse import ServerSentEvent, encode
from .types import Authorize, ChannelSpec, Receive, Scope, Send

__all__ = ["EventStreamEndpoint", "StreamHost", "serve"]

logger = logging.getLogger("eventstream")

_STREAM_OPEN = encode(ServerSentEvent(event="stream-open"))
_KEEP_ALIVE = encode(ServerSentEvent(event="keep-alive"))  # also for GRIP's Grip-Keep-Alive
_ALLOW = [(b"allow", b"GET, HEAD")]
_CHALLENGE = [(b"www-authenticate", b"Bearer")]  # a 401's required challenge, with no detail


class StreamHost(Protocol):
    """What serving a request needs of an :class:`~eventstream.EventStream`: its options and state."""

    _hub: Hub
    _grip: GripPublisher | None
    _broker: Broker
    _loop: LoopBinding
    grip_prefix: str
    grip_reliable: bool
    max_channels: int
    max_channel_name_length: int
    authorize: Authorize | None
    max_subscribers: int | None
    keep_alive_interval: float | None
    retry: int | None

    @property
    def _epoch(self) -> str:
        """The prefix of assigned ids (the broker's)."""

    @property
    def _history(self) -> HistoryStore | None:
        """What connections replay from (the broker's)."""

    def _notify_waiters(self) -> None:
        """Wake ``wait_subscribers`` (and a signal waiting for the streams to end)."""

    def _watch_signals(self) -> None:
        """Register with this event loop's signal relay (a no-op once registered)."""


async def serve(
    stream: StreamHost,
    scope: Scope,
    receive: Receive,
    send: Send,
    channels: Iterable[str] | ChannelResolver,
    retry: int | None,
) -> None:
    """Serve one HTTP request of ``stream`` as an event stream of ``channels``.

    See :meth:`EventStream.run` for the answers. It returns when the response
    is complete; a client that is gone (``OSError`` from ``send``) is not an error.

    Raises:
        Exception: what an ``authorize`` callable or the channels callable raises.

    Cancellation: the subscription (if any) is removed and waiters are woken.
    """
    opened = await _open(stream, scope, send, channels, retry)
    if opened is None:
        return
    connection = opened[0]
    try:
        await connection.run(receive, send, opened[1], opened[2])
    finally:
        _finish(stream, connection)


def _finish(stream: StreamHost, connection: Connection) -> None:
    subscriber = connection.subscriber
    connection.hub.unsubscribe(subscriber)
    subscriber.cancel_scope = None  # the scope refers to the connection: no cycle
    subscriber.finished = True
    stream._notify_waiters()


async def _open(
    stream: StreamHost, scope: Scope, send: Send, channels: Iterable[str] | ChannelResolver, retry: int | None
) -> tuple[Connection, str | None, bytes] | None:
    # Read the request and subscribe: the new connection, the Last-Event-ID and
    # the opening bytes. None: the request was answered (refused, HEAD, GRIP hold).
    try:
        request = await parse_request(
            scope,
            channels,
            grip=stream._grip,
            grip_prefix=stream.grip_prefix,
            grip_reliable=stream.grip_reliable,
            max_channels=stream.max_channels,
            max_channel_name_length=stream.max_channel_name_length,
        )
        grant = await _admit(stream, scope, request)
    except BadRequest as exc:
        extra = _ALLOW if exc.status == 405 else [(b"retry-after", b"5")] if exc.status == 503 else []
        extra = _CHALLENGE if exc.status == 401 else extra
        head = scope.get("method", "GET") == "HEAD"  # the request may not have parsed
        with contextlib.suppress(OSError):  # the client left before reading the answer
            await send_plain(send, exc.status, exc.reason, extra, head=head)
        return None
    except BadChannelsResult as exc:
        # The app's fault, not the client's: a 500 that does not say more, and a log line that does.
        logger.error("%s; answering 500 to %s %r", exc, scope.get("method", "GET"), scope.get("path", ""))
        with contextlib.suppress(OSError):
            await send_plain(send, 500, "Internal Server Error: the endpoint's channels callable failed")
        return None
    if request.head:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": 200, "headers": list(STREAM_HEADERS)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None
    if not await _prepare_broker(stream._broker, request.channels, send):
        return None
    if request.grip is not None:
        await _answer_proxy(stream, scope, request.grip, request, send, retry)
        return None
    if current_thread_id() != stream._loop.thread or not stream._hub.subscriber_count():
        stream._loop.bind()  # the first connection in this thread or this event loop
    hub = stream._hub
    subscriber = hub.subscribe(request.channels)
    stream._notify_waiters()
    # From here to Connection.start (in run), no await: see Connection.start.
    connection = Connection(hub, subscriber, stream._history, stream._epoch, stream.keep_alive_interval)
    connection.expires_at = grant.expires_at if grant is not None else None  # auth: ends at token expiry
    opening = _STREAM_OPEN if retry is None else encode(ServerSentEvent(event="stream-open", retry=retry))
    return connection, request.last_event_id, opening


async def _admit(stream: StreamHost, scope: Scope, request: StreamRequest) -> Grant | None:
    # Raises BadRequest: no valid credentials (401), authorize refuses (403), the stream is
    # closed or full (503). Returns authorize's Grant, if it answered with one.
    grant: Grant | None = None
    if stream.authorize is not None and not request.trusted_next_link:
        try:
            allowed = stream.authorize(scope, list(request.channels))
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Unauthorized:  # its message is for the server's log, not for the client
            raise BadRequest("Unauthorized", status=401) from None
        except BrokerError as exc:  # a shared ticket ledger's engine (eventstream.auth)
            raise BadRequest(f"Service unavailable: {exc}", status=503) from None
        if not allowed:
            raise BadRequest("Forbidden: not authorized for these channels", status=403)
        grant = allowed if isinstance(allowed, Grant) else None
    if stream._hub.closed:
        raise BadRequest("Service unavailable: the event stream is shutting down", status=503)
    if stream.max_subscribers is not None and stream._hub.subscriber_count() >= stream.max_subscribers:
        raise BadRequest("Service unavailable: too many open streams, retry later", status=503)
    return grant


async def _prepare_broker(broker: Broker, names: Sequence[str], send: Send) -> bool:
    # Bring the broker's history up to date for these channels before
    # subscribing (the in-process broker has nothing to do, and does not
    # yield); the connection then replays from it with no await.
    try:
        await broker.prepare(names)
    except (BrokerError, RuntimeError) as exc:
        reason = f"Service unavailable: the event broker cannot be reached ({exc})"
        with contextlib.suppress(OSError):
            await send_plain(send, 503, reason, [(b"retry-after", b"5")])
        return False
    return True


async def _answer_proxy(
    stream: StreamHost, scope: Scope, grip: GripRequest, request: StreamRequest, send: Send, retry: int | None
) -> None:
    # The proxy holds the client: answer with hold instructions and what it must see first.
    grip_headers, body = hold_response(
        scope,
        grip,
        request.channels,
        last_event_id=request.last_event_id,
        retry=retry,
        history=stream._history,
        epoch=stream._epoch,
        prefix=stream.grip_prefix,
        reliable=stream.grip_reliable,
        keep_alive=_KEEP_ALIVE,
        keep_alive_interval=stream.keep_alive_interval,
    )
    headers = [*STREAM_HEADERS, *grip_headers, (b"content-length", str(len(body)).encode("ascii"))]
    with contextlib.suppress(OSError):  # the client left before reading the answer
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class EventStreamEndpoint:
    """The ASGI app returned by ``EventStream(...)(channels)``.

    It serves HTTP requests with :meth:`EventStream.run`, answers the
    ``lifespan`` protocol (so it can be the top-level app of a server), and
    closes ``websocket`` connections.
    """

    def __init__(self, stream: StreamHost, channels: ChannelSpec, *, retry: int | None = None) -> None:
        if retry is not None:
            ServerSentEvent(retry=retry)  # validates
        self.stream = stream
        self.retry = retry
        self._resolver = ChannelResolver(
            channels, max_channels=stream.max_channels, max_length=stream.max_channel_name_length
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # serve(), inlined: a parked connection then keeps one frame fewer.
            stream = self.stream
            stream._watch_signals()
            opened = await _open(stream, scope, send, self._resolver, self.retry)
            if opened is None:
                return
            connection, last_event_id, opening = opened
            del opened
            try:
                await connection.run(receive, send, last_event_id, opening)
            finally:
                _finish(stream, connection)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.stream._watch_signals()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})
