"""The :class:`EventStream` facade: options, endpoints, publishing, state.

The stream is built from one frozen, validated :class:`StreamOptions`
(``_options.py``) and calls its parts through their methods: numbering,
history and delivery are a broker's (``_core/_local.py`` by default, for
one process); entering, closing and signals are its :class:`Lifecycle`'s
(``_lifecycle/``); serving a request (and :class:`EventStreamEndpoint`,
re-exported here) is the request path's (``_serve/``), which gets a
:class:`Serving` of the parts. ``_parts.py`` builds them, and holds the
bodies of the state queries (publishing keeps its own here): the methods here keep the
public documentation and delegate there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator
from types import TracebackType
from typing import TypeVar

import anyio

from .._base import BrokerError, GripPublishError, SubscribeLimits
from .._core import (
    PRESENCE_PREFIX,
    Broker,
    EventStreamStatistics,
    HistoryStore,
    PresenceMember,
    SlowConsumerPolicy,
)
from .._grip import GripPublisher, GripSubmission
from .._lifecycle import current_thread_id
from .._observe._trace import TRACEPARENT
from .._options import DEFAULT_HISTORY, STREAM_RETRY, UNSAFE_GRIP_ID, GripConfig, StreamOptions, as_event
from .._serve import EventStreamEndpoint, Readiness, Serving, check_channel_name, check_readiness, serve
from .._sse import ServerSentEvent
from ..types import Authorize, ChannelSpec, EventLike, Receive, Scope, Send
from . import _parts
from ._writer import ChannelPublisher, ChannelWriter

__all__ = ["EventStream", "EventStreamEndpoint", "parts_of"]

_Self = TypeVar("_Self", bound="EventStream")


class EventStream:
    """A hub of named channels that ASGI endpoints stream to clients as Server-Sent Events.

    One instance per process is the usual setup (see
    :func:`~eventstream.get_event_stream_singleton`). It starts no task and
    needs no setup: endpoints subscribe on demand, and publishing works from
    any task of the event loop the endpoints run in. Other threads publish
    with :meth:`publish_event_threadsafe` (``publish_event`` raises
    ``RuntimeError`` there).

    Args:
        buffer_size: How many events each subscriber may hold before a
            publish has to wait for it.
        send_timeout: How long (seconds) a subscriber whose buffer is full
            may take nothing before it is disconnected (the client reconnects
            and resumes from history) and counted in
            :attr:`EventStreamStatistics.subscribers_dropped`. Publishes wait
            for such a subscriber at most 0.1 s (or ``send_timeout`` if
            shorter), and not at all for one not yet proven to read (see
            ``slow_consumer``); then they skip it and it catches up from history.
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
            ids, and the proxy then delays them (Pushpin: ``message_wait``). The next link
            is a query-only relative link (it cannot name another host or
            path); a request through the proxy whose path has ``.`` or ``..``
            segments gets 400, since the proxy would fetch its next link
            elsewhere. Use it with a verify key, so that next-link requests
            are recognised by their signature.
        history: Where recent events are kept for clients that reconnect
            with ``Last-Event-ID``: a :class:`MemoryHistory` by default (256
            events, 256 KiB and 5 minutes per channel), any
            :class:`HistoryStore`, or ``None`` to keep none (a reconnecting
            client then always gets ``stream-reset``).
        slow_consumer: What to do with a subscriber whose buffer is full:
            ``"disconnect"`` (wait while it makes progress; leave it behind to
            catch up from history after 0.1 s without, disconnect it after
            ``send_timeout``; a client not yet proven to read is not waited
            for while its connection is held in a send: it holds up to
            ``16 * max(buffer_size, 32)`` events or 0.1 s' worth instead),
            ``"drop-oldest"`` (drop its oldest event and send it
            ``stream-reset``; disconnect it after ``send_timeout`` without
            taking anything), or ``"block"`` (the publisher waits; not with
            a shared ``broker`` such as :class:`RedisBroker`, whose feed
            serves every channel at once).
        retry: The reconnection delay (ms) sent to clients in ``stream-open``;
            endpoints may override it.
        authorize: Called with the request scope and its channels before
            anything is streamed (sync or async); a false answer gets 403 and
            nothing is subscribed. It applies to requests through GRIP too,
            except the proxy's signed next-link requests (reliable mode):
            those are held on the channels the proxy names in ``Grip-Last``,
            the channels of the original, authorized request. It may answer a
            :class:`~eventstream.auth.Grant` (the stream ends at its
            ``expires_at``) or raise :class:`~eventstream.auth.Unauthorized` (401).
        max_subscribers: The most concurrent streams; beyond it, 503 with
            ``Retry-After``.
        subscribe_limits: Limits per client address (new streams per second,
            open streams), a :class:`~eventstream.SubscribeLimits`; beyond
            them, 429 with ``Retry-After``. The address is the scope's
            ``client``: behind a proxy, have the server set it from
            ``X-Forwarded-For`` (see the how-to on authentication).
        presence: Keep who is subscribed to each channel, by the identity of
            each stream's :class:`~eventstream.auth.Grant` (see :meth:`presence`),
            and announce it: when an identity's first stream on a channel opens
            in this process, a ``join`` event (``{"channel", "identity", "info"}``,
            ``info`` from :attr:`~eventstream.auth.Grant.info`) is published on
            the companion channel ``presence:{channel}``; when its last one here
            ends, a ``leave`` event. ``True`` for every channel, or a
            collection of names and of prefixes ending with ``*``
            (``["lobby", "room-*"]``). Channels that start with ``presence:``
            are then reserved for these events: publishing to one raises
            ``ValueError``; pages subscribe to them like to any channel, as
            ``authorize`` allows. See the how-to on presence for what the
            events mean across processes.
        shutdown_event: An event sent to every open stream when the stream
            is closed (for example ``{"event": "shutdown"}``), or ``None``.
        shutdown_grace: Seconds open streams get, when the stream is closed,
            to write what they hold; then they are cut.
        handle_signals: Close the stream on SIGINT and SIGTERM, so that the
            server can stop: the first request served in the main thread
            (or the first lifespan startup of an endpoint) installs handlers
            that end every open stream, wait until their responses are
            complete (at most ``shutdown_grace``), then pass the signal on
            to the handler installed before (the server's), or to the
            default action. A second signal is passed on at once. The
            handlers are given back when the stream is closed. ``False``
            for apps that manage signals themselves.
        broker: A shared engine for several processes: a ``redis://`` or
            ``rediss://`` URL (Valkey or Redis, through valkey-glide; a
            cluster's: ``redis+cluster://host:port,...``), or a
            :class:`Broker` such as a tuned :class:`RedisBroker`. Events are
            then numbered and kept by the engine, and every process sharing
            it delivers them; the stream must be entered (``async with``),
            which runs the broker. ``None`` (default): this process only.

    Raises:
        ValueError: an option is out of range, a GRIP configuration is
            malformed (checked here, not at the first publish), or
            ``slow_consumer="block"`` was given with a broker whose feed
            serves every channel at once (:class:`RedisBroker`).
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
        history: HistoryStore | None = DEFAULT_HISTORY,
        slow_consumer: SlowConsumerPolicy = "disconnect",
        retry: int | None = None,
        authorize: Authorize | None = None,
        max_subscribers: int | None = None,
        subscribe_limits: SubscribeLimits | None = None,
        presence: bool | Collection[str] = False,
        shutdown_event: EventLike | None = None,
        shutdown_grace: float = 2.0,
        handle_signals: bool = True,
        broker: str | Broker | None = None,
    ) -> None:
        self._options = options = StreamOptions(
            buffer_size=buffer_size,
            send_timeout=send_timeout,
            keep_alive_interval=keep_alive_interval,
            max_channels=max_channels,
            max_channel_name_length=max_channel_name_length,
            grip=grip,
            grip_prefix=grip_prefix,
            grip_reliable=grip_reliable,
            history=history,
            slow_consumer=slow_consumer,
            retry=retry,
            authorize=authorize,
            max_subscribers=max_subscribers,
            subscribe_limits=subscribe_limits,
            presence=presence,
            shutdown_event=shutdown_event,
            shutdown_grace=shutdown_grace,
            handle_signals=handle_signals,
            broker=broker,
        )
        self._serving = parts = _parts.assemble(options)  # ValueError: GRIP, or "block" with a broker
        self._hub, self._broker, self._grip = parts.hub, parts.broker, parts.grip
        self._loop, self._lifecycle = parts.loop, parts.lifecycle

    @property
    def closed(self) -> bool:
        """Whether the stream is closed (``aclose()``, a signal) and refuses new streams and publishes.

        Entering it again (``async with``) opens it again.
        """
        return self._hub.closed

    @property
    def grip(self) -> GripPublisher | None:
        """The GRIP publisher, when ``grip`` was configured."""
        return self._grip

    # The options, read-only: the stream was built from them (see the class's arguments).

    @property
    def keep_alive_interval(self) -> float | None:
        """Seconds of silence before a ``keep-alive`` event, or ``None``."""
        return self._options.keep_alive_interval

    @property
    def max_channels(self) -> int:
        """The most channels one request may subscribe to."""
        return self._options.max_channels

    @property
    def max_channel_name_length(self) -> int:
        """The longest channel name accepted."""
        return self._options.max_channel_name_length

    @property
    def grip_prefix(self) -> str:
        """Prepended to channel names on the GRIP proxies."""
        return self._options.grip_prefix

    @property
    def grip_reliable(self) -> bool:
        """GRIP reliable mode."""
        return self._options.grip_reliable

    @property
    def retry(self) -> int | None:
        """The reconnection delay (ms) sent in ``stream-open``, or ``None``."""
        return self._options.retry

    @property
    def authorize(self) -> Authorize | None:
        """What decides whether a request may stream its channels, or ``None``."""
        return self._options.authorize

    @property
    def max_subscribers(self) -> int | None:
        """The most concurrent streams, or ``None``."""
        return self._options.max_subscribers

    @property
    def subscribe_limits(self) -> SubscribeLimits | None:
        """The limits on subscribing per client address, or ``None``."""
        return self._options.subscribe_limits

    @property
    def shutdown_grace(self) -> float:
        """Seconds open streams get, when the stream is closed, to write what they hold."""
        return self._options.shutdown_grace

    @property
    def handle_signals(self) -> bool:
        """Whether SIGINT and SIGTERM close the stream."""
        return self._options.handle_signals

    @property
    def _epoch(self) -> str:
        # The prefix of assigned ids (a shared broker's is known once it runs).
        return self._broker.epoch

    @property
    def _history(self) -> HistoryStore | None:
        # What connections replay from (RuntimeError: a shared broker that is not running).
        return self._broker.history

    # -- endpoints -------------------------------------------------------

    def __call__(self, channels: ChannelSpec, *, retry: int | None = STREAM_RETRY) -> EventStreamEndpoint:
        """Return an ASGI app that streams ``channels`` to each GET request.

        ``channels`` is a channel name, a list of names, or a callable that
        takes the ASGI scope and returns names (it may be async). In names,
        ``{token}`` is replaced by the route parameter ``token`` from
        ``scope["path_params"]`` (Starlette and FastAPI routers set it).
        ``retry`` overrides the stream's reconnection delay for this endpoint.

        Names are checked here, with each ``{token}`` standing for a valid
        name, so an endpoint that could never stream fails now, not on each
        request. A callable is checked on each request: when it returns
        neither a name nor an iterable of names, the request gets 500 and the
        ``eventstream`` logger an error naming the callable.

        Raises:
            TypeError: ``channels`` is not a str, an iterable of str or a callable.
            ValueError: ``channels`` gives no channel, more than
                ``max_channels``, or an invalid name (empty, too long,
                a control character, ``,``, ``;`` or ``"``); ``retry`` is invalid.
        """
        return EventStreamEndpoint(
            self._serving, channels, retry=self.retry if retry is STREAM_RETRY else retry
        )

    async def run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        channels: str | Iterable[str],
        *,
        retry: int | None = STREAM_RETRY,
    ) -> None:
        """Serve one HTTP request as an event stream of ``channels``.

        The direct form of an endpoint, for use inside your own ASGI app. It
        returns when the client disconnects, when the stream is ended (the
        subscriber was too slow, or :meth:`aclose` was called), or at once for
        requests that get an error status: 405 for methods other than GET and
        HEAD, 406 when ``Accept`` excludes ``text/event-stream``, 400 for
        invalid channels or ``Last-Event-ID: error`` (or ``?lastEventId=error``),
        401 or 403 when ``authorize`` refuses, 503 after :meth:`aclose` or beyond
        ``max_subscribers``.

        Raises:
            TypeError: ``channels`` is neither a str nor an iterable of str.

        A client that sends ``Last-Event-ID`` (or the ``lastEventId`` query
        parameter) first gets every event it missed, from history, then live
        events; if history cannot tell, it gets ``stream-reset`` instead.
        """
        names = _parts.channel_names(channels)  # TypeError
        self._lifecycle.watch_signals()
        await serve(
            self._serving, scope, receive, send, names, self.retry if retry is STREAM_RETRY else retry
        )

    # -- publishing ------------------------------------------------------

    async def publish_event(self, channel: str, event: EventLike) -> None:
        """Send ``event`` to every subscriber of ``channel``.

        ``event`` is a :class:`ServerSentEvent` or a mapping of its fields
        (``{"event": "message", "data": {...}}``). It is encoded once,
        whatever the number of subscribers. It gets an id (its own, or one
        assigned, monotonic per channel) and is kept in history for clients
        that reconnect. Returns when the event is in the buffer of every
        subscriber still connected, or the subscriber was left behind (its
        buffer full and nothing taken for 0.1 s: it catches up from history,
        see ``slow_consumer``).

        With GRIP configured, the same bytes are also published to every
        proxy (on channel ``grip_prefix + channel``), and the call returns
        once every proxy accepted them too.

        Raises:
            ValueError, TypeError: the channel name or the event is invalid,
                or, with a shared broker, the event alone weighs more than the
                history it keeps per channel (``max_bytes``), or, with
                ``presence``, the channel starts with ``presence:``; nothing
                was sent to anyone.
            anyio.ClosedResourceError: the event stream has been closed.
            GripPublishError: a GRIP proxy refused the event, could not be
                reached after retries, or did not accept it within the
                publisher's ``publish_timeout`` (15 s by default; its
                ``maybe_published`` says whether the proxy may have it).
                Local subscribers and the other proxies still got it.
            BrokerError: with a broker, the engine refused the event or could
                not be reached within the broker's publish timeout. Usually no
                subscriber got it; if an attempt reached the engine and only
                its answer was lost, the engine may have published it (once).
                With a broker, the call returns once the
                engine has the event; subscribers of every process, this one
                included, get it from the engine's feed.
            RuntimeError: GRIP is configured but the stream was not entered
                with ``async with`` (nothing was sent to anyone); or it was
                called from a thread other than the one whose event loop
                serves the stream's connections (use
                :meth:`publish_event_threadsafe` there).

        Cancellation: the event is queued for every local subscriber before
        the call waits for full ones, so cancelling the wait does not take it
        back; an event already queued for the proxies is still sent to them.
        """
        parts = self._serving  # the body is here, not in a helper: a call less per publish
        loop = parts.loop
        if current_thread_id() != loop.thread:
            loop.claim()  # first use, or another thread: raises unless its loop has ended
        message = event if type(event) is ServerSentEvent else as_event(event)  # no call for the usual case
        hub = parts.hub
        options = parts.options
        # A channel somebody is subscribed to was checked when they subscribed.
        limit = options.max_channel_name_length
        if type(channel) is not str or not hub.subscribed(channel) or len(channel) > limit:
            check_channel_name(channel, limit)
        if parts.presence is not None and channel.startswith(PRESENCE_PREFIX):  # presence: reserved
            raise ValueError(
                f"channel {channel!r}: channels that start with {PRESENCE_PREFIX!r} carry presence"
            )
        if options.grip_reliable and message.id is not None and UNSAFE_GRIP_ID.search(message.id):
            raise ValueError(
                f"event id {message.id!r}: with GRIP, ids must not contain white space, ',', ';' or '\"'"
            )
        if hub.closed:
            raise anyio.ClosedResourceError("the event stream has been closed")
        tracing = hub.tracing
        if tracing is not None and TRACEPARENT.get() is None and tracing.active:  # tracing: in its span
            with tracing.publish(channel, message.id):
                return await self.publish_event(channel, message)
        grip = parts.grip
        observed = parts.observed
        timing = observed.timing  # metrics: set while eventstream.prometheus watches
        start = timing.clock() if timing is not None else 0.0
        try:  # metrics: errors counted by cause
            if grip is None:
                await parts.broker.dispatch(channel, message)
            else:
                grip.check_running()  # before the event is numbered and kept
                # Queued for the proxies as soon as it is numbered, before delivery
                # waits for full subscribers: proxies get a channel's ids in order.
                submission = GripSubmission(
                    grip, options.grip_prefix + channel, reliable=options.grip_reliable
                )
                await parts.broker.dispatch(channel, message, submission)
                await submission.wait()
        except (BrokerError, GripPublishError) as exc:
            observed.publish_failed(exc)
            raise
        if timing is not None:  # metrics
            timing.observe(timing.clock() - start)
            observed.engine_up = True  # (a shared broker's engine took it)

    def publish_event_threadsafe(self, channel: str, event: EventLike) -> None:
        """Publish from a thread that is not the event loop's: blocks until published.

        Runs :meth:`publish_event` in the event loop that serves this stream
        (the one its latest connection, or ``async with stream``, ran in) and
        returns its result in the calling thread: once the event is in every
        subscriber's buffer (and accepted by the GRIP proxies). Call it from a
        plain thread; from another event loop, run it in a worker thread
        (``await anyio.to_thread.run_sync(stream.publish_event_threadsafe, ...)``)
        so that loop is not blocked.

        Raises:
            RuntimeError: called from the event loop's own thread (``await
                publish_event`` there), or no event loop has used the stream
                yet; ``anyio.RunFinishedError`` (a ``RuntimeError``) when
                that event loop has ended, or ends while the call waits (within
                about 0.05 s of its end, whatever it was doing: if the publish
                had begun, some subscribers may have the event).
            ValueError, TypeError, anyio.ClosedResourceError, GripPublishError:
                as :meth:`publish_event`, raised in the calling thread.

        Cancellation: it cannot be cancelled from the calling thread; the
        publish runs to its end in the event loop.
        """
        self._loop.run_from_thread(self.publish_event, channel, event)

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
        return _parts.statistics(self._serving)

    def subscriber_count(self, channel: str | None = None) -> int:
        """The number of subscribers of ``channel``, or of all channels when it is ``None``."""
        return self._hub.subscriber_count(channel)

    async def subscriber_count_all(self, channel: str | None = None) -> int:
        """The subscribers of ``channel`` (or of all channels) in every process sharing the broker.

        Without a broker (this process alone) it is :meth:`subscriber_count`;
        the synchronous :meth:`subscriber_count` keeps counting this process only.

        Raises:
            TypeError, ValueError: ``channel`` is not a valid channel name.
            NotImplementedError: the broker cannot count across processes.
            BrokerError: the broker's engine could not be reached.
            RuntimeError: the broker is not running.
        """
        return await _parts.count_all(self._serving, channel)

    async def presence(self, channel: str) -> list[PresenceMember]:
        """Who is subscribed to ``channel`` in every process sharing the broker, by identity.

        A stream is present under the identity of its ``authorize`` answer's
        :class:`~eventstream.auth.Grant` (``JWTAuthorizer``: the token's
        ``sub``); a stream without one is not named. Without a broker, this
        process's streams.

        Raises:
            RuntimeError: the stream was built without ``presence=True``, or
                the broker is not running.
            TypeError, ValueError: ``channel`` is not a valid channel name, or
                its presence is not kept (not in ``presence``'s collection).
            NotImplementedError: the broker cannot tell presence across processes.
            BrokerError: the broker's engine could not be reached.
        """
        return await _parts.presence(self._serving, channel)

    async def readiness(self, within: float = 2.0) -> Readiness:
        """Whether this process can take new streams: what a readiness probe asks.

        Ready: the stream is not closed (``aclose()`` or a signal make it
        answer not ready: the process is shutting down); with a shared broker,
        the broker runs (the stream was entered) and its engine answers a
        ``PING`` within ``within`` seconds; with GRIP, the publisher runs.
        :class:`HealthEndpoint` serves the answer over HTTP.

        Never raises for what it checks: a failure is in the answer's ``checks``.
        """
        return await check_readiness(self._serving, within)

    # -- life ------------------------------------------------------------

    async def wait_subscribers(self, count: int, channel: str | None = None) -> None:
        """Wait until ``channel`` (or the whole hub) has exactly ``count`` subscribers.

        Useful in tests: publish once the client is subscribed, or check that
        disconnects were noticed. Wrap it in ``anyio.fail_after`` to bound it.
        """
        await self._lifecycle.wait_subscribers(count, channel)

    async def aclose(self) -> None:
        """End every open stream after what it holds is written, and refuse new ones.

        Streams end cleanly (the response completes), so servers can shut
        down. Requests after this get 503 and publishes raise
        ``ClosedResourceError``. Call it from any task (a request handler, a
        task group of your own): what ``async with`` started stops when it
        exits, in the task that entered it (a GRIP publisher sends what is
        queued, then stops; a shared broker disconnects). Idempotent.
        """
        await self._lifecycle.aclose()

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
        Since ``handle_signals`` (on by default) does this without any code,
        it is only needed for other signals, or with ``handle_signals=False``.
        """
        with self._lifecycle.close_on_signals(signals):
            yield

    async def __aenter__(self: _Self) -> _Self:
        """Open the stream for subscribers (again, after an ``aclose()``); start the broker and GRIP.

        A shared broker connects here and starts following its engine
        (``BrokerError`` when the engine cannot be reached, or may evict the
        broker's keys and eviction was not allowed). In the main
        thread, with ``handle_signals``, it also installs the SIGINT and
        SIGTERM handlers (see the option). Exiting closes (see :meth:`__aexit__`). A
        :class:`GripPublisher` that is already running (entered by its owner)
        is used as it is.
        """
        await self._lifecycle.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close (as :meth:`aclose`), then stop the GRIP publisher and the broker that entering started.

        Cancellation: what the GRIP publisher still holds fails in its
        publishers with ``GripPublishError``; the broker disconnects.
        """
        await self._lifecycle.exit()


def parts_of(stream: EventStream) -> Serving:
    """The parts of ``stream`` (its hub, broker, GRIP publisher, lifecycle and counters).

    For :mod:`eventstream.prometheus`, which reads their counters at scrape time.
    """
    return stream._serving
