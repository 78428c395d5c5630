"""A running broker's parts: its connections to the engine, the feed and its follower, the heartbeat.

:meth:`RunningParts.start` makes them in order: the feed's connection, the
command client, the checks of the engine (its eviction policy, its epoch),
then, for a broker with a hub, the reader of the feed, the follower of the
channels and the tasks that read the feed, check it and beat. Each is pushed
on the broker's exit stack, which stops them in reverse and then unsets them.
The parts also answer the readiness check (``PING``), tell whether the
engine answers, and count the feed's traffic (for the metrics).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from .._base import BrokerError
from .._observe._broker import BrokerStatistics
from ._connect import check_eviction, engine_epoch, glide_module
from ._feed import FeedInbox
from ._follow import EngineFollower
from ._layout import CLUSTER_EPOCH

if TYPE_CHECKING:
    from glide import GlideClient

    from .._core import Hub, PresenceTable
    from ._feedconn import FeedConnection
    from ._options import RedisOptions
    from ._presence import PresenceKeeper
    from ._reader import EngineReader
    from ._shardfeed import ShardedFeed
    from ._slots import SlotMap

__all__ = ["RunningParts"]


class _Ping:
    """A readiness ``PING`` in flight: its outcome (answered, or why it failed: neither if
    its caller was cancelled), for the callers waiting for its end."""

    __slots__ = ("_done", "answered", "error")

    def __init__(self) -> None:
        self.answered = False
        self.error: BrokerError | None = None
        self._done = anyio.Event()

    def finish(self) -> None:
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()


class RunningParts:
    """The parts of a :class:`~eventstream.RedisBroker` while it runs (``None`` before and after).

    Args:
        options: The broker's options.
    """

    def __init__(self, options: RedisOptions) -> None:
        self._options = options
        #: The engine's epoch, as read on the latest start (it stays after a stop).
        self.epoch = ""
        self.client: GlideClient | None = None
        self.keeper: PresenceKeeper | None = None
        #: The feed's parts (with a hub only).
        self.reader: EngineReader | None = None
        self.inbox: FeedInbox | None = None
        self.feed: FeedConnection | ShardedFeed | None = None
        self.follower: EngineFollower | None = None
        #: The feed's connection count when the latest contact with the engine failed (None: it did not).
        self._failed_at: int | None = None
        #: The readiness PING in flight.
        self._ping: _Ping | None = None

    async def start(
        self,
        stack: contextlib.AsyncExitStack,
        hub: Hub | None,
        presence_table: PresenceTable | None,
        *,
        within: float,
        allow_eviction: bool,
        linger: float,
        publishing: Callable[[], int],
        slots: SlotMap,
    ) -> None:
        """Connect to the engine, check that it keeps keys, read (or set) its epoch and start the feed.

        Everything started is pushed on ``stack``. Without a hub (publishing only), the
        feed's connection is closed once the engine is checked. ``within``: seconds
        each connection may take to be made; ``linger``: the broker's ``feed_linger``;
        ``publishing`` tells how many publishes are waiting for the engine; ``slots`` is
        a cluster's slot map (the publishes').

        Raises:
            BrokerError: the engine cannot be reached (the message names it and the reason),
                or its ``maxmemory-policy`` may evict the broker's keys (the message names
                the setting) and ``allow_eviction`` is false.
        """
        options = self._options
        engine = options.description
        keeper = options.keeper()
        # The feed's connection first: it is made on the event loop, within
        # publish_timeout, and says why it failed (glide's client is made
        # while the loop waits, and says "timed out" for an untrusted certificate).
        inbox = FeedInbox()
        feed = options.feed(inbox)
        await feed.connect(within=within)
        stack.push_async_callback(feed.aclose)
        client = await options.connect()
        stack.push_async_callback(client.close)
        await check_eviction(client, engine=engine, allow_eviction=allow_eviction)
        if options.cluster:
            self.epoch = CLUSTER_EPOCH  # (fixed: see _layout.py)
        else:
            self.epoch = await engine_epoch(client, state=options.layout.state, engine=engine)
        self.client = client
        self.keeper = keeper
        stack.callback(self._stopped)
        if hub is None:
            await feed.aclose()  # (publishing only: no feed to read)
            return
        history = options.history(self.epoch)
        reader = options.reader(client, publishing=publishing, slots=slots)
        stack.callback(reader.stop)
        interest = options.interest()
        follower = EngineFollower(
            hub,
            history,
            reader.read,
            engine=engine,
            read_many=reader.read_many,
            interest=interest,
            linger=linger,
        )
        interest.bind(feed)
        stack.callback(interest.bind, None)
        self.reader, self.inbox, self.feed = reader, inbox, feed
        stack.push_async_callback(keeper.leave, client)  # after the beats stop
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        self.follower = follower
        tg.start_soon(feed.run)
        tg.start_soon(reader.read_feed, inbox, follower)
        tg.start_soon(reader.check_periodically, follower)
        tg.start_soon(keeper.run, client, hub, presence_table)

    def _stopped(self) -> None:
        self.reader = self.inbox = self.feed = None
        self.client = None
        self.keeper = None
        self.follower = None

    def statistics(self) -> BrokerStatistics | None:
        """The feed's counters since the start; ``None`` without a hub, or when not running."""
        follower, reader, inbox = self.follower, self.reader, self.inbox
        if follower is None or reader is None or inbox is None:
            return None
        return BrokerStatistics(
            feed_channels=len(follower.interest.subscribed),
            feed_messages=reader.messages,
            feed_dropped=inbox.dropped,
            feed_unchecked=follower.suspects.refused,
            events_filled=follower.filled,
            feed_requests=follower.interest.requests,
            feed_connected=self.feed is not None and self.feed.connected,
            engine_answering=self.answering(),
            feed_whole=follower.interest.whole,
        )

    async def ping(self) -> None:
        """Send ``PING`` to the engine through the command client (the broker's readiness check).

        Calls made while a ``PING`` is in flight share its answer instead of sending
        their own: a flood of readiness checks costs the engine one ``PING`` at a time.

        Raises:
            BrokerError: the engine did not answer within the request timeout, or answered an
                error, or the feed's connection is down (being made again).
            RuntimeError: the broker is not running.

        Cancellation: a call cancelled while others wait for its ``PING`` leaves them to send
        their own.
        """
        while True:
            client = self.client
            if client is None:
                raise RuntimeError("the broker is not running: enter it (async with) first")
            feed = self.feed
            if feed is not None and not feed.connected:
                reason = "the feed's connection is down (connecting again)"
                raise BrokerError(self._options.description, reason)
            flight = self._ping
            if flight is None:
                break
            await flight.wait()
            if flight.error is not None:
                raise flight.error
            if flight.answered:
                return
        flight = self._ping = _Ping()
        try:
            await self._send_ping(client)
            flight.answered = True
        except BrokerError as exc:
            flight.error = exc
            raise
        finally:
            self._ping = None
            flight.finish()

    async def _send_ping(self, client: GlideClient) -> None:
        glide = glide_module()
        try:
            await client.custom_command(["PING"])
        except glide.GlideError as exc:
            self.contact(ok=False)
            raise BrokerError(self._options.description, f"{type(exc).__name__}: {exc}") from exc
        self.contact(ok=True)

    def contact(self, *, ok: bool) -> None:
        """Note the latest contact with the engine: a failure counts until a later success, or
        until the feed has connected again since."""
        feed = self.feed
        self._failed_at = None if ok else (feed.connections if feed is not None else 0)

    def answering(self) -> bool:
        """Whether the engine answers: the feed is connected, and no contact failed since it connected."""
        feed, failed_at = self.feed, self._failed_at
        return feed is not None and feed.connected and (failed_at is None or feed.connections > failed_at)
