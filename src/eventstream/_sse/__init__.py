"""The Server-Sent Events wire format, sans I/O.

This package turns :class:`ServerSentEvent` objects into bytes and bytes back
into events. It performs no I/O and imports no concurrency library, so it can
be used by any client or server, and tested one byte at a time.

Encoding::

    >>> encode(ServerSentEvent(event="message", data={"name": "John"}))
    b'event: message\\ndata: {"name":"John"}\\n\\n'

Decoding follows the WHATWG HTML "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html)::

    decoder = SSEDecoder()
    decoder.feed(chunk)
    while (event := decoder.next_event()) is not NEED_DATA:
        ...
"""

from ._control import KEEP_ALIVE, STREAM_ERROR, STREAM_EXPIRED, STREAM_RESET, stream_open, stream_reset
from ._decoder import NEED_DATA, SSEDecoder
from ._event import MAX_RETRY, ServerSentEvent, encode, header_problem, with_id

__all__ = [
    "KEEP_ALIVE",
    "MAX_RETRY",
    "NEED_DATA",
    "STREAM_ERROR",
    "STREAM_EXPIRED",
    "STREAM_RESET",
    "SSEDecoder",
    "ServerSentEvent",
    "encode",
    "header_problem",
    "stream_open",
    "stream_reset",
    "with_id",
]
