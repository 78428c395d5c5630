"""The feed on a Valkey/Redis Cluster: sharded pub/sub through valkey-glide's cluster client.

Each channel's pub/sub channel carries its hash tag (``_layout.py``), so a
message is published on the shard that owns the channel (``SPUBLISH``) and
reaches only the processes subscribed there (``SSUBSCRIBE``), never every
node. valkey-glide keeps one subscribing connection per shard, follows the
cluster's slot map, and makes the subscriptions again on a shard's new
primary after a failover or a slot's migration (it checks them every 0.1 s).

Sharded pub/sub delivers at most once: a message published while a shard
changes hands reaches nobody. Each entry's sequence number shows the gap to
the process, which reads the missing entries from the channel's history (as
it does for any cut feed), and the periodic check catches a channel that went
quiet right after.

Messages come through a callback that valkey-glide calls on the event loop's
thread; each goes to the inbox as it comes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import anyio

from .._base import BrokerError
from ._connect import cluster_configuration, connect, glide_module

if TYPE_CHECKING:
    from ._feed import FeedInbox
    from ._url import RedisAddress

__all__ = ["ShardedFeed"]

logger = logging.getLogger("eventstream")

#: Seconds between two looks at whether every channel wanted is subscribed on its shard (each
#: look copies the client's sets of subscriptions: not every second with many channels); while
#: some are missing, :data:`_LOOK_AGAIN`.
_LOOK_EVERY = 5.0
_LOOK_AGAIN = 1.0


class ShardedFeed:
    """The feed's sharded subscriptions on a cluster; run :meth:`run` in a task group after :meth:`connect`.

    It offers what :class:`~eventstream._redis._interest.FeedInterest` asks of
    the one-engine feed connection, but patterns: sharded pub/sub has none.

    Args:
        address: The cluster's seed nodes and login.
        inbox: Where each message goes, as ``(channel, data)``.
        engine: The cluster's description (for errors and logs).
        request_timeout: Seconds connecting and each subscribe may take.
    """

    def __init__(
        self, address: RedisAddress, inbox: FeedInbox, *, engine: str, request_timeout: float
    ) -> None:
        self._address = address
        self._inbox = inbox
        self._engine = engine
        self._timeout = request_timeout
        self._client: Any = None
        #: Channels to be subscribed (a dict of None: see ``FeedBook.wanted``).
        self.wanted: dict[bytes, None] = {}
        #: Connections made so far: 1 once connected (valkey-glide makes its own again).
        self.connections = 0
        #: The same, as text (the client's subscriptions are text).
        self._wanted_text: set[str] = set()
        #: Whether, at the last look, every channel wanted was subscribed on its shard.
        self._complete = True

    @property
    def connected(self) -> bool:
        """Whether the client runs and, at the last look, held every subscription wanted."""
        return self._client is not None and self._complete

    def _deliver(self, message: Any, _context: Any) -> None:
        channel, data = message.channel, message.message
        self._inbox.push(
            (
                channel.encode() if isinstance(channel, str) else bytes(channel),
                data.encode() if isinstance(data, str) else bytes(data),
            )
        )

    async def connect(self, within: float) -> None:
        """Connect to the cluster (its slot map, and a subscribing connection per shard).

        Raises:
            BrokerError: the cluster could not be reached within ``within`` seconds, or
                refused the login.
        """
        config = cluster_configuration(self._address, request_timeout=self._timeout, on_message=self._deliver)
        self._client = await connect(config, engine=self._engine, within=within)
        self.connections += 1

    async def aclose(self) -> None:
        """Close the client (:meth:`run` must have stopped)."""
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True):
                await client.close()

    async def run(self) -> None:
        """Look every few seconds whether every channel wanted is subscribed on its shard, until cancelled.

        valkey-glide makes lost subscriptions again by itself; the look only
        tells :attr:`connected` (for the readiness check and the metrics).
        """
        glide = glide_module()
        while True:
            await anyio.sleep(_LOOK_EVERY if self._complete else _LOOK_AGAIN)
            client = self._client
            if client is None:
                continue
            try:
                state = await client.get_subscriptions()
            except glide.GlideError as exc:
                self._note(complete=False, why=f"{type(exc).__name__}: {exc}")
                continue
            sharded = glide.GlideClusterClientConfiguration.PubSubChannelModes.Sharded
            actual = state.actual_subscriptions.get(sharded, set())
            missing = len(self._wanted_text - actual)  # (a set difference, at C speed)
            self._note(complete=not missing, why=f"{missing} channels not subscribed on their shard yet")

    def _note(self, *, complete: bool, why: str) -> None:
        if complete != self._complete:
            if complete:
                logger.warning("broker: the feed holds every subscription again on %s", self._engine)
            else:
                logger.warning("broker: the feed on %s is incomplete (%s)", self._engine, why)
        self._complete = complete

    async def subscribe(self, channels: Collection[bytes]) -> None:
        """Subscribe to ``channels`` on their shards; return once every shard confirmed.

        Raises:
            BrokerError: a shard refused (an ACL), or did not confirm within the
                request timeout, or the feed is closed (the channels stay wanted:
                call :meth:`unsubscribe` to give them up).
        """
        client = self._client
        if client is None:
            raise BrokerError(self._engine, "not connected")
        new = [channel for channel in channels if channel not in self.wanted]
        self.wanted.update(dict.fromkeys(new))
        if not new:
            return
        names = {name.decode() for name in new}
        self._wanted_text |= names
        glide = glide_module()
        try:
            await client.ssubscribe(names, timeout_ms=round(self._timeout * 1000))
        except glide.GlideError as exc:
            raise BrokerError(
                self._engine, f"the feed's subscribe failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def unsubscribe(self, channels: Collection[bytes]) -> None:
        """Give up ``channels`` (not waiting for the shards' confirmation).

        Cancellation: the request may or may not have been sent.
        """
        gone = [channel for channel in channels if channel in self.wanted]
        for channel in gone:
            del self.wanted[channel]
        names = {name.decode() for name in gone}
        self._wanted_text -= names
        client = self._client
        if client is None or not gone:
            return
        glide = glide_module()
        try:
            await client.sunsubscribe_lazy(names)
        except glide.GlideError as exc:
            logger.warning("broker: the feed's unsubscribe failed: %s: %s", type(exc).__name__, exc)

    async def subscribe_pattern(self, pattern: bytes) -> None:
        """Refused: sharded pub/sub has no patterns (the broker never asks on a cluster).

        Raises:
            BrokerError: always.
        """
        raise BrokerError(self._engine, f"sharded pub/sub has no patterns ({pattern!r})")

    async def unsubscribe_pattern(self) -> None:
        """Nothing to give up: no pattern is ever subscribed."""

    def __repr__(self) -> str:
        return f"ShardedFeed({self._engine!r}, {len(self.wanted)} channels)"
