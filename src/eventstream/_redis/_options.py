"""A :class:`~eventstream.RedisBroker`'s options, checked once, and the parts built from them.

:class:`RedisOptions` is the broker's frozen, validated configuration: where
the engine is, the key prefix, the history limits and the timings. From it
come the names of the broker's keys and feed channels, and the parts the
broker runs: its batch sender, its presence keeper, its copy of the history
and its connections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._base import check_count, check_seconds
from ._connect import cluster_configuration, connect, glide_configuration
from ._endpoint import feed_endpoint
from ._feedconn import FeedConnection
from ._history import SharedHistory
from ._interest import FeedInterest
from ._layout import ClusterLayout, EngineLayout
from ._presence import PresenceKeeper
from ._publish import BatchSender
from ._reader import EngineReader
from ._shardfeed import ShardedFeed
from ._slots import SlotMap
from ._url import RedisAddress

if TYPE_CHECKING:
    from glide import GlideClient, GlideClientConfiguration

    from ._feed import FeedInbox

__all__ = ["RedisOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisOptions:
    """The options of a :class:`~eventstream.RedisBroker` (see it for each), checked when built.

    Raises:
        ValueError: a limit is out of range, ``key_prefix`` holds ``|`` or a
            glob character, or ``heartbeat_expiry`` is less than twice
            ``heartbeat_interval``.
    """

    address: RedisAddress | None
    configuration: GlideClientConfiguration | None
    key_prefix: str
    max_events: int
    max_bytes: int
    max_age: float
    request_timeout: float
    publish_timeout: float
    check_interval: float
    allow_eviction: bool
    heartbeat_interval: float
    heartbeat_expiry: float
    feed_linger: float
    feed_channels_max: int | None
    wait_replicas: int = 0

    def __post_init__(self) -> None:
        key_prefix = self.key_prefix
        if not isinstance(key_prefix, str) or any(c in key_prefix for c in "|*?[]\\"):
            raise ValueError(
                f"key_prefix must be a str without '|' (it ends the prefix in every key) "
                f"or glob characters, not {key_prefix!r}"
            )
        check_count("max_events", self.max_events)
        check_count("max_bytes", self.max_bytes)
        for name in (
            "max_age",
            "request_timeout",
            "publish_timeout",
            "check_interval",
            "heartbeat_interval",
            "heartbeat_expiry",
        ):
            check_seconds(name, getattr(self, name))
        check_seconds("feed_linger", self.feed_linger, allow_zero=True)
        check_count("feed_channels_max", self.feed_channels_max, low=2, allow_none=True)
        check_count("wait_replicas", self.wait_replicas, low=0)
        if self.heartbeat_expiry < 2 * self.heartbeat_interval:
            raise ValueError(
                f"heartbeat_expiry ({self.heartbeat_expiry!r}) must be at least twice heartbeat_interval "
                f"({self.heartbeat_interval!r}): a live process would drop out between two beats"
            )

    @property
    def description(self) -> str:
        """The engine's URL without credentials, for messages and logs."""
        if self.address is not None:
            return self.address.display
        assert self.configuration is not None
        hosts = ", ".join(f"{a.host}:{a.port}" for a in self.configuration.addresses)
        return f"{'rediss' if self.configuration.use_tls else 'redis'}://{hosts}"

    @property
    def cluster(self) -> bool:
        """Whether the engine is a cluster (a ``redis+cluster://`` URL)."""
        return self.address is not None and self.address.cluster

    @property
    def layout(self) -> EngineLayout:
        """The names of the broker's keys and feed channels on this engine."""
        if self.cluster:
            return ClusterLayout(self.key_prefix)
        database = self.address.database if self.address is not None else None
        if self.configuration is not None:
            database = self.configuration.database_id
        # (pub/sub is server-wide: the feed channels name the database)
        return EngineLayout(self.key_prefix, database or 0)

    @property
    def request_seconds(self) -> float:
        """Seconds one request may take (the configuration's, when it sets one)."""
        configuration = self.configuration
        if configuration is not None and configuration.request_timeout:
            return float(configuration.request_timeout) / 1000
        return self.request_timeout

    def sender(self) -> BatchSender:
        """The sender of publish batches, with these limits."""
        return BatchSender(
            engine=self.description,
            layout=self.layout,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            max_age=self.max_age,
            request_timeout=self.request_seconds,
            publish_timeout=self.publish_timeout,
            wait_replicas=self.wait_replicas,
        )

    def keeper(self) -> PresenceKeeper:
        """The keeper of this process's counts and presence in the engine, with these timings."""
        return PresenceKeeper(
            base=self.layout.presence_base,
            engine=self.description,
            interval=self.heartbeat_interval,
            expiry=self.heartbeat_expiry,
            request_timeout=self.request_seconds,
        )

    def history(self, epoch: str) -> SharedHistory:
        """This process's copy of the history of the channels it follows, with these limits."""
        return SharedHistory(
            epoch, max_events=self.max_events, max_bytes=self.max_bytes, max_age=self.max_age
        )

    def interest(self) -> FeedInterest:
        """The feed's subscriptions."""
        # (sharded pub/sub has no patterns: a cluster's feed is never whole)
        return FeedInterest(
            layout=self.layout,
            engine=self.description,
            whole_above=None if self.cluster else self.feed_channels_max,
        )

    def reader(self, client: GlideClient, *, publishing: Callable[[], int], slots: SlotMap) -> EngineReader:
        """The reader of the engine's feed and history through ``client``, at this check interval.

        ``publishing`` tells how many publishes are waiting for the engine; ``slots`` is a
        cluster's slot map (the publishes').
        """
        return EngineReader(
            client,
            layout=self.layout,
            engine=self.description,
            check_interval=self.check_interval,
            publishing=publishing,
            slots=slots,
        )

    async def connect(self) -> GlideClient:
        """A client of the engine for commands (valkey-glide).

        Raises:
            BrokerError: the engine cannot be reached within ``publish_timeout``.
        """
        if self.address is not None and self.address.cluster:
            cluster = cluster_configuration(self.address, request_timeout=self.request_timeout)
            return await connect(cluster, engine=self.description, within=self.publish_timeout)
        config = glide_configuration(self.address, self.configuration, request_timeout=self.request_timeout)
        return await connect(config, engine=self.description, within=self.publish_timeout)

    def feed(self, inbox: FeedInbox) -> FeedConnection | ShardedFeed:
        """The feed's connection (not connected yet), whose messages go to ``inbox``: its own on one
        engine, valkey-glide's sharded subscriptions on a cluster."""
        if self.address is not None and self.address.cluster:
            return ShardedFeed(
                self.address, inbox, engine=self.description, request_timeout=self.request_seconds
            )
        endpoint = feed_endpoint(self.address, self.configuration)
        return FeedConnection(endpoint, inbox, engine=self.description, request_timeout=self.request_seconds)
