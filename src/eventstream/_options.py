"""Turning :class:`~eventstream.EventStream`'s arguments into checked values.

The sentinels that stand for "not given" in signatures, the coercion of an
event-like value into a :class:`ServerSentEvent`, the choice of a broker and
of a GRIP publisher, and the range checks of the plain options.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ._broker import Broker, LocalBroker
from ._grip import GripPublisher
from ._history import HistoryStore, MemoryHistory
from ._sse import ServerSentEvent
from .types import EventLike

__all__ = [
    "DEFAULT_HISTORY",
    "STREAM_RETRY",
    "UNSAFE_GRIP_ID",
    "GripConfig",
    "as_event",
    "check_options",
    "check_shutdown_grace",
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


def check_options(
    *,
    keep_alive_interval: float | None,
    max_channels: int,
    max_channel_name_length: int,
    retry: int | None,
    max_subscribers: int | None,
) -> None:
    """Check the plain options of an event stream.

    Raises:
        ValueError: an option is out of range.
    """
    if keep_alive_interval is not None and (not keep_alive_interval > 0 or math.isinf(keep_alive_interval)):
        raise ValueError(
            f"keep_alive_interval must be a positive number of seconds or None, not {keep_alive_interval!r}"
        )
    for name, value in (("max_channels", max_channels), ("max_channel_name_length", max_channel_name_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, not {value!r}")
    if retry is not None:
        ServerSentEvent(retry=retry)  # validates
    if max_subscribers is not None and max_subscribers < 1:
        raise ValueError(f"max_subscribers must be >= 1 or None, not {max_subscribers!r}")


def check_shutdown_grace(shutdown_grace: float) -> float:
    """``shutdown_grace``, checked.

    Raises:
        ValueError: it is negative, infinite or not a number.
    """
    if not shutdown_grace >= 0 or math.isinf(shutdown_grace):
        raise ValueError(f"shutdown_grace must be a number of seconds >= 0, not {shutdown_grace!r}")
    return shutdown_grace


def make_grip(grip: GripConfig | None, grip_prefix: str) -> GripPublisher | None:
    """The GRIP publisher for ``grip`` (built from a configuration, or the one given).

    Raises:
        ValueError: a GRIP configuration is malformed.
        TypeError: ``grip_prefix`` is not a str.
    """
    publisher = None
    if grip is not None:
        publisher = grip if isinstance(grip, GripPublisher) else GripPublisher(grip)
    if not isinstance(grip_prefix, str):
        raise TypeError(f"grip_prefix must be a str, not {type(grip_prefix).__name__}")
    return publisher


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
