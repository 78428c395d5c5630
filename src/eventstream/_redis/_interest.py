"""Which channels' feeds this process takes in: one pub/sub subscription per channel it follows.

A process subscribes to a channel's feed before it first reads the channel's
history (so every event after that read comes through the feed, and the
events before it are in what it read), and unsubscribes once the channel has
had no local subscriber for ``linger`` seconds (so a channel whose only
client reconnects, or flaps, costs no subscribe and no read). A process with
no subscribers takes in no feed messages.

A process that follows very many channels (past ``feed_channels_max``, as a
flood of streams on new channels makes it) takes the whole feed through one
pattern subscription instead, as a subscription each would cost it more than
reading other channels' traffic; once it follows fewer than half as many, it
subscribes to each again and gives the pattern up. Both cover every channel
followed in between, so nothing falls between them (an event that comes
twice meanwhile is taken once, by its sequence number).

Subscribing and unsubscribing go one request at a time, in order, on the
feed's client, so a channel dropped and followed again right after is
subscribed in the end. A channel counts as subscribed once the engine
confirmed it, and stops counting the moment it is dropped (before the engine
confirms that): a connection that asks for it meanwhile subscribes again,
after the unsubscribe.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

import anyio

from .._base import BrokerError
from ._feedconn import FeedConnection

if TYPE_CHECKING:
    from ._layout import EngineLayout
    from ._shardfeed import ShardedFeed

__all__ = ["FeedInterest"]

logger = logging.getLogger("eventstream")


class FeedInterest:
    """The feed connection's subscriptions: the pub/sub channel of each channel followed.

    Args:
        layout: The names of the feed channels.
        engine: The engine's description (for errors).
        whole_above: Past this many channels followed, the whole feed is taken through
            one pattern instead (until they are fewer than half as many); None: never.
    """

    __slots__ = (
        "_connection", "_engine", "_feed", "_lock", "_pattern", "_whole_above",
        "requests", "subscribed", "whole",
    )  # fmt: skip

    def __init__(self, *, layout: EngineLayout, engine: str, whole_above: int | None) -> None:
        self._feed = layout.feed
        self._engine = engine
        self._whole_above = whole_above
        self._pattern = layout.pattern
        #: Whether the whole feed comes through the pattern now (every channel is covered).
        self.whole = False
        self._connection: FeedConnection | ShardedFeed | None = None
        #: Serialises the requests: a channel's subscribe and unsubscribe reach the engine in order.
        self._lock = anyio.Lock(fast_acquire=True)
        #: Channels whose feed the engine confirmed and that were not dropped since (a dict
        #: of None: see ``EngineFollower.loaded``).
        self.subscribed: dict[str, None] = {}
        #: Subscribe and unsubscribe requests sent so far (each for one or many channels).
        self.requests = 0

    def bind(self, connection: FeedConnection | ShardedFeed | None) -> None:
        """Send the requests through ``connection`` (the feed's), or through none (stopped)."""
        self._connection = connection

    def _names(self, channels: Collection[str]) -> list[bytes]:
        feed = self._feed
        return [feed(channel) for channel in channels]

    async def follow(self, channels: Collection[str]) -> None:
        """Subscribe to the feed of each of ``channels`` not subscribed yet; return once the engine confirmed.

        Channels asked for at once go in one request.

        Raises:
            BrokerError: the engine refused, or did not confirm within the request
                timeout, or the broker is not running (the channels stay unsubscribed).

        Cancellation: the request may or may not have been sent; the channels
        count as unsubscribed (a later call subscribes them again).
        """
        if all(channel in self.subscribed for channel in channels):
            return
        if self._covered(channels):  # no request (nor a wait for the lock)
            return
        async with self._lock:
            new = [channel for channel in channels if channel not in self.subscribed]
            if not new or self._covered(new):  # (the whole feed taken while this waited)
                return
            connection = self._connection
            if connection is None:
                raise BrokerError(self._engine, "not connected")
            names = self._names(new)
            self.requests += 1
            try:
                await connection.subscribe(names)
            except BaseException:
                # Not confirmed: given up (else the connection would make it again).
                with anyio.CancelScope(shield=True):
                    await connection.unsubscribe(names)
                raise
            self.subscribed.update(dict.fromkeys(new))
            above = self._whole_above
            if above is not None and len(self.subscribed) > above:
                await self._take_whole(connection)

    def _covered(self, channels: Collection[str]) -> bool:
        # Whether the whole feed comes through the pattern: then the channels count as
        # subscribed at once, without a request. Raises BrokerError: not connected.
        if not self.whole:
            return False
        if self._connection is None:
            raise BrokerError(self._engine, "not connected")
        self.subscribed.update(dict.fromkeys(channels))
        return True

    def drop(self, channels: Collection[str]) -> bool:
        """Stop counting ``channels`` as subscribed (call :meth:`unsubscribe` with them next).

        Returns whether any of them was subscribed.
        """
        subscribed = self.subscribed
        dropped = False
        for channel in channels:
            if channel in subscribed:
                del subscribed[channel]
                dropped = True
        return dropped

    async def unsubscribe(self, channels: Collection[str]) -> None:
        """Unsubscribe from the feed of ``channels`` (dropped with :meth:`drop` before).

        Channels followed again meanwhile are left subscribed. It does not
        wait for the engine's confirmation: a message of a channel no longer
        followed is ignored.

        Cancellation: the request may or may not have been sent.
        """
        async with self._lock:
            connection = self._connection
            if connection is None:
                return
            if self.whole:
                above = self._whole_above
                if above is not None and len(self.subscribed) < above // 2:
                    await self._take_share(connection)
                return
            gone = [channel for channel in channels if channel not in self.subscribed]
            if not gone:
                return
            self.requests += 1
            await connection.unsubscribe(self._names(gone))

    async def _take_whole(self, connection: FeedConnection | ShardedFeed) -> None:
        # Many channels followed: one pattern carries them all (and the others'
        # traffic), instead of a subscription each. Called with the lock held.
        self.requests += 1
        try:
            await connection.subscribe_pattern(self._pattern)
        except BrokerError as exc:
            logger.warning(
                "broker: %d channels followed, but the whole feed cannot be taken instead (%s); "
                "they stay subscribed one by one (an ACL user needs the channels %r for it)",
                len(self.subscribed), exc.reason, self._pattern.decode(),
            )  # fmt: skip
            self._whole_above = None  # (not asked again)
            return
        self.whole = True
        self.requests += 1
        # Only the one-engine connection takes a pattern (a cluster's refuses it, above), and only
        # it keeps the channels wanted as the names handed to it.
        assert isinstance(connection, FeedConnection)
        await connection.unsubscribe(list(connection.wanted))

    async def _take_share(self, connection: FeedConnection | ShardedFeed) -> None:
        # Few channels followed again: a subscription each, then the pattern given up.
        # Called with the lock held. Channels followed while the subscribe is in flight
        # are covered by the pattern without a request: they are subscribed after it,
        # before the pattern goes.
        covered = dict.fromkeys(self.subscribed)
        self.requests += 1
        try:
            await connection.subscribe(self._names(covered))
            self.whole = False  # from here, follow() subscribes under the lock
            late = [channel for channel in self.subscribed if channel not in covered]
            if late:
                self.requests += 1
                await connection.subscribe(self._names(late))
        except BrokerError as exc:
            self.whole = True
            logger.warning("broker: the feed stays whole for now: %s", exc.reason)
            return
        self.requests += 1
        await connection.unsubscribe_pattern()
