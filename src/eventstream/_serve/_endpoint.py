"""Serving one HTTP request of an event stream: decide from the parsed request, then respond.

The hub facade (:class:`~eventstream.EventStream`, in ``_stream.py``) owns the
options and the state, and hands requests a :class:`Serving` of them; this
module reads a request once (``_request.py``), refuses it, answers a GRIP
proxy with hold instructions, or streams it directly, and holds
:class:`EventStreamEndpoint`, the ASGI app of an endpoint.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from .._backends import declare_running_library
from .._base import AddressLimiter, BrokerError, Grant, KeysUnavailable, Refused, Unauthorized
from .._core import Broker, Hub, PresenceTable, presence_channel, presence_event
from .._grip import GripPublisher, GripRequest, hold_response
from .._lifecycle import Lifecycle, LoopBinding, current_thread_id
from .._observe import RUN_TEMPLATE, Observed, RateLimitedLog
from .._options import StreamOptions, as_event
from .._sse import KEEP_ALIVE, stream_open
from ..types import ChannelSpec, Receive, Scope, Send
from ._channels import BadChannelsResult, BadRequest, ChannelResolver
from ._connection import STREAM_HEADERS, Connection
from ._ending import unsubscribe_counted
from ._http import send_plain
from ._request import StreamRequest, parse_request

__all__ = ["EventStreamEndpoint", "Serving", "announce_members", "serve"]

logger = logging.getLogger("eventstream")
#: Streams refused with 503 because the broker could not prepare their channels: at most 10 lines at
#: once and one per 6 s beyond (an engine that stops answering refuses every new stream).
BROKER_REFUSALS = RateLimitedLog()
#: Requests answered 500 because the endpoint's channels callable failed: as many lines at most.
BAD_CHANNELS = RateLimitedLog()

_ALLOW = [(b"allow", b"GET, HEAD")]
_CHALLENGE = [(b"www-authenticate", b"Bearer")]  # a 401's required challenge, with no detail


@dataclass(frozen=True, slots=True)
class Serving:
    """What serving a request needs of an :class:`~eventstream.EventStream`: its parts and options.

    The stream builds it once; requests read it and call its parts' methods.
    """

    hub: Hub
    broker: Broker
    grip: GripPublisher | None
    loop: LoopBinding
    lifecycle: Lifecycle
    options: StreamOptions
    observed: Observed  # metrics
    limiter: AddressLimiter | None = None  # limits: subscribe_limits' state, per client address
    presence: PresenceTable | None = None  # presence: identities per channel (presence=True)


async def serve(
    stream: Serving,
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
    declare_running_library()  # (anyio then need not find out at each call)
    opened = await _open(stream, scope, send, channels, retry)
    if opened is None:
        return
    connection, last_event_id, opening = opened
    del opened
    try:
        await connection.run(receive, send, last_event_id, opening)
    finally:
        left = _finish(stream, connection, scope)  # (scope: metrics, the client in a log line)
        if left:  # presence: the identity's last stream on these channels, in this process
            await _announce_leave(stream, connection, left)


async def _announce_leave(stream: Serving, connection: Connection, left: list[str]) -> None:
    # presence: shielded (the stream may end by cancellation), bounded (_announce gives up in time).
    with anyio.CancelScope(shield=True):
        await _announce(stream, "leave", left, connection.identity or "", None)


async def _announce(
    stream: Serving, kind: str, channels: Sequence[str], identity: str, info: Mapping[str, Any] | None
) -> None:
    # presence: publish the join or leave events of identity on channels' companion channels.
    # A companion name too long for the stream, a join on a closed stream, a broker stopped, or
    # an engine that fails or does not answer within send_timeout loses the event (logged): the
    # stream is served anyway. Leaves go out while the stream closes (its streams end then, and
    # its part of the engine's presence goes at once: nobody else would announce them).
    limit = stream.options.max_channel_name_length
    timeout = stream.options.send_timeout if math.isfinite(stream.options.send_timeout) else 5.0
    with anyio.move_on_after(timeout) as scope:
        for channel in channels:
            companion = presence_channel(channel)
            if len(companion) > limit or (kind == "join" and stream.hub.closed):
                continue
            try:
                await stream.broker.dispatch(
                    companion, as_event(presence_event(kind, channel, identity, info))
                )
            except BrokerError as exc:
                logger.warning(
                    "presence: the %s event of %r on %r was lost: %s", kind, identity, channel, exc
                )
            except (anyio.ClosedResourceError, RuntimeError):  # (closed, or its broker stopped)
                return
    if scope.cancelled_caught:
        logger.warning(
            "presence: %s events of %r were lost: the broker did not take them in time", kind, identity
        )


async def announce_members(
    stream: Serving, kind: str, members: list[tuple[str, str, Mapping[str, Any] | None]]
) -> None:
    """presence: the ``leave`` events of the members of a process that died (a shared broker found
    them), or the ``join`` events again of this process's after it was taken for dead.

    Up to 64 go at once (a broker sends them in batches): up to 1,024 of them come from a heartbeat,
    which must not wait for them one after another. Errors are logged, not raised (see
    ``_announce``). Cancellation: the events not yet published are not.
    """
    limiter = anyio.CapacityLimiter(64)

    async def announce(channel: str, identity: str, info: Mapping[str, Any] | None) -> None:
        async with limiter:
            await _announce(stream, kind, [channel], identity, info)

    async with anyio.create_task_group() as tg:
        for channel, identity, info in members:
            tg.start_soon(announce, channel, identity, info)


def _finish(stream: Serving, connection: Connection, scope: Scope) -> list[str]:
    subscriber = connection.subscriber
    unsubscribe_counted(connection, scope)  # metrics: hub.unsubscribe(subscriber), counting why it ended
    subscriber.finish()
    if connection.limit_key is not None and stream.limiter is not None:  # limits: the address holds one fewer
        stream.limiter.release(connection.limit_key)
    left: list[str] = []
    if connection.identity is not None and stream.presence is not None:  # presence: it left
        left = stream.presence.leave(subscriber.channels, connection.identity)
    stream.lifecycle.notify_waiters()
    return left


async def _open(
    stream: Serving, scope: Scope, send: Send, channels: Iterable[str] | ChannelResolver, retry: int | None
) -> tuple[Connection, str | None, bytes] | None:
    # Read the request and subscribe: the new connection, the Last-Event-ID and
    # the opening bytes. None: the request was answered (refused, HEAD, GRIP hold).
    try:
        request = await parse_request(
            scope,
            channels,
            grip=stream.grip,
            grip_prefix=stream.options.grip_prefix,
            grip_reliable=stream.options.grip_reliable,
            max_channels=stream.options.max_channels,
            max_channel_name_length=stream.options.max_channel_name_length,
        )
        grant = await _admit(stream, scope, request)
        limit_key = _limit(stream, scope, request)  # limits: counted from here, given back below
    except Refused as exc:
        with contextlib.suppress(OSError):
            retry_after = [(b"retry-after", str(exc.retry_after).encode("ascii"))]
            await send_plain(send, 429, exc.reason, retry_after, head=request.head)
        return None
    except BadRequest as exc:
        extra = _ALLOW if exc.status == 405 else [(b"retry-after", b"5")] if exc.status == 503 else []
        extra = _CHALLENGE if exc.status == 401 else extra
        head = scope.get("method", "GET") == "HEAD"  # the request may not have parsed
        with contextlib.suppress(OSError):  # the client left before reading the answer
            await send_plain(send, exc.status, exc.reason, extra, head=head)
        return None
    except BadChannelsResult as exc:
        # The app's fault, not the client's: a 500 that does not say more, and a log line that
        # does (rate-limited, the path shortened: the client chooses how often, and the path).
        path = reprlib.repr(scope.get("path", ""))
        BAD_CHANNELS.error("%s; answering 500 to %s %s", exc, scope.get("method", "GET"), path)
        with contextlib.suppress(OSError):
            await send_plain(send, 500, "Internal Server Error: the endpoint's channels callable failed")
        return None
    if request.head:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": 200, "headers": list(STREAM_HEADERS)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None
    prepared = False
    try:
        # A stream that starts now (no Last-Event-ID, no proxy to tell where it is)
        # needs no catch-up on the channels the broker follows.
        resuming = request.last_event_id is not None or request.grip is not None
        prepared = await _prepare_broker(stream.broker, request.channels, send, resuming=resuming)
    finally:  # limits: no stream is held if the broker failed or the request was cancelled
        if not prepared and limit_key is not None and stream.limiter is not None:
            stream.limiter.release(limit_key)
    if not prepared:
        return None
    label = channels.label if isinstance(channels, ChannelResolver) else RUN_TEMPLATE
    if request.grip is not None:
        answered = await _answer_proxy(stream, scope, request.grip, request, send, retry)
        if answered and not request.grip.next_link:  # metrics: a stream the proxy holds from now on
            stream.observed.template(label).grip_opened += 1
        return None
    presence = stream.presence
    identity = grant.identity if presence is not None and grant is not None else None
    if presence is not None and identity is not None:  # presence: its join events, before it subscribes
        joined = presence.join(request.channels, identity, grant.info if grant is not None else None)
        if joined:  # shielded and bounded: a cancellation lands in run, whose end announces the leave
            with anyio.CancelScope(shield=True):
                await _announce(stream, "join", joined, identity, grant.info if grant is not None else None)
    if stream.hub.closed:  # closed while the broker prepared or the join was published: 503
        if presence is not None and identity is not None:
            presence.leave(request.channels, identity)
        if limit_key is not None and stream.limiter is not None:
            stream.limiter.release(limit_key)
        with contextlib.suppress(OSError):
            reason = "Service unavailable: the event stream is shutting down"
            await send_plain(send, 503, reason, [(b"retry-after", b"5")])
        return None
    if current_thread_id() != stream.loop.thread or not stream.hub.subscriber_count():
        stream.loop.bind()  # the first connection in this thread or this event loop
    hub = stream.hub
    subscriber = hub.subscribe(request.channels)
    stream.lifecycle.notify_waiters()
    # From here to Connection.start (in run), no await: see Connection.start.
    broker = stream.broker
    connection = Connection(hub, subscriber, broker.history, broker.epoch, stream.options.keep_alive_interval)
    connection.template = stream.observed.opened(label)  # metrics: counted under its template
    tracing = hub.tracing
    if tracing is not None and tracing.active:  # tracing: the stream's life is a span
        connection.span = tracing.stream(connection.template.label, subscriber.channels)
    connection.expires_at = grant.expires_at if grant is not None else None  # auth: ends at token expiry
    connection.limit_key = limit_key  # limits: given back when the stream ends (_finish)
    if identity is not None:  # presence: counted at its join (above), uncounted at its end (_finish)
        connection.identity = identity
    opening = stream_open(retry)
    return connection, request.last_event_id, opening


async def _admit(stream: Serving, scope: Scope, request: StreamRequest) -> Grant | None:
    # Raises BadRequest: no valid credentials (401), authorize refuses (403), the stream is
    # closed or full (503). Returns authorize's Grant, if it answered with one.
    options = stream.options
    grant: Grant | None = None
    if options.authorize is not None and not request.trusted_next_link:
        try:
            allowed = options.authorize(scope, list(request.channels))
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Unauthorized:  # its message is for the server's log, not for the client
            raise BadRequest("Unauthorized", status=401) from None
        except KeysUnavailable:  # auth: the JWKS endpoint failed and no keys were fetched before
            raise BadRequest("Service unavailable: credentials cannot be checked now", status=503) from None
        except BrokerError:  # a shared ticket ledger's engine (eventstream.auth): its error stays here
            raise BadRequest("Service unavailable: credentials cannot be checked now", status=503) from None
        if not allowed:
            raise BadRequest("Forbidden: not authorized for these channels", status=403)
        grant = allowed if isinstance(allowed, Grant) else None
    if stream.hub.closed:
        raise BadRequest("Service unavailable: the event stream is shutting down", status=503)
    if options.max_subscribers is not None and stream.hub.subscriber_count() >= options.max_subscribers:
        raise BadRequest("Service unavailable: too many open streams, retry later", status=503)
    return grant


def _limit(stream: Serving, scope: Scope, request: StreamRequest) -> str | None:
    # limits: count the request against its client address's subscribe_limits. Returns
    # the address when the stream will be held here (it must be released), else None.
    # Raises Refused (429). HEAD and GRIP-held requests count as new streams, not as open ones.
    limiter = stream.limiter
    if limiter is None:
        return None
    key = limiter.key(scope.get("client"))
    holds = not request.head and request.grip is None
    limiter.admit(key, holds=holds)
    return key if holds else None


async def _prepare_broker(broker: Broker, names: Sequence[str], send: Send, *, resuming: bool) -> bool:
    # Bring the broker's history up to date for these channels before
    # subscribing (the in-process broker has nothing to do, and does not
    # yield); the connection then replays from it with no await.
    try:
        await broker.prepare(names, resuming=resuming)
    except (BrokerError, RuntimeError) as exc:
        BROKER_REFUSALS.warning(
            "event stream of %s answered 503: %s",
            ",".join(names),
            exc,
            extra={"channels": tuple(names), "reason": "broker"},
        )
        reason = f"Service unavailable: the event broker cannot be reached ({exc})"
        with contextlib.suppress(OSError):
            await send_plain(send, 503, reason, [(b"retry-after", b"5")])
        return False
    return True


async def _answer_proxy(
    stream: Serving, scope: Scope, grip: GripRequest, request: StreamRequest, send: Send, retry: int | None
) -> bool:
    # The proxy holds the client: answer with hold instructions and what it must see first.
    # Returns whether the answer was sent (False: the proxy's connection was gone).
    grip_headers, body = hold_response(
        grip,
        request.channels,
        last_event_id=request.last_event_id,
        retry=retry,
        history=stream.broker.history,
        epoch=stream.broker.epoch,
        prefix=stream.options.grip_prefix,
        reliable=stream.options.grip_reliable,
        keep_alive=KEEP_ALIVE,
        keep_alive_interval=stream.options.keep_alive_interval,
    )
    headers = [*STREAM_HEADERS, *grip_headers, (b"content-length", str(len(body)).encode("ascii"))]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
    except OSError:  # the client left before reading the answer
        return False
    return True


class EventStreamEndpoint:
    """The ASGI app returned by ``EventStream(...)(channels)``.

    It serves HTTP requests with :meth:`EventStream.run`, answers the
    ``lifespan`` protocol (so it can be the top-level app of a server), and
    closes ``websocket`` connections.
    """

    def __init__(self, stream: Serving, channels: ChannelSpec, *, retry: int | None = None) -> None:
        if retry is not None:
            stream_open(retry)  # validates
        self._serving = stream
        self.retry = retry
        options = stream.options
        self._resolver = ChannelResolver(
            channels, max_channels=options.max_channels, max_length=options.max_channel_name_length
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # serve(), inlined: a parked connection then keeps one frame fewer.
            declare_running_library()
            stream = self._serving
            stream.lifecycle.watch_signals()
            opened = await _open(stream, scope, send, self._resolver, self.retry)
            if opened is None:
                return
            connection, last_event_id, opening = opened
            del opened
            try:
                await connection.run(receive, send, last_event_id, opening)
            finally:
                left = _finish(stream, connection, scope)  # (scope: metrics, the client in a log line)
                if left:  # presence: the identity's last stream on these channels, in this process
                    await _announce_leave(stream, connection, left)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self._serving.lifecycle.watch_signals()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})
