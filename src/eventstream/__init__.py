"""Server-Sent Events for ASGI, on anyio: channels, backpressure, asyncio and trio.

The public API is re-exported here; the modules behind it are private.
"""

import logging as _logging

from ._broker import Broker
from ._exceptions import BrokerError, EventStreamError, GripPublishError
from ._grip import GripProxyStatistics, GripPublisher, parse_grip_uri
from ._history import HistoryEntry, HistoryStore, MemoryHistory
from ._observe._lag import SubscriberLag
from ._publisher import Publisher
from ._redis import RedisBroker
from ._serve import HealthEndpoint, Readiness
from ._singleton import get_event_stream_singleton
from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder, encode
from ._stream import EventStream, EventStreamEndpoint
from ._subscriber import EventStreamStatistics
from ._writer import ChannelPublisher, ChannelWriter

__all__ = [
    "NEED_DATA",
    "Broker",
    "BrokerError",
    "ChannelPublisher",
    "ChannelWriter",
    "EventStream",
    "EventStreamEndpoint",
    "EventStreamError",
    "EventStreamStatistics",
    "GripProxyStatistics",
    "GripPublishError",
    "GripPublisher",
    "HealthEndpoint",
    "HistoryEntry",
    "HistoryStore",
    "MemoryHistory",
    "Publisher",
    "Readiness",
    "RedisBroker",
    "SSEDecoder",
    "ServerSentEvent",
    "SubscriberLag",
    "encode",
    "get_event_stream_singleton",
    "parse_grip_uri",
]

__version__ = "0.2.0"

# A library's logger: the application decides where its lines go (logging's HOWTO).
_logging.getLogger("eventstream").addHandler(_logging.NullHandler())
