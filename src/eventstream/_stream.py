"""The :class:`EventStream` hub and its ASGI endpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import os
import re
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qsl

import anyio
import anyio.lowlevel

from ._broker import Broker
from ._channels import BadRequest, ChannelResolver, check_channel_name, normalize_channels
from ._connection import Connection
from ._exceptions import BrokerError
from ._grip import GripPublisher, hold_headers
from ._grip_config import SigCheck
from ._history import HistoryEntry, HistoryStore, MemoryHistory
from ._http import accepts_event_stream, header, send_plain
from ._hub import EventStreamStatistics, Hub, SlowConsumerPolicy
from ._sse import ServerSentEvent, encode
from ._writer import ChannelPublisher, ChannelWriter
from .types import Authorize, ChannelSpec, EventLike, Receive, Scope, Send

__all__ = ["EventStream", "EventStreamEndpoint"]

_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_STREAM_OPEN = encode(ServerSentEvent(event="stream-open"))
_KEEP_ALIVE = encode(ServerSentEvent(event="keep-alive"))  # also for GRIP's Grip-Keep-Alive
_ALLOW = [(b"allow", b"GET, HEAD")]

GripConfig = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | GripPublisher
_DEFAULT: Any = object()
_NEXT_LINK_PARAM = "grip-next-link"
_UNSAFE_GRIP_ID = re.compile(r'[\s,;"]')


def _parse_grip_last(value: str | None) -> dict[str, str] | None:
    # "events-a; last-id=7, events-b; last-id=9" (one per channel, maybe joined)
    if value is None:
        return None
    result = {}
    for item in value.split(","):
        name, *params = item.split(";")
        for param in params:
            key, _, last_id = param.strip().partition("=")
            if key == "last-id":
                result[name.strip()] = last_id.strip().strip('"')
    return result


def _is_next_link_request(scope: Scope, proxied: bool) -> bool:
    return (
        proxied
        and header(scope, b"grip-last") is not None
        and _query_param(scope, _NEXT_LINK_PARAM) is not None
    )


def _next_link(scope: Scope) -> str:
    # The same endpoint (so the same channels), marked as a next-link request.
    path = (scope.get("raw_path") or scope.get("path", "/").encode("utf-8")).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    if _query_param(scope, _NEXT_LINK_PARAM) is None:
        query = f"{query}&{_NEXT_LINK_PARAM}=1" if query else f"{_NEXT_LINK_PARAM}=1"
    return f"{path}?{query}"


def _query_param(scope: Scope, name: str) -> str | None:
    query = scope.get("query_string", b"")
    if not query:
        return None
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == name:
            return str(value)
    return None


def _as_event(event: EventLike) -> ServerSentEvent:
    if isinstance(event, ServerSentEvent):
        return event
    if isinstance(event, Mapping):
        return ServerSentEvent(**event)
    raise TypeError(f"expected a ServerSentEvent or a mapping of its fields, not {type(event).__name__}")


class EventStream:
    """A hub of named channels that ASGI endpoints stream to clients as Server-Sent Events.

    One instance per process is the usual setup (see
    :func:`~eventstream.get_event_stream_singleton`). It starts no task and
    needs no setup: endpoints subscribe on demand, and publishing works from
    any task of the event loop the endpoints run in.

    Args:
        buffer_size: How many events each subscriber may hold before a
            publish has to wait for it.
        send_timeout: How long (seconds) a publish waits for a subscriber
            whose buffer is full. A subscriber still full after that is
            disconnected (its stream ends after what it holds is written; the
            client reconnects) and counted in
            :attr:`EventStreamStatistics.subscribers_dropped`.
        keep_alive_interval: Seconds of silence after which a ``keep-alive``
            event is sent, so proxies and clients keep an idle stream open.
            ``None`` disables it.
        max_channels: The most channels one request may subscribe to.
        max_channel_name_length: The longest channel name accepted.
        grip: GRIP proxies to publish through and to serve held streams for
            (Pushpin, Fastly Fanout): a ``GRIP_URL`` string, a config mapping
            (``control_uri``, ``control_iss``, ``key``, ``verify_iss``,
            ``verify_key``), a list of them, or a :class:`GripPublisher`.
            Publishing then needs the stream entered with ``async with``
            (for example in the app's lifespan), which runs the publisher.
        grip_prefix: Prepended to channel names on the proxies.
        grip_reliable: GRIP reliable mode: published items carry ``id`` and
            ``prev-id``, and held streams carry the client's position and a
            next link, so the proxy notices a missed publish and fetches it
            from this app's history. It needs history, and every event of a
            channel published by one process, or a ``broker`` they share:
            otherwise publishes from several processes break the chain of
            ids, and the proxy then delays them (Pushpin: ``message_wait``).
        history: Where recent events are kept for clients that reconnect
            with ``Last-Event-ID``: a :class:`MemoryHistory` by default (256
            events, 256 KiB and 5 minutes per channel), any
            :class:`HistoryStore`, or ``None`` to keep none (a reconnecting
            client then always gets ``stream-reset``).
        slow_consumer: What to do with a subscriber whose buffer is full:
            ``"disconnect"`` (after ``send_timeout``; it resumes from history
            when it reconnects), ``"drop-oldest"`` (drop its oldest event and
            send it ``stream-reset``), or ``"block"`` (the publisher waits).
        retry: The reconnection delay (ms) sent to clients in ``stream-open``;
            endpoints may override it.
        authorize: Called with the request scope and its channels before
            anything is streamed (sync or async); a false answer gets 403 and
            nothing is subscribed. It applies to requests through GRIP too.
        max_subscribers: The most concurrent streams; beyond it, 503 with
            ``Retry-After``.
        shutdown_event: An event sent to every open stream when the stream
            is closed (for example ``{"event": "shutdown"}``), or ``None``.
        shutdown_grace: Seconds open streams get, when the stream is closed,
            to write what they hold; then they are cut.
        broker: A shared engine for several processes: a ``redis://`` or
            ``rediss://`` URL (Valkey or Redis, through valkey-glide), or a
            :class:`Broker` such as a tuned :class:`RedisBroker`. Events are
            then numbered and kept by the engine, and every process sharing
            it delivers them; the stream must be entered (``async with``),
            which runs the broker. ``None`` (default): this process only.

    Raises:
        ValueError: an option is out of range, or a GRIP configuration is
            malformed (checked here, not at the first publish).
    """

    def __init__(
        self,
        *,
        buffer_size: int = 256,
        send_timeout: float = 5.0,
        keep_alive_interval: float | None = 20.0,
        max_channels: int = 32,
        max_channel_name_length: int = 256,
        grip: GripConfig | None = None,
        grip_prefix: str = "events-",
        grip_reliable: bool = False,
        history: HistoryStore | None = _DEFAULT,
        slow_consumer: SlowConsumerPolicy = "disconnect",
        retry: int | None = None,
        authorize: Authorize | None = None,
        max_subscribers: int | None = None,
        shutdown_event: EventLike | None = None,
        shutdown_grace: float = 2.0,
        broker: str | Broker | None = None,
    ) -> None:
        if keep_alive_interval is not None and (
            not keep_alive_interval > 0 or math.isinf(keep_alive_interval)
        ):
            raise ValueError(
                "keep_alive_interval must be a positive number of seconds or None, "
                f"not {keep_alive_interval!r}"
            )
        for name, value in (
            ("max_channels", max_channels),
            ("max_channel_name_length", max_channel_name_length),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        self._hub = Hub(buffer_size=buffer_size, send_timeout=send_timeout, policy=slow_consumer)
        if retry is not None:
            ServerSentEvent(retry=retry)  # validates
        if max_subscribers is not None and max_subscribers < 1:
            raise ValueError(f"max_subscribers must be >= 1 or None, not {max_subscribers!r}")
        self._history: HistoryStore | None = MemoryHistory() if history is _DEFAULT else history
        self._epoch = self._history.epoch if self._history is not None else os.urandom(4).hex()
        self._seq = 0
        # The "previous id" of a channel's first event, so that even a stream
        # held before anything was published knows where it stands (GRIP prev-id).
        self._origin_id = f"{self._epoch}-0"
        if grip_reliable and (grip is None or self._history is None):
            raise ValueError("grip_reliable needs grip and a history store")
        self.grip_reliable = grip_reliable
        self.retry = retry
        self.authorize = authorize
        self.max_subscribers = max_subscribers
        self._shutdown_event = None if shutdown_event is None else _as_event(shutdown_event)
        if not shutdown_grace >= 0 or math.isinf(shutdown_grace):
            raise ValueError(f"shutdown_grace must be a number of seconds >= 0, not {shutdown_grace!r}")
        self.shutdown_grace = shutdown_grace
        self.keep_alive_interval = keep_alive_interval
        self.max_channels = max_channels
        self.max_channel_name_length = max_channel_name_length
        self._waiters: list[anyio.Event] = []
        self._grip: GripPublisher | None = None
        if grip is not None:
            self._grip = grip if isinstance(grip, GripPublisher) else GripPublisher(grip)
        if not isinstance(grip_prefix, str):
            raise TypeError(f"grip_prefix must be a str, not {type(grip_prefix).__name__}")
        self.grip_prefix = grip_prefix
        self._started_grip = False
        self._broker = _make_broker(broker)
        self._started_broker = False
        if self._broker is not None:
            if history is not _DEFAULT:
                raise ValueError("with a broker, history is kept by the broker: set its limits there")
            self._broker.bind(self._hub)

    @property
    def grip(self) -> GripPublisher | None:
        """The GRIP publisher, when ``grip`` was configured."""
        return self._grip

    # -- endpoints -------------------------------------------------------

    def __call__(self, channels: ChannelSpec, *, retry: int | None = _DEFAULT) -> EventStreamEndpoint:
        """Return an ASGI app that streams ``channels`` to each GET request.

        ``channels`` is a channel name, a list of names, or a callable that
        takes the ASGI scope and returns names (it may be async). In names,
        ``{token}`` is replaced by the route parameter ``token`` from
        ``scope["path_params"]`` (Starlette and FastAPI routers set it).
        ``retry`` overrides the stream's reconnection delay for this endpoint.
        """
        return EventStreamEndpoint(self, channels, retry=self.retry if retry is _DEFAULT else retry)

    async def run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        channels: str | Iterable[str],
        *,
        retry: int | None = _DEFAULT,
    ) -> None:
        """Serve one HTTP request as an event stream of ``channels``.

        The direct form of an endpoint, for use inside your own ASGI app. It
        returns when the client disconnects, when the stream is ended (the
        subscriber was too slow, or :meth:`aclose` was called), or at once for
        requests that get an error status: 405 for methods other than GET and
        HEAD, 406 when ``Accept`` excludes ``text/event-stream``, 400 for
        invalid channels or ``Last-Event-ID: error``, 403 when ``authorize``
        refuses, 503 after :meth:`aclose` or beyond ``max_subscribers``.

        A client that sends ``Last-Event-ID`` (or the ``lastEventId`` query
        parameter) first gets every event it missed, from history, then live
        events; if history cannot tell, it gets ``stream-reset`` instead.
        """
        names = (channels,) if isinstance(channels, str) else tuple(channels)
        await self._serve(scope, receive, send, names, self.retry if retry is _DEFAULT else retry)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        channels: Iterable[str] | ChannelResolver,
        retry: int | None,
    ) -> None:
        method = scope.get("method", "GET")
        head = method == "HEAD"
        try:
            if method not in ("GET", "HEAD"):
                raise BadRequest("Method not allowed: use GET", status=405)
            if not accepts_event_stream(header(scope, b"accept")):
                raise BadRequest("Not acceptable: this endpoint only serves text/event-stream", status=406)
            if header(scope, b"last-event-id") == "error":
                raise BadRequest("Last-Event-ID is 'error': the previous stream ended on an error")
            proxied = signed = False
            if self._grip is not None:
                verdict = self._grip.check_signature(header(scope, b"grip-sig"))
                if verdict is SigCheck.FORBIDDEN:
                    raise BadRequest("Forbidden: the Grip-Sig signature is not valid", status=403)
                proxied = verdict is not SigCheck.DIRECT
                signed = verdict is SigCheck.SIGNED
            # A proxy fetching a next link sends none of the client's headers. It
            # sends Grip-Last, which a client's request through the proxy cannot
            # carry (the proxy strips Grip-* headers), so a client cannot pass a
            # request for a next link to skip authorization.
            next_link_request = _is_next_link_request(scope, proxied)
            if isinstance(channels, ChannelResolver):
                channels = await channels.resolve(scope)
            names = normalize_channels(
                channels, max_channels=self.max_channels, max_length=self.max_channel_name_length
            )
            if self.authorize is not None and not (next_link_request and signed):
                allowed = self.authorize(scope, list(names))
                if inspect.isawaitable(allowed):
                    allowed = await allowed
                if not allowed:
                    raise BadRequest("Forbidden: not authorized for these channels", status=403)
            if self._hub.closed:
                raise BadRequest("Service unavailable: the event stream is shutting down", status=503)
            if self.max_subscribers is not None and self._hub.subscriber_count() >= self.max_subscribers:
                raise BadRequest("Service unavailable: too many open streams, retry later", status=503)
        except BadRequest as exc:
            extra = _ALLOW if exc.status == 405 else [(b"retry-after", b"5")] if exc.status == 503 else []
            with contextlib.suppress(OSError):  # the client left before reading the answer
                await send_plain(send, exc.status, exc.reason, extra, head=head)
            return
        last_event_id = header(scope, b"last-event-id")
        if last_event_id is None:
            last_event_id = _query_param(scope, "lastEventId")
        last_event_id = last_event_id or None  # an empty id means "none" (as browsers treat it)
        if head:
            with contextlib.suppress(OSError):
                await send({"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEADERS)})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if self._broker is not None and not await self._prepare_broker(self._broker, names, send):
            return
        if proxied:
            await self._answer_proxy(scope, send, names, last_event_id, retry)
            return
        subscriber = self._hub.subscribe(names)
        self._notify_waiters()
        connection = Connection(self._hub, subscriber, self._history, self._epoch, self.keep_alive_interval)
        try:
            async with anyio.create_task_group() as tg:
                subscriber.cancel_scope = tg.cancel_scope
                tg.start_soon(_watch_disconnect, receive, tg.cancel_scope)
                # OSError: the client is gone (ASGI 2.4 servers raise it from send)
                with contextlib.suppress(OSError):
                    await self._stream_response(connection, send, last_event_id, retry)
                tg.cancel_scope.cancel()
        finally:
            self._hub.unsubscribe(subscriber)
            subscriber.receive.close()
            self._notify_waiters()

    async def _prepare_broker(self, broker: Broker, names: Sequence[str], send: Send) -> bool:
        # Bring the broker's history up to date for these channels before
        # subscribing; the connection then replays from it with no await.
        try:
            await broker.prepare(names)
        except (BrokerError, RuntimeError) as exc:
            reason = f"Service unavailable: the event broker cannot be reached ({exc})"
            with contextlib.suppress(OSError):
                await send_plain(send, 503, reason, [(b"retry-after", b"5")])
            return False
        self._epoch = broker.epoch
        self._history = broker.history
        return True

    async def _stream_response(
        self, connection: Connection, send: Send, last_event_id: str | None, retry: int | None
    ) -> None:
        failure: Exception | None = None
        replay: list[HistoryEntry] = []
        opening = _STREAM_OPEN if retry is None else encode(ServerSentEvent(event="stream-open", retry=retry))
        try:
            replay, reset = connection.start(last_event_id)  # no await since subscribing
            if reset:
                opening += connection.reset_event()
        except Exception as exc:
            failure = exc
        await send({"type": "http.response.start", "status": 200, "headers": list(_STREAM_HEADERS)})
        await send({"type": "http.response.body", "body": opening, "more_body": True})
        try:
            if failure is None:
                await connection.write(send, replay)
        except OSError:
            raise
        except Exception as exc:
            failure = exc
        if failure is not None:
            await connection.send_stream_error(send, failure)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _answer_proxy(
        self, scope: Scope, send: Send, names: Sequence[str], last_event_id: str | None, retry: int | None
    ) -> None:
        # The proxy holds the client: answer with hold instructions and what
        # the client must see first. In reliable mode (history kept), each
        # channel carries the id of the last event the client has (prev-id),
        # and a next link where the proxy fetches what it missed.
        next_link_request = _is_next_link_request(scope, proxied=True)
        grip_last = _parse_grip_last(header(scope, b"grip-last")) if next_link_request else None
        body = b""
        if not next_link_request:
            body = (
                _STREAM_OPEN if retry is None else encode(ServerSentEvent(event="stream-open", retry=retry))
            )
        else:
            last_event_id = None  # the proxy says per channel what the client has (Grip-Last)
        channels: list[tuple[str, str | None]] = []
        history = self._history
        replay: list[HistoryEntry] = []
        reset = False
        for name in names:
            last = history.last(name) if history is not None else None
            known = grip_last.get(self.grip_prefix + name) if grip_last else last_event_id
            prev_id = last.id if last is not None else self._origin_id
            if known is not None and known != prev_id:
                entries = self._entries_after(name, known) if history is not None else None
                if entries is None:
                    reset = True
                else:
                    replay.extend(entries)
            channels.append((self.grip_prefix + name, prev_id if self.grip_reliable else None))
        replay.sort(key=lambda entry: entry.seq)
        if reset:
            body += encode(ServerSentEvent(event="stream-reset"))
        body += b"".join(entry.wire for entry in replay)
        link = _next_link(scope) if self.grip_reliable else None
        headers = list(_STREAM_HEADERS)
        headers += hold_headers(channels, _KEEP_ALIVE, self.keep_alive_interval, link)
        headers.append((b"content-length", str(len(body)).encode("ascii")))
        with contextlib.suppress(OSError):  # the client left before reading the answer
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

    def _entries_after(self, channel: str, event_id: str) -> list[HistoryEntry] | None:
        history = self._history
        assert history is not None
        prefix = f"{self._epoch}-"
        seq: int | None = None
        if event_id.startswith(prefix) and event_id[len(prefix) :].isdigit():
            seq = int(event_id[len(prefix) :])
        else:
            seq = history.find(channel, event_id)
        return None if seq is None else history.since(channel, seq)

    # -- publishing ------------------------------------------------------

    async def publish_event(self, channel: str, event: EventLike) -> None:
        """Send ``event`` to every subscriber of ``channel``.

        ``event`` is a :class:`ServerSentEvent` or a mapping of its fields
        (``{"event": "message", "data": {...}}``). It is encoded once,
        whatever the number of subscribers. It gets an id (its own, or one
        assigned, monotonic per channel) and is kept in history for clients
        that reconnect. Returns when the event is in the buffer of every
        subscriber still connected; a subscriber whose buffer
        stays full for ``send_timeout`` seconds is disconnected instead.

        With GRIP configured, the same bytes are also published to every
        proxy (on channel ``grip_prefix + channel``), and the call returns
        once every proxy accepted them too.

        Raises:
            ValueError, TypeError: the channel name or the event is invalid
                (nothing was sent to anyone).
            anyio.ClosedResourceError: the event stream has been closed.
            GripPublishError: a GRIP proxy refused the event or could not be
                reached after retries. Local subscribers and the other
                proxies still got it.
            BrokerError: with a broker, the engine refused the event or could
                not be reached within the broker's publish timeout (no
                subscriber got it). With a broker, the call returns once the
                engine has the event; subscribers of every process, this one
                included, get it from the engine's feed.
            RuntimeError: GRIP is configured but the stream was not entered
                with ``async with`` (nothing was sent to anyone).

        Cancellation: if cancelled while waiting for full subscribers, the
        event may have reached some subscribers and not others; an event
        already queued for the proxies is still sent to them.
        """
        message = _as_event(event)
        check_channel_name(channel, self.max_channel_name_length)
        if self.grip_reliable and message.id is not None and _UNSAFE_GRIP_ID.search(message.id):
            raise ValueError(
                f"event id {message.id!r}: with GRIP, ids must not contain white space, ',', ';' or '\"'"
            )
        if self._hub.closed:
            raise anyio.ClosedResourceError("the event stream has been closed")
        if self._broker is not None:
            await self._publish_through_broker(self._broker, channel, message)
            return
        if self._grip is not None:
            self._grip.check_running()  # before the event is numbered and kept
        entry = self._record(channel, message)
        if self._grip is None:
            await self._hub.publish(channel, entry)
            return
        fields = {}
        if self.grip_reliable:  # the proxy checks the chain of ids
            fields["id"] = entry.id
            fields["prev-id"] = entry.prev_id
        pending = self._grip.submit(self.grip_prefix + channel, entry.wire, **fields)
        await self._hub.publish(channel, entry)
        await self._grip.wait_published(pending)

    async def _publish_through_broker(self, broker: Broker, channel: str, message: ServerSentEvent) -> None:
        # The engine numbers and keeps the event; this process's subscribers
        # get it from the engine's feed, like every other process's. With
        # GRIP, the proxies get it from here, with the engine's id and prev-id,
        # so the chain holds whichever process publishes.
        if self._grip is not None:
            self._grip.check_running()
        published = await broker.publish(channel, message)
        if self._grip is None:
            return
        fields = {"id": published.id, "prev-id": published.prev_id} if self.grip_reliable else {}
        wire = message._body + b"id: " + published.id.encode("utf-8") + b"\n\n"
        await self._grip.wait_published(self._grip.submit(self.grip_prefix + channel, wire, **fields))

    def _record(self, channel: str, message: ServerSentEvent, *, keep: bool = True) -> HistoryEntry:
        # Numbered and kept in history before any subscriber sees it, without
        # awaiting, so publish order, sequence order and history order agree.
        self._seq += 1
        seq = self._seq
        event_id = message.id if message.id is not None else f"{self._epoch}-{seq}"
        history = self._history
        last = history.last(channel) if history is not None else None
        body = message._body
        entry = HistoryEntry(
            channel=channel,
            seq=seq,
            prev_seq=last.seq if last is not None else 0,
            prev_id=last.id if last is not None else self._origin_id,
            id=event_id,
            wire=body + b"id: " + event_id.encode("utf-8") + b"\n\n",
            body_length=len(body),
            time=time.monotonic(),
        )
        if history is not None and keep:
            history.append(entry)
        return entry

    def get_channel_publisher(self, channel: str) -> ChannelPublisher:
        """Return a publisher bound to ``channel``.

        Raises:
            ValueError, TypeError: the channel name is invalid.
        """
        return ChannelPublisher(self, check_channel_name(channel, self.max_channel_name_length))

    def channel_writer(self, channel: str) -> ChannelWriter:
        """Return an anyio ``ObjectSendStream`` that publishes its items to ``channel``.

        Raises:
            ValueError, TypeError: the channel name is invalid.
        """
        return ChannelWriter(self, check_channel_name(channel, self.max_channel_name_length))

    # -- state -----------------------------------------------------------

    def statistics(self) -> EventStreamStatistics:
        """Return a snapshot of subscriber counts and event counters (and GRIP proxies')."""
        stats = self._hub.statistics()
        if self._grip is not None:
            stats = dataclasses.replace(stats, grip=self._grip.statistics())
        return stats

    def subscriber_count(self, channel: str | None = None) -> int:
        """The number of subscribers of ``channel``, or of all channels when it is ``None``."""
        return self._hub.subscriber_count(channel)

    async def wait_subscribers(self, count: int, channel: str | None = None) -> None:
        """Wait until ``channel`` (or the whole hub) has exactly ``count`` subscribers.

        Useful in tests: publish once the client is subscribed, or check that
        disconnects were noticed. Wrap it in ``anyio.fail_after`` to bound it.
        """
        while self._hub.subscriber_count(channel) != count:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)

    def _notify_waiters(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for event in waiters:
                event.set()

    # -- closing ---------------------------------------------------------

    async def aclose(self) -> None:
        """End every open stream after what it holds is written, and refuse new ones.

        Streams end cleanly (the response completes), so servers can shut
        down. Requests after this get 503 and publishes raise
        ``ClosedResourceError``. A GRIP publisher started by ``async with``
        sends what is queued and stops. Idempotent.
        """
        self._close_streams()
        if self._started_grip and self._grip is not None:
            self._started_grip = False
            await self._grip.aclose()
        else:
            await anyio.lowlevel.checkpoint()
        if self._started_broker and self._broker is not None:
            self._started_broker = False
            await self._broker.__aexit__(None, None, None)

    def _close_streams(self, now: float | None = None) -> None:
        final = None
        if self._shutdown_event is not None and not self._hub.closed:
            final = self._record("", self._shutdown_event, keep=False)
        self._hub.close(self.shutdown_grace, final, now)
        self._notify_waiters()

    @contextlib.contextmanager
    def close_on_signals(self, *signals: int) -> Iterator[None]:
        """While in the block, SIGTERM and SIGINT (or ``signals``) also close this stream.

        ASGI servers tell the app they are stopping (lifespan shutdown) only
        after every connection has ended, which event streams never do by
        themselves: servers then wait out a graceful timeout (hypercorn) or,
        without one, forever (uvicorn). Inside this block, the signal first
        ends every stream cleanly, as :meth:`aclose` does, and then reaches
        the handler that was installed before (the server's), so shutdown
        goes on at once. Use it in the lifespan, inside ``async with stream``::

            async with stream:
                with stream.close_on_signals():
                    yield

        A signal without a Python handler (default action) is left alone. Must
        be used in the main thread, in the event loop that serves the app.
        """
        token = anyio.lowlevel.current_token()
        native: Any = token.native_token
        # Signal-safe ways back into the event loop: trio's run_sync_soon, asyncio's call_soon_threadsafe.
        schedule = getattr(native, "run_sync_soon", None) or native.call_soon_threadsafe
        clock = token.backend_class.current_time
        previous: dict[int, Any] = {}

        def close() -> None:
            self._close_streams(clock())

        def handler(signum: int, frame: FrameType | None) -> None:
            schedule(close)
            chained = previous.get(signum)
            if callable(chained):
                chained(signum, frame)

        for sig in signals or (signal.SIGTERM, signal.SIGINT):
            current = signal.getsignal(sig)
            if callable(current):
                previous[sig] = current
                signal.signal(sig, handler)
        try:
            yield
        finally:
            for sig, chained in previous.items():
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, chained)

    async def __aenter__(self) -> EventStream:
        """Open the stream for subscribers (again, after an ``aclose()``) and start GRIP publishing.

        Exiting calls :meth:`aclose`. A :class:`GripPublisher` that is
        already running (entered by its owner) is used as it is.
        """
        if self._broker is not None and not self._started_broker:
            await self._broker.__aenter__()  # BrokerError: the engine cannot be reached
            self._started_broker = True
            self._epoch = self._broker.epoch
            self._origin_id = f"{self._epoch}-0"
            self._history = self._broker.history
        self._hub.closed = False
        if self._grip is not None and not self._grip.running:
            await self._grip.__aenter__()
            self._started_grip = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _make_broker(broker: str | Broker | None) -> Broker | None:
    if broker is None or isinstance(broker, Broker):
        return broker
    if isinstance(broker, str):
        from ._redis_broker import RedisBroker

        return RedisBroker(broker)  # ValueError: a malformed URL
    raise TypeError(f"broker must be a redis:// URL or a Broker, not {type(broker).__name__}")


async def _watch_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    # Servers that do not raise from send() report a gone client here.
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except OSError:
        pass
    scope.cancel()


class EventStreamEndpoint:
    """The ASGI app returned by ``EventStream(...)(channels)``.

    It serves HTTP requests with :meth:`EventStream.run`, answers the
    ``lifespan`` protocol (so it can be the top-level app of a server), and
    closes ``websocket`` connections.
    """

    def __init__(self, stream: EventStream, channels: ChannelSpec, *, retry: int | None = None) -> None:
        if retry is not None:
            ServerSentEvent(retry=retry)  # validates
        self.stream = stream
        self.retry = retry
        self._resolver = ChannelResolver(channels)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.stream._serve(scope, receive, send, self._resolver, self.retry)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})
