"""subscriber_count_all: the awaitable count; without a broker, this process's count."""

from __future__ import annotations

import anyio
import pytest

from eventstream import EventStream
from eventstream.testing import open_stream

pytestmark = pytest.mark.anyio


async def test_without_a_broker_it_is_the_process_count() -> None:
    stream = EventStream(keep_alive_interval=None)
    assert await stream.subscriber_count_all() == 0
    assert await stream.subscriber_count_all("a") == 0
    with anyio.fail_after(10):
        async with (
            open_stream(stream("a"), "/a"),
            open_stream(stream(["a", "b"]), "/ab"),
            open_stream(stream("b"), "/b"),
        ):
            await stream.wait_subscribers(3)
            for channel in (None, "a", "b", "c"):
                assert await stream.subscriber_count_all(channel) == stream.subscriber_count(channel)
            assert (await stream.subscriber_count_all(), await stream.subscriber_count_all("a")) == (3, 2)
        await stream.wait_subscribers(0)
        assert await stream.subscriber_count_all("a") == 0


async def test_an_invalid_channel_name_is_refused() -> None:
    stream = EventStream()
    with pytest.raises(ValueError, match="channel"):
        await stream.subscriber_count_all("a,b")
    with pytest.raises(TypeError, match="str"):
        await stream.subscriber_count_all(3)  # type: ignore[arg-type]
