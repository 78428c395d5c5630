"""A resuming Server-Sent Events client for Python: :class:`EventSource`.

It behaves like the browser's ``EventSource`` (the WHATWG rules), on anyio
(asyncio or trio) and httpx, and decodes with this library's own
:class:`~eventstream.SSEDecoder`::

    from eventstream.client import EventSource

    async with EventSource("https://example.com/api/events/7") as source:
        async for event in source:      # ServerSentEvent: .event, .id, .data / .json()
            ...

When the connection fails or the response ends, it waits the server's
``retry`` (3 s until the server names one, as Chromium; backing off with
jitter while attempts keep failing or responses keep ending at once) and
reconnects with ``Last-Event-ID``, so
a server that keeps history (as eventstream does) sends what was missed. It
stops with :class:`EventSourceError` when the server answers anything but
``200`` with ``Content-Type: text/event-stream`` (``204 No Content`` is how a
server says "stop reconnecting").
"""

from __future__ import annotations

from ._client import DEFAULT_RECONNECT_DELAY as DEFAULT_RECONNECT_DELAY
from ._client import EventSource, EventSourceError
from ._sse import ServerSentEvent

__all__ = ["EventSource", "EventSourceError", "ServerSentEvent"]
