"""Server-Sent Events for ASGI, on anyio: channels, backpressure, asyncio and trio.

The public API is re-exported here; the modules behind it are private.
"""

import logging as _logging

from ._base import BrokerError, EventStreamError, GripPublishError, SubscribeLimits
from ._core import Broker, EventStreamStatistics, HistoryEntry, HistoryStore, MemoryHistory, PresenceMember
from ._grip import GripProxyStatistics, GripPublisher, parse_grip_uri
from ._observe._broker import BrokerStatistics
from ._observe._lag import SubscriberLag
from ._redis import RedisBroker
from ._serve import HealthEndpoint, Readiness
from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder, encode
from ._stream import (
    ChannelPublisher,
    ChannelWriter,
    EventStream,
    EventStreamEndpoint,
    Publisher,
    get_event_stream_singleton,
)

__all__ = [
    "NEED_DATA",
    "Broker",
    "BrokerError",
    "ChannelPublisher",
    "ChannelWriter",
    "EventStream",
    "EventStreamEndpoint",
    "EventStreamError",
    "BrokerStatistics",
    "EventStreamStatistics",
    "GripProxyStatistics",
    "GripPublishError",
    "GripPublisher",
    "HealthEndpoint",
    "HistoryEntry",
    "HistoryStore",
    "MemoryHistory",
    "PresenceMember",
    "Publisher",
    "Readiness",
    "RedisBroker",
    "SSEDecoder",
    "ServerSentEvent",
    "SubscribeLimits",
    "SubscriberLag",
    "encode",
    "get_event_stream_singleton",
    "parse_grip_uri",
]

__version__ = "0.2.0"

# A library's logger: the application decides where its lines go (logging's HOWTO).
_logging.getLogger("eventstream").addHandler(_logging.NullHandler())
