"""A broker on a Redis-protocol engine (Valkey, Redis), through valkey-glide.

Where its data lives on the engine (one engine or a cluster): ``_layout.py``.
What it starts on entering (its connections, the feed, the follower of the
channels, the heartbeat) and stops on leaving: ``_running.py``.

One Lua script per publish numbers, keeps and publishes the event atomically,
so every process sees one order per channel, and ids ``{epoch}-{seq}`` are the
same everywhere and survive app restarts.

The engine must not evict keys: entering refuses an engine whose
``maxmemory-policy`` may drop the broker's keys (anything but ``noeviction``)
unless ``allow_eviction`` is true.

Each process takes in the feed of the channels it serves only: it subscribes
to a channel's pub/sub channel before it first reads the channel's history,
and unsubscribes once the channel has had no local subscriber for
``feed_linger`` seconds (``_interest.py``). The feed traffic a process reads
is its share of the channels times their rate, not the whole publish rate.
Each entry's sequence number tells whether the process missed one (the feed
was interrupted, or the entry came between its subscribe and its read); it
then reads the missing ones from the stream before delivering newer ones, or,
where history is gone, ends the affected streams so that their clients
reconnect and get ``stream-reset``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._base import BrokerError
from .._core import Broker, HistoryStore, PresenceMember, PresenceTable, PublishedEvent
from .._observe._broker import BrokerStatistics
from .._sse import ServerSentEvent
from ._batching import BatchQueue, Pending
from ._connect import glide_module
from ._options import RedisOptions
from ._running import RunningParts
from ._scripts import PUBLISH, PUBLISH_CLUSTER
from ._url import parse_redis_url

if TYPE_CHECKING:
    from glide import GlideClientConfiguration

    from .._core import Hub

__all__ = ["RedisBroker"]


class RedisBroker(Broker):
    """A broker on a Valkey or Redis server, shared by every process that uses the same keys.

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, or ``rediss://``
            for TLS; on a Valkey/Redis Cluster,
            ``redis+cluster://[user:password@]host[:port][,host[:port]...]``
            (``rediss+cluster://``): some of its nodes (see the broker guide's
            "On a cluster"). Either this or ``configuration``.
        configuration: A ``glide.GlideClientConfiguration`` you built (TLS
            settings, credentials, timeouts); the broker makes its two
            clients (commands, and the pub/sub feed) from it.
        key_prefix: Prefix of every key and pub/sub channel; streams that
            share a prefix (and an engine and database) share their
            channels. Any prefix is isolated from any other, also where one
            extends the other (``app:`` and ``app:ch:``), and from the same
            prefix on another database of the engine.
        max_events: History kept per channel (the engine keeps at least this
            many, trimming in whole blocks; each process keeps exactly this many).
        max_bytes: Bytes of history kept per channel, by the engine and by
            each process's copy alike: each event counts its encoded fields,
            its ``id:`` line and 400 bytes of bookkeeping. The engine trims
            the oldest events on each publish, so its stream never weighs
            more. A client whose position was trimmed gets ``stream-reset``.
            An event that alone weighs more is refused (``ValueError`` at
            publish, nothing sent): the engine could not keep it, so a
            process whose feed was cut could not fill it in. Give every
            process sharing the engine the same limits (each publish trims
            by its publisher's).
        max_age: Seconds an event is kept in history.
        request_timeout: Seconds one request to the engine may take. A new
            stream waits at most this long (+ 0.5 s) for the engine: on a
            channel this process follows, it is then served from the
            process's copy; on a new one it gets 503. Streams opening at
            the same time wait together, not one after another.
        publish_timeout: Seconds a publish keeps retrying while the engine
            cannot be reached, before raising :class:`BrokerError`: every
            publish raises within ``publish_timeout`` of its call (plus the
            time to hand out outcomes), however many are queued; one queued
            behind older ones may fail with them, sooner.
        check_interval: Seconds between checks that the process has every
            event of the channels it serves (they catch a feed that was cut
            while a channel went quiet, and an engine that came back empty).
        allow_eviction: Run on an engine whose ``maxmemory-policy`` may evict
            the broker's keys (a cache's ``allkeys-lru``), logging an error
            instead of refusing: an evicted history ends the streams behind
            it (their clients get ``stream-reset``), an evicted state starts
            a new epoch (every stream resets), and a retried publish whose
            kept reply was evicted may be published twice.
        heartbeat_interval: Seconds between the beats that renew this
            process's subscriber counts and presence in the engine (each
            sends what changed since the last; other processes see a change
            within this time).
        heartbeat_expiry: Seconds after its last beat when a process is left
            out of :meth:`subscriber_count_all` and :meth:`presence`: one that
            dies (``kill -9``) leaves them within this time (one that stops
            cleanly, at once). At least twice ``heartbeat_interval``.
        feed_linger: Seconds this process keeps taking in a channel's feed
            (and its copy of the channel's history) after the channel's last
            local subscriber left (plus up to ``check_interval``): a client
            that reconnects within it is served from this copy, and a
            channel whose subscribers come and go costs no subscribe. A
            process takes in the feed of the channels it serves only.
        feed_channels_max: Past this many channels followed (as a flood of
            streams on new channels makes it), the process takes the whole
            feed through one pattern subscription instead of one
            subscription each, until it follows fewer than half as many
            again; ``None``: never (an ACL user then needs only the
            channels ``{prefix}|*``; for the whole feed it needs
            ``{prefix}|ch:{db}:*`` too, or the process logs a warning and
            stays on one subscription each).
        wait_replicas: How many replicas of the engine (of the channel's
            primary, on a cluster) must have each publish before it returns
            (the engine's ``WAIT``). ``0`` (default): it returns once the
            primary has it, and replication is asynchronous, so a failover
            may lose the events its replicas had not received yet. With
            ``n``, a publish that ``n`` replicas did not acknowledge within
            ``publish_timeout`` raises :class:`BrokerError`
            (``maybe_published``: the primary has it, and subscribers may
            have got it). While it waits, the other requests on the
            broker's connection to that primary wait too.

    Raises:
        ValueError: the URL is malformed, both or neither of ``url`` and
            ``configuration`` were given, a limit is out of range, or
            ``key_prefix`` holds ``|`` or a glob character, or
            ``heartbeat_expiry`` is less than twice ``heartbeat_interval``.
        ImportError: valkey-glide is not installed.
    """

    #: The feed delivers every channel in one task: ``slow_consumer="block"`` would
    #: let one stalled client stop them all (the stream refuses it).
    blocks_per_channel = False

    def __init__(
        self,
        url: str | None = None,
        *,
        configuration: GlideClientConfiguration | None = None,
        key_prefix: str = "eventstream:",
        max_events: int = 256,
        max_bytes: int = 256 * 1024,
        max_age: float = 300.0,
        request_timeout: float = 2.0,
        publish_timeout: float = 10.0,
        check_interval: float = 1.0,
        allow_eviction: bool = False,
        heartbeat_interval: float = 5.0,
        heartbeat_expiry: float = 15.0,
        feed_linger: float = 5.0,
        feed_channels_max: int | None = 50_000,
        wait_replicas: int = 0,
    ) -> None:
        if (url is None) == (configuration is None):
            raise ValueError("give the engine's url or a glide configuration (one of them)")
        glide_module()  # ImportError: valkey-glide is not installed
        self._options = options = RedisOptions(
            address=parse_redis_url(url) if url is not None else None,
            configuration=configuration,
            key_prefix=key_prefix,
            max_events=max_events,
            max_bytes=max_bytes,
            max_age=max_age,
            request_timeout=request_timeout,
            publish_timeout=publish_timeout,
            check_interval=check_interval,
            allow_eviction=allow_eviction,
            heartbeat_interval=heartbeat_interval,
            heartbeat_expiry=heartbeat_expiry,
            feed_linger=feed_linger,
            feed_channels_max=feed_channels_max,
            wait_replicas=wait_replicas,
        )
        self.key_prefix = key_prefix
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.request_timeout = request_timeout
        self.publish_timeout = publish_timeout
        self.check_interval = check_interval
        self.allow_eviction = allow_eviction
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_expiry = heartbeat_expiry
        self.feed_linger = feed_linger
        self.feed_channels_max = feed_channels_max
        self.wait_replicas = wait_replicas
        self._hub: Hub | None = None
        self._sender = sender = options.sender()
        # On a cluster each batch is split by primary, its parts sent at once (the primaries
        # run them side by side): one sender, whose batches then gather what is queued meanwhile
        # (two halved the events per script call, which cost the engines and this process more).
        senders = 1 if sender.layout.cluster else 2
        self._queue = BatchQueue(self._send_batch, batch_size=256, senders=senders)
        #: Calls of publish waiting for the engine (the feed gathers a burst while any are).
        self._publishing = 0
        self._exit: contextlib.AsyncExitStack | None = None
        self._presence_table: PresenceTable | None = None
        self._publish_script: Any = None
        #: Its connections, feed and heartbeat while it runs (_running.py).
        self._parts = RunningParts(options)

    # -- the interface ---------------------------------------------------------

    @property
    def epoch(self) -> str:
        follower = self._parts.follower
        return follower.epoch if follower is not None else self._parts.epoch

    @property
    def history(self) -> HistoryStore:
        follower = self._parts.follower
        if follower is None:
            raise RuntimeError("the broker is not running with a hub: enter the stream (async with) first")
        return follower.history

    @property
    def description(self) -> str:
        return self._options.description

    def bind(self, hub: Hub) -> None:
        if self._exit is not None:
            raise RuntimeError("bind the hub before entering the broker")
        self._hub = hub

    def bind_presence(self, table: PresenceTable) -> None:
        if self._exit is not None:
            raise RuntimeError("bind the presence table before entering the broker")
        self._presence_table = table

    async def __aenter__(self) -> RedisBroker:
        """Connect to the engine, check that it keeps keys, read (or set) its epoch and start the feed.

        Raises:
            BrokerError: the engine cannot be reached (the message names it and the reason),
                or its ``maxmemory-policy`` may evict the broker's keys (the message names
                the setting) and ``allow_eviction`` is false.
            RuntimeError: the broker is already running.
        """
        if self._exit is not None:
            raise RuntimeError("the broker is already running")
        glide = glide_module()
        self._queue.bind()  # publishes wait in this event loop
        self._publish_script = glide.Script(PUBLISH_CLUSTER if self._options.cluster else PUBLISH)
        async with contextlib.AsyncExitStack() as stack:
            await self._parts.start(
                stack,
                self._hub,
                self._presence_table,
                within=self.publish_timeout,
                allow_eviction=self.allow_eviction,
                linger=self.feed_linger,
                publishing=lambda: self._publishing,
                slots=self._sender.slots,
            )
            self._exit = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the feed and the heartbeat, remove this process's part of the counts, close the connections.

        The removal waits at most ``request_timeout`` (+ 0.5 s) for the engine; if it fails
        (logged), the part expires after ``heartbeat_expiry``.
        """
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()

    # -- publishing ------------------------------------------------------------

    async def publish(self, channel: str, event: ServerSentEvent) -> PublishedEvent:
        """Have the engine number, keep and fan out ``event``; return its id and the previous one.

        Connection failures and an engine that is loading or busy are retried
        with capped, jittered backoff for ``publish_timeout`` seconds. The
        engine keeps each batch's reply until it is acknowledged, so a retry
        whose first attempt did run (its reply was lost) gets that reply, and
        the event is not published twice.

        Raises:
            ValueError: the event alone weighs more than ``max_bytes`` (nothing was sent).
            BrokerError: the engine refused the event (a script error, wrong
                credentials) or could not be reached within ``publish_timeout``;
                its ``maybe_published`` tells whether an attempt went unanswered
                (the event may then have been published, once).
            RuntimeError: the broker is not running.

        Concurrent calls are sent together (one script call for up to 256
        events), the next batch while the previous one is in flight.

        Cancellation: the event may or may not have been published (it is
        not, if it was still waiting for a batch); a call that is sending a
        batch for others finishes sending it first.
        """
        if self._parts.client is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        self._sender.check_size(event._body, event.id, self.epoch)
        item = Pending(channel, event._body, event.id, time.monotonic() + self.publish_timeout)
        self._publishing += 1
        try:
            await self._queue.submit(item)
        finally:
            self._publishing -= 1
        if item.error is not None:
            if isinstance(item.error, BrokerError):
                self._parts.contact(ok=False)
            raise item.error
        self._parts.contact(ok=True)
        event_id = item.id if item.id is not None else f"{item.epoch}-{item.seq}"
        return PublishedEvent(event_id, item.prev_id)

    def statistics(self) -> BrokerStatistics | None:
        """The feed's counters since the broker started; ``None`` when it does not run with a hub."""
        return self._parts.statistics()

    async def ping(self) -> None:  # health: the readiness check (eventstream._observe)
        """Send ``PING`` to the engine (a readiness check), through the command client.

        Raises:
            BrokerError: the engine did not answer within ``request_timeout``, or answered an
                error, or the feed's connection is down (being made again).
            RuntimeError: the broker is not running.
        """
        await self._parts.ping()

    async def _send_batch(self, batch: list[Pending]) -> None:
        await self._sender.send_batch(self._parts.client, self._publish_script, batch)

    async def prepare(self, channels: Sequence[str], *, resuming: bool = True) -> None:
        """Load the history of channels seen for the first time, and catch up on the others.

        For a connection that starts from now (``resuming`` false), the
        channels this process follows are not read again: their feed brings
        what is newer, to the connection too.

        Channels are read concurrently, with other connections' reads, while
        the feed goes on; it returns within ``request_timeout`` (+ 0.5 s).

        Raises:
            BrokerError: the engine could not be reached (or did not answer
                within ``request_timeout``) and a channel was never loaded.
            RuntimeError: the broker is not running, or runs without a hub (publishing only).
        """
        follower = self._parts.follower
        if self._parts.client is None or follower is None:
            raise RuntimeError("the broker is not running: enter the stream (async with) first")
        # A little more than one request's time: a read sent at once gets its
        # answer (or its timeout error) first.
        await follower.prepare(channels, within=self._options.request_seconds + 0.5, resuming=resuming)

    # -- counts and presence across processes ----------------------------------

    async def subscriber_count_all(self, channel: str | None, local: int) -> int:
        """``local`` plus the subscribers of ``channel`` (``None``: all) in the other live processes.

        Other processes' counts are as of their last heartbeat (at most
        ``heartbeat_interval`` old); a process that died is left out at most
        ``heartbeat_expiry`` after its last one. One script call.

        Raises:
            BrokerError: the engine did not answer within ``request_timeout`` (+ 0.5 s),
                or answered an error.
            RuntimeError: the broker is not running.
        """
        keeper = self._parts.keeper
        if keeper is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        return await keeper.count_all(self._parts.client, channel, local)

    async def presence(self, channel: str, local: list[PresenceMember]) -> list[PresenceMember]:
        """``local`` merged with who is subscribed to ``channel`` in the other live processes, by identity.

        As fresh as :meth:`subscriber_count_all`; one script call.

        Raises:
            BrokerError, RuntimeError: as :meth:`subscriber_count_all`.
        """
        keeper = self._parts.keeper
        if keeper is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        return await keeper.presence(self._parts.client, channel, local)
