"""What a shared broker counts about its feed, read when statistics are asked for."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BrokerStatistics"]


@dataclass(frozen=True)
class BrokerStatistics:
    """A shared broker's counters in this process (see :meth:`~eventstream.EventStream.statistics`).

    A :class:`~eventstream.RedisBroker` takes in the engine's feed of the
    channels this process serves only; these tell how much that is.
    """

    #: Channels whose feed this process takes in now: those with local
    #: subscribers, and those left without for less than ``feed_linger``.
    feed_channels: int
    #: Feed messages taken in since the broker started (one per event of those channels).
    feed_messages: int
    #: Feed messages dropped because this process fell too far behind (their
    #: events were read from the engine's history instead).
    feed_dropped: int
    #: Feed messages ignored without being checked against the engine: more than 20 a
    #: second came that it would have had to confirm (of another epoch, far ahead, or told
    #: otherwise: messages the publish script did not send, or many gaps at once); the
    #: periodic check finds any event they stood for.
    feed_unchecked: int
    #: Events delivered from reads of the engine's history: gaps in the feed
    #: filled, and channels caught up on before a connection subscribed.
    events_filled: int
    #: Subscribe and unsubscribe requests sent for the feed (each for one or many channels).
    feed_requests: int
    #: Whether the feed's connection is up now (it is made again, with backoff, when
    #: lost; an idle one is pinged, so a silent engine shows within seconds).
    feed_connected: bool
    #: Whether the engine answers: the feed is connected, and the latest contact (a
    #: publish, a readiness check) succeeded or the feed connected again since it failed.
    engine_answering: bool
    #: Whether the whole feed comes through one pattern now (past ``feed_channels_max``
    #: channels followed), rather than one subscription per channel.
    feed_whole: bool
