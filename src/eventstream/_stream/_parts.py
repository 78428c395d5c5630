"""What :class:`~eventstream.EventStream`'s methods do, on its parts (a :class:`Serving`).

:func:`assemble` builds the parts from the frozen options; the others are the
bodies of the state queries. The stream's methods keep the public
documentation and delegate here; ``publish_event``, the hot path, keeps its
body (a delegating call would cost every publish a coroutine more).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

from .._base import AddressLimiter
from .._core import EventStreamStatistics, Hub, PresenceMember, PresenceTable, presence_selection
from .._lifecycle import Lifecycle, LoopBinding
from .._observe import Observed
from .._options import StreamOptions, make_broker, make_grip
from .._serve import Serving, announce_members, check_channel_name

__all__ = ["assemble", "channel_names", "count_all", "presence", "statistics"]


def assemble(options: StreamOptions) -> Serving:
    """The parts of a stream built from ``options``: hub, broker, GRIP publisher, lifecycle, counters.

    Raises:
        ValueError: a GRIP configuration is malformed, or ``slow_consumer="block"``
            was given with a broker whose feed serves every channel at once.
        TypeError, ImportError: as :func:`make_broker`.
        TypeError, ValueError: ``presence`` is malformed (see :func:`presence_selection`).
    """
    hub = Hub(
        buffer_size=options.buffer_size, send_timeout=options.send_timeout, policy=options.slow_consumer
    )
    broker = make_broker(options.broker, options.history)
    if options.slow_consumer == "block" and not broker.blocks_per_channel:
        # The broker's feed delivers every channel in one task: a client
        # that stopped reading would stall every channel, not its own.
        raise ValueError(
            'slow_consumer="block" cannot be used with a broker: one stalled client would stall '
            'the delivery of every channel; use "disconnect" or "drop-oldest"'
        )
    loop = LoopBinding()  # the thread and event loop that serve the connections (publishes run there)
    grip = make_grip(options.grip)
    broker.bind(hub)
    limits = options.subscribe_limits
    presence = PresenceTable(presence_selection(options.presence)) if options.presence else None
    if presence is not None:
        broker.bind_presence(presence)  # a shared broker keeps this process's part in its engine
    serving = Serving(
        hub,
        broker,
        grip,
        loop,
        Lifecycle(hub, broker, grip, loop, options),
        options,
        Observed(),  # metrics: counters that eventstream.prometheus reads
        AddressLimiter(limits) if limits is not None else None,  # limits
        presence,
    )
    if presence is not None:  # presence: a shared broker's beat announces the members of dead processes
        presence.announcer = functools.partial(announce_members, serving)
    return serving


def channel_names(channels: str | Iterable[str]) -> tuple[str, ...]:
    """``channels`` as a tuple of names (not yet checked).

    Raises:
        TypeError: ``channels`` is neither a str nor an iterable of str.
    """
    if isinstance(channels, str):
        return (channels,)
    if isinstance(channels, Iterable) and not isinstance(channels, bytes | bytearray | memoryview):
        return tuple(channels)
    raise TypeError(f"channels must be a channel name or an iterable of names, not {channels!r}")


def statistics(parts: Serving) -> EventStreamStatistics:
    """The body of :meth:`EventStream.statistics`."""
    stats = parts.hub.statistics()
    if parts.grip is not None:
        opened = sum(counters.grip_opened for counters in list(parts.observed.templates.values()))
        stats = dataclasses.replace(stats, grip=parts.grip.statistics(), grip_streams_opened=opened)
    broker = parts.broker.statistics()
    if broker is not None:
        stats = dataclasses.replace(stats, broker=broker)
    return stats


def engine_up(parts: Serving) -> bool:
    """Whether a shared broker runs and its engine answers (its own account, else the latest contact's)."""
    if not parts.lifecycle.broker_started:
        return False
    feed = parts.broker.statistics()
    if feed is None:
        return parts.observed.engine_up is not False
    return feed.engine_answering


async def count_all(parts: Serving, channel: str | None) -> int:
    """The body of :meth:`EventStream.subscriber_count_all` (see it for errors)."""
    if channel is not None:
        check_channel_name(channel, parts.options.max_channel_name_length)
    return await parts.broker.subscriber_count_all(channel, parts.hub.subscriber_count(channel))


async def presence(parts: Serving, channel: str) -> list[PresenceMember]:
    """The body of :meth:`EventStream.presence` (see it for errors)."""
    table = parts.presence
    if table is None:
        raise RuntimeError("presence is not kept: build the EventStream with presence=True")
    check_channel_name(channel, parts.options.max_channel_name_length)
    if not table.keeps(channel):
        raise ValueError(f"the presence of channel {channel!r} is not kept (see the presence argument)")
    return await parts.broker.presence(channel, table.members(channel))
