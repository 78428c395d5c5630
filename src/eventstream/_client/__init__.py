"""The client, :class:`EventSource`: reconnection and resuming (``_source``), one request and its
checks (``_http``), bounded decompression (``_body``). Public as ``eventstream.client``."""

from ._http import EventSourceError
from ._source import DEFAULT_RECONNECT_DELAY, EventSource

__all__ = ["DEFAULT_RECONNECT_DELAY", "EventSource", "EventSourceError"]
