"""Channel publishers and writers: handles that feed one channel."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Protocol

import anyio
import anyio.lowlevel
from anyio.abc import ObjectSendStream

from ..types import EventLike

__all__ = ["ChannelPublisher", "ChannelWriter", "EventSink"]


class EventSink(Protocol):
    """What publishers and writers feed: an :class:`~eventstream.EventStream`, for one."""

    async def publish_event(self, channel: str, event: EventLike) -> None:
        """Publish ``event`` to ``channel``; see :meth:`EventStream.publish_event`."""


class ChannelPublisher:
    """Publishes to one channel of an :class:`~eventstream.EventStream`.

    Get one with :meth:`EventStream.get_channel_publisher`.
    """

    __slots__ = ("_stream", "channel")

    def __init__(self, stream: EventSink, channel: str) -> None:
        self._stream = stream
        #: The channel this publisher feeds.
        self.channel: str = channel

    async def publish_event(self, event: EventLike) -> None:
        """Publish ``event`` to this channel; see :meth:`EventStream.publish_event`."""
        await self._stream.publish_event(self.channel, event)


class ChannelWriter(ObjectSendStream[EventLike]):
    """An anyio object send stream whose items are published to one channel.

    Get one with :meth:`EventStream.channel_writer`. Each :meth:`send` returns
    when the event is in the buffer of every subscriber of the channel, so a
    producer moves only as fast as events can be dispatched. Use it as an
    async context manager, or call :meth:`aclose` when done.
    """

    def __init__(self, stream: EventSink, channel: str) -> None:
        self._stream = stream
        self._closed = False
        #: The channel this writer feeds.
        self.channel: str = channel

    async def send(self, item: EventLike) -> None:
        """Publish one event.

        Raises:
            anyio.ClosedResourceError: this writer was closed, or the event
                stream it writes to was.
            ValueError, TypeError: the event is invalid (nothing was published).
        """
        if self._closed:
            raise anyio.ClosedResourceError("this channel writer has been closed")
        await self._stream.publish_event(self.channel, item)

    async def pipe(self, source: AsyncIterable[EventLike]) -> int:
        """Publish every event of ``source``, in order, and return how many were published.

        The source is read only as fast as events are dispatched. When the
        event stream is closed (shutdown: a signal, ``aclose()``), it returns
        without error and closes the source (an async generator's
        ``aclose()``): a publish loop in the app's lifespan then simply ends.
        The event that met the closed stream was not published.

        Raises:
            anyio.ClosedResourceError: this writer was closed.
            Exception: an error from the source or from a publish (invalid
                event, GRIP) propagates, and the rest of the source is not read.

        The writer stays open. Cancellation stops reading the source; an
        event being published may have reached some subscribers.
        """
        count = 0
        async for item in source:
            try:
                await self.send(item)
            except anyio.ClosedResourceError:
                if self._closed:
                    raise
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()
                return count
            count += 1
        return count

    async def aclose(self) -> None:
        """Close the writer. Further sends raise ``ClosedResourceError``. Idempotent."""
        self._closed = True
        await anyio.lowlevel.checkpoint()
