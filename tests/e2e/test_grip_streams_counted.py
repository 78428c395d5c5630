"""Streams held by a real Pushpin are counted as opened through GRIP, in statistics(), Prometheus and
OpenTelemetry alike: once per client stream, never for the proxy's next-link fetches or keep-alives.

The app runs in this event loop (hypercorn's asyncio or trio serve), behind the proxy in reliable
mode, so the proxy also fetches next links from it.
"""

from __future__ import annotations

import anyio
import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from eventstream import EventStream
from eventstream.otel import TEMPLATE, instrument
from eventstream.prometheus import register
from eventstream.types import ASGIApp, Message, Receive, Scope, Send

from ..support.helpers import open_events, wait_until
from ..support.pushpin import SIG_ISS, SIG_KEY, run_pushpin
from ..support.servers import free_port
from ..unit.test_otel import one, points
from .test_grip_reliable import FRESH_CONNECTIONS, held, routed, serve_origin

pytestmark = [pytest.mark.anyio, pytest.mark.server]


class Answers:
    """The app behind the proxy, noting each hold answer it finished sending, as seen on the wire:
    for a client's stream, or for the proxy's next-link fetch."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.holds = 0
        self.next_links = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        held = False

        async def noting(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = (b"grip-hold", b"stream") in message["headers"]
            await send(message)

        await self.app(scope, receive, noting)
        if held and b"grip-next-link=1" in scope.get("query_string", b""):
            self.next_links += 1
        elif held:
            self.holds += 1


def counts(stream: EventStream, registry: CollectorRegistry, reader: InMemoryMetricReader) -> list[float]:
    """Streams opened through GRIP under the template ``{id}``: statistics(), Prometheus, OpenTelemetry."""
    otel = one(points(reader), "eventstream.grip.streams.opened", **{TEMPLATE: "{id}"})
    prometheus = registry.get_sample_value("eventstream_grip_streams_opened_total", {"template": "{id}"})
    return [stream.statistics().grip_streams_opened, prometheus or 0, otel]


async def test_streams_held_by_pushpin_are_counted_once_each_not_their_next_links() -> None:
    control = free_port()
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    stream = EventStream(grip=grip_url, grip_reliable=True, keep_alive_interval=1)
    registry = CollectorRegistry()
    register(stream, registry)
    reader = InMemoryMetricReader()
    instrument(stream, MeterProvider(metric_readers=[reader]))
    answers = Answers(routed(stream))

    async def counted(expected: int) -> bool:
        return counts(stream, registry, reader) == [expected] * 3

    async with stream, serve_origin(answers) as origin:
        with run_pushpin(origin.port, control_port=control, message_wait_ms=500) as pushpin:
            async with httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client:
                # Warming the proxy up opens streams (and retries them) through it: each is counted.
                async with held(client, f"{pushpin.url}/events/first", pushpin, origin):
                    await wait_until(lambda: counted(answers.holds))
                    before = answers.holds
                    assert before >= 1
                    links_before = answers.next_links
                    async with (
                        open_events(client, f"{pushpin.url}/events/second") as second,
                        open_events(client, f"{pushpin.url}/events/third") as third,
                    ):
                        for opened in (second, third):
                            assert (await opened.next()).event == "stream-open"

                        async def both_counted() -> bool:
                            return answers.holds >= before + 2 and await counted(answers.holds)

                        # The proxy sent the app two requests (more if it retried one under load):
                        # each hold answer sent is counted, once.
                        await wait_until(both_counted)
                        # Held by the proxy: no subscriber in this process.
                        assert stream.statistics().subscribers == 0
                        # The proxy fetches each new session's next link (reliable mode), and sends
                        # keep-alives on its own: neither is a new stream.
                        with anyio.fail_after(15):
                            while answers.next_links < links_before + 2:
                                await anyio.sleep(0.05)  # polling the origin's record under a deadline
                        for opened in (second, third):
                            with anyio.fail_after(5):
                                assert (await opened.next()).event == "keep-alive"
                        await stream.publish_event("second", {"event": "m", "text": "one"})
                        assert (await second.next_not_keep_alive()).text == "one"
                        # Next links and keep-alives counted nothing: every count is still the
                        # hold answers sent (the proxy may have retried a hold meanwhile, under load).
                        await wait_until(lambda: counted(answers.holds))
                # A stream straight to the app (no proxy) is a stream of this process, not a GRIP one.
                async with open_events(client, f"http://127.0.0.1:{origin.port}/events/direct") as direct:
                    assert (await direct.next()).event == "stream-open"
                    assert stream.statistics().subscribers == 1
                    await wait_until(lambda: counted(answers.holds))
    direct_streams = registry.get_sample_value("eventstream_streams_opened_total", {"template": "{id}"})
    assert direct_streams == 1
