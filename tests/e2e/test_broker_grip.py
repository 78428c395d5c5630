"""GRIP with a broker: three publishers on one channel behind real Pushpin, in reliable mode.

Ids and prev-ids come from the engine, so the chain Pushpin checks holds
whichever stream publishes; any stream answers next links from the shared
history. The streams (each with its own broker connections and GRIP
publisher) stand for three processes; the origin is served in this event loop.
"""

from __future__ import annotations

import time

import anyio
import httpx
import pytest

from eventstream import EventStream, RedisBroker

from ..support.helpers import EventReader
from ..support.pushpin import SIG_ISS, SIG_KEY, run_pushpin
from ..support.redis_engine import RedisEngine
from ..support.servers import free_port
from .test_grip_reliable import FRESH_CONNECTIONS, held, routed, serve_origin

pytestmark = [pytest.mark.anyio, pytest.mark.server]


async def test_three_publishers_on_one_channel_keep_the_chain(
    engine: RedisEngine, anyio_backend: str
) -> None:
    control = free_port()
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    prefix = f"grip-{anyio_backend}:"
    streams = [
        EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), grip=grip_url, grip_reliable=True)
        for _ in range(3)
    ]
    message_wait = 5.0
    delays: list[float] = []
    async with streams[0], streams[1], streams[2], serve_origin(routed(streams[0])) as origin:
        with run_pushpin(
            origin.port, control_port=control, message_wait_ms=int(message_wait * 1000)
        ) as pushpin:
            async with httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client:
                async with held(client, f"{pushpin.url}/events/chain", pushpin, origin) as reader:
                    # Pushpin orders a channel's items by prev-id only once it has
                    # relayed one: until then, the first to arrive sets where its
                    # order starts, and items racing it may wait for message_wait.
                    await streams[0].publish_event("chain", {"event": "first"})
                    with anyio.fail_after(20):
                        assert (await reader.next()).event == "first"
                    sent: dict[str, float] = {}

                    async def publish_from(index: int) -> None:
                        for n in range(30):
                            text = f"{index}:{n}"
                            sent[text] = time.monotonic()
                            await streams[index].publish_event("chain", {"event": "m", "text": text})

                    received: list[str] = []
                    with anyio.fail_after(60):
                        async with anyio.create_task_group() as tg:
                            for index in range(3):
                                tg.start_soon(publish_from, index)
                            await read_into(reader, received, 90, sent, delays)
    assert sorted(received) == sorted(f"{i}:{n}" for i in range(3) for n in range(30))
    for index in range(3):
        mine = [value for value in received if value.startswith(f"{index}:")]
        assert mine == [f"{index}:{n}" for n in range(30)]
    largest = max(delays)
    print(f"largest publish-to-client delay through Pushpin: {largest * 1000:.0f} ms")
    assert largest < message_wait / 2, "an event waited for Pushpin's message_wait"


async def read_into(
    reader: EventReader, into: list[str], count: int, sent: dict[str, float], delays: list[float]
) -> None:
    while len(into) < count:
        event = await reader.next()
        if event.event == "m":
            text = event.text or ""
            into.append(text)
            delays.append(time.monotonic() - sent[text])
