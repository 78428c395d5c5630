"""Turning :class:`~eventstream.EventStream`'s arguments into checked values.

:class:`StreamOptions` is the one frozen, validated configuration a stream is
built from (the one place its options are checked, but for the hub's own:
``buffer_size``, ``send_timeout``, ``slow_consumer``). Beside it: the
sentinels that stand for "not given" in signatures, the coercion of an
event-like value into a :class:`ServerSentEvent`, and the choice of a broker
and of a GRIP publisher (numbers are checked by :mod:`eventstream._base`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._base import SubscribeLimits, check_count, check_seconds
from ._core import Broker, HistoryStore, LocalBroker, MemoryHistory, SlowConsumerPolicy
from ._grip import GripPublisher
from ._sse import ServerSentEvent, stream_open
from .types import Authorize, EventLike

__all__ = [
    "DEFAULT_HISTORY",
    "STREAM_RETRY",
    "UNSAFE_GRIP_ID",
    "GripConfig",
    "StreamOptions",
    "as_event",
    "make_broker",
    "make_grip",
]

GripConfig = str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]] | GripPublisher


class _Default(enum.Enum):
    # Stands for "not given" in signatures, and reads well in help().
    DEFAULT_HISTORY = "MemoryHistory()"
    STREAM_RETRY = "the stream's retry"

    def __repr__(self) -> str:
        return f"<{self.value}>"


DEFAULT_HISTORY: Any = _Default.DEFAULT_HISTORY
STREAM_RETRY: Any = _Default.STREAM_RETRY
#: What an event id may not contain with GRIP (it would end the item's id or a header value).
UNSAFE_GRIP_ID = re.compile(r'[\s,;"]')


def as_event(event: EventLike) -> ServerSentEvent:
    """``event`` itself, or the event built from a mapping of its fields.

    Raises:
        TypeError: ``event`` is neither, or a field has the wrong type.
        ValueError: a field is invalid (see :class:`ServerSentEvent`).
    """
    if isinstance(event, ServerSentEvent):
        return event
    if isinstance(event, Mapping):
        return ServerSentEvent(**event)
    raise TypeError(f"expected a ServerSentEvent or a mapping of its fields, not {type(event).__name__}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions:
    """The options of an :class:`~eventstream.EventStream` (see it for each), checked once, when built.

    ``shutdown_event`` is kept as a :class:`ServerSentEvent`; ``grip``,
    ``history`` and ``broker`` as given (the stream builds its GRIP publisher
    and its broker from them).

    Raises:
        ValueError: an option is out of range, or ``grip_reliable`` was
            given without ``grip`` or without history.
        TypeError: ``grip_prefix`` is not a str, ``subscribe_limits`` not a
            :class:`~eventstream.SubscribeLimits`, or ``shutdown_event`` is
            not an event (ValueError: an invalid one).
    """

    buffer_size: int = 256
    send_timeout: float = 5.0
    keep_alive_interval: float | None = 20.0
    max_channels: int = 32
    max_channel_name_length: int = 256
    grip: GripConfig | None = None
    grip_prefix: str = "events-"
    grip_reliable: bool = False
    history: HistoryStore | None = DEFAULT_HISTORY
    slow_consumer: SlowConsumerPolicy = "disconnect"
    retry: int | None = None
    authorize: Authorize | None = None
    max_subscribers: int | None = None
    subscribe_limits: SubscribeLimits | None = None  # limits: per client address
    presence: bool | Collection[str] = False  # presence: streams' identities per channel
    shutdown_event: EventLike | None = None
    shutdown_grace: float = 2.0
    handle_signals: bool = True
    broker: str | Broker | None = None

    def __post_init__(self) -> None:
        check_seconds("keep_alive_interval", self.keep_alive_interval, allow_none=True)
        check_count("max_channels", self.max_channels)
        check_count("max_channel_name_length", self.max_channel_name_length)
        if self.retry is not None:
            stream_open(self.retry)  # ValueError: not a reconnection delay
        check_count("max_subscribers", self.max_subscribers, allow_none=True)
        limits = self.subscribe_limits
        if limits is not None and not isinstance(limits, SubscribeLimits):
            raise TypeError(
                f"subscribe_limits must be a SubscribeLimits or None, not {type(limits).__name__}"
            )
        check_seconds("shutdown_grace", self.shutdown_grace, allow_zero=True)
        if not isinstance(self.grip_prefix, str):
            raise TypeError(f"grip_prefix must be a str, not {type(self.grip_prefix).__name__}")
        if self.grip_reliable and (self.grip is None or self.history is None):
            raise ValueError("grip_reliable needs grip and a history store")
        if self.shutdown_event is not None:
            object.__setattr__(self, "shutdown_event", as_event(self.shutdown_event))

    @property
    def closing_event(self) -> ServerSentEvent | None:
        """``shutdown_event``, made a :class:`ServerSentEvent` when the options were built."""
        event = self.shutdown_event
        assert event is None or isinstance(event, ServerSentEvent)
        return event


def make_grip(grip: GripConfig | None) -> GripPublisher | None:
    """The GRIP publisher for ``grip`` (built from a configuration, or the one given).

    Raises:
        ValueError: a GRIP configuration is malformed.
    """
    if grip is None:
        return None
    return grip if isinstance(grip, GripPublisher) else GripPublisher(grip)


def make_broker(broker: str | Broker | None, history: HistoryStore | None = DEFAULT_HISTORY) -> Broker:
    """The broker of an event stream.

    ``None`` gives the in-process broker, keeping events in ``history`` (a
    :class:`MemoryHistory` when not given); a URL gives a
    :class:`RedisBroker`; a :class:`Broker` is used as it is (``history``
    must not be given then: the broker keeps the history).

    Raises:
        ValueError: the URL is malformed, or ``history`` was given with a broker.
        TypeError: ``broker`` is neither ``None``, a str nor a :class:`Broker`.
        ImportError: a URL was given and valkey-glide is not installed.
    """
    if broker is None:
        return LocalBroker(MemoryHistory() if history is DEFAULT_HISTORY else history)
    if isinstance(broker, str):
        from ._redis import RedisBroker

        broker = RedisBroker(broker)  # ValueError: a malformed URL
    elif not isinstance(broker, Broker):
        raise TypeError(f"broker must be a redis:// URL or a Broker, not {type(broker).__name__}")
    if history is not DEFAULT_HISTORY:
        raise ValueError("with a broker, history is kept by the broker: set its limits there")
    return broker
