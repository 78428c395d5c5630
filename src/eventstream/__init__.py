"""Server-Sent Events for ASGI, on anyio: channels, backpressure, asyncio and trio.

The public API is re-exported here; the modules behind it are private.
"""

from ._hub import EventStreamStatistics
from ._singleton import get_event_stream_singleton
from ._sse import NEED_DATA, ServerSentEvent, SSEDecoder, encode
from ._stream import EventStream, EventStreamEndpoint
from ._writer import ChannelPublisher, ChannelWriter

__all__ = [
    "NEED_DATA",
    "ChannelPublisher",
    "ChannelWriter",
    "EventStream",
    "EventStreamEndpoint",
    "EventStreamStatistics",
    "SSEDecoder",
    "ServerSentEvent",
    "encode",
    "get_event_stream_singleton",
]

__version__ = "0.1.0"
