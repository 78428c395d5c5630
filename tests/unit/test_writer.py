"""ChannelWriter.pipe: a source piped into a channel ends quietly when the event stream closes,
closing the source; a closed writer refuses the next event."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import anyio
import pytest

from eventstream import EventStream, ServerSentEvent
from eventstream.testing import open_stream

pytestmark = pytest.mark.anyio


async def test_pipe_returns_and_closes_the_source_when_the_stream_closes() -> None:
    stream = EventStream()
    writer = stream.channel_writer("ticks")
    closed = anyio.Event()
    produced: list[int] = []

    async def ticker() -> AsyncIterator[ServerSentEvent]:
        try:
            for i in range(1000):
                produced.append(i)
                if i == 3:
                    await stream.aclose()  # as a signal does, while the source is being read
                yield ServerSentEvent(event="tick", data=i)
        finally:
            closed.set()

    with anyio.fail_after(10):
        async with open_stream(stream("ticks")) as response:
            await stream.wait_subscribers(1, "ticks")
            assert await writer.pipe(ticker()) == 3  # the event that met the closed stream was not sent
            body = (await response.read()).decode()
            await closed.wait()
    assert produced == [0, 1, 2, 3]  # the source was not read past the closed stream
    assert [line for line in body.splitlines() if line.startswith("data: ")][-3:] == [
        "data: 0",
        "data: 1",
        "data: 2",
    ]
    # The writer itself stays open: the next event meets the closed stream.
    with pytest.raises(anyio.ClosedResourceError):
        await writer.send({"data": 4})


async def test_a_closed_writer_refuses_and_pipe_raises() -> None:
    stream = EventStream()
    async with stream.channel_writer("c") as writer:
        await writer.send({"data": 1})
    with pytest.raises(anyio.ClosedResourceError, match="this channel writer has been closed"):
        await writer.send({"data": 2})

    async def source() -> AsyncGenerator[dict[str, int]]:
        yield {"data": 3}

    with pytest.raises(anyio.ClosedResourceError, match="this channel writer has been closed"):
        async with aclosing(source()) as items:
            await writer.pipe(items)
    await writer.aclose()  # idempotent


async def test_pipe_takes_a_source_without_aclose() -> None:
    stream = EventStream()

    class Source:
        """An async iterator with no aclose(): nothing to close when the stream is."""

        def __init__(self) -> None:
            self.n = 0

        def __aiter__(self) -> Source:
            return self

        async def __anext__(self) -> dict[str, int]:
            self.n += 1
            if self.n == 3:
                await stream.aclose()
            return {"data": self.n}

    source = Source()
    assert await stream.channel_writer("c").pipe(source) == 2
    assert source.n == 3


async def test_a_channel_publisher_publishes_to_its_channel() -> None:
    stream = EventStream()
    publisher = stream.get_channel_publisher("news")
    assert publisher.channel == "news"
    with anyio.fail_after(5):
        async with open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            await publisher.publish_event({"event": "m", "data": 1})
            assert (await response.receive_event()).event == "stream-open"
            received = await response.receive_event()
    assert (received.event, received.json()) == ("m", 1)
