"""The facade: :class:`EventStream`, its channel handles, the sync publisher, the singleton."""

from ._parts import engine_up
from ._publisher import Publisher
from ._singleton import get_event_stream_singleton
from ._stream import EventStream, EventStreamEndpoint, parts_of
from ._writer import ChannelPublisher, ChannelWriter

__all__ = [
    "ChannelPublisher",
    "ChannelWriter",
    "EventStream",
    "EventStreamEndpoint",
    "Publisher",
    "get_event_stream_singleton",
    "engine_up",
    "parts_of",
]
