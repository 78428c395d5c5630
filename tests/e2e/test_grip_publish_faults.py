"""GRIP publishing against misbehaving control APIs: one that answers late, one that never answers.

The misbehaving API is a small HTTP server on a real socket (that is the
component at fault); the late one forwards each publish to a real Pushpin
before it answers, too late for the publisher.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from eventstream import EventStream, GripPublisher, GripPublishError
from eventstream.testing import open_stream

from ..support.helpers import wait_until
from ..support.pushpin import run_pushpin
from ..support.servers import free_port
from .test_grip_reliable import FRESH_CONNECTIONS, data_events, held, routed, serve_origin

pytestmark = pytest.mark.anyio


class ControlAPI:
    """An HTTP server for ``POST /publish/`` that forwards to ``forward_to`` and answers after ``delay``.

    ``delay=None`` never answers (the connection stays open until the client closes it).
    """

    def __init__(self, *, delay: float | None, forward_to: int | None = None, refusal: int = 0) -> None:
        self.delay = delay
        self.forward_to = forward_to
        self.refusal = refusal  # > 0: answer 400 at once, with a body of that many bytes
        self.sent = 0  # bytes of that body sent
        self.bodies: list[bytes] = []
        self.forwarded = 0  # bodies forwarded and accepted
        self.port = 0
        self.received = anyio.Event()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve on a free port of 127.0.0.1; yield the GRIP URL."""
        async with (
            await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
            httpx.AsyncClient(timeout=10) as forwarder,
            anyio.create_task_group() as tg,
        ):
            self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.start_soon(listener.serve, lambda conn: self._handle(conn, forwarder))
            try:
                yield f"http://127.0.0.1:{self.port}/"
            finally:
                tg.cancel_scope.cancel()

    async def _handle(self, connection: anyio.abc.SocketStream, forwarder: httpx.AsyncClient) -> None:
        async with connection:
            with suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                buffer = b""
                while True:  # one request after the other on a kept-alive connection
                    while b"\r\n\r\n" not in buffer:
                        buffer += await connection.receive()
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buffer) < length:
                        buffer += await connection.receive()
                    body, buffer = buffer[:length], buffer[length:]
                    self.bodies.append(body)
                    self.received.set()
                    if self.forward_to is not None:
                        response = await forwarder.post(
                            f"http://127.0.0.1:{self.forward_to}/publish/",
                            content=body,
                            headers={"Content-Type": "application/json"},
                        )
                        assert response.status_code == 200, response.text
                        self.forwarded += 1
                    if self.refusal:
                        await connection.send(
                            b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n" % self.refusal
                        )
                        chunk = b"no " * 21_846  # 64 KiB or so
                        while self.sent < self.refusal:
                            await connection.send(chunk)
                            self.sent += len(chunk)
                    if self.delay is None:
                        await anyio.sleep_forever()  # accepts, reads, never answers
                    else:
                        await anyio.sleep(self.delay)  # answers, but too late
                    await connection.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nPublished\n")


@pytest.mark.server
async def test_a_publish_retried_after_a_lost_answer_reaches_clients_once() -> None:
    pushpin_control = free_port()
    late = ControlAPI(delay=2.0, forward_to=pushpin_control)
    async with late.serving() as grip_url:
        publisher = GripPublisher(grip_url, timeout=0.5, retries=2, backoff=0.05, max_backoff=0.1)
        stream = EventStream(grip=publisher)  # not reliable mode: the items had no id before
        async with stream, serve_origin(routed(stream)) as origin:
            with run_pushpin(origin.port, control_port=pushpin_control) as pushpin:
                async with (
                    httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client,
                    held(client, f"{pushpin.url}/events/dup", pushpin, probe=["events-dup"]) as reader,
                ):
                    published_before = pushpin.published()  # after the proxy's warm-up
                    with pytest.raises(GripPublishError) as caught:
                        await stream.publish_event("dup", {"event": "m", "text": "once"})
                    error = caught.value
                    assert error.maybe_published
                    assert error.status is None
                    assert error.attempts == 3
                    assert "did not answer after 3 attempts (it may have published the event)" in str(error)
                    # Pushpin got the item three times, with one id.
                    assert len(late.bodies) == 3
                    assert len(set(late.bodies)) == 1

                    async def forwarded_three_times() -> bool:
                        return late.forwarded == 3

                    await wait_until(forwarded_three_times)
                    # the repeats were dropped
                    assert pushpin.published() - published_before == 1
                    # A marker published straight to Pushpin: the client has "once" once, then the marker.
                    marker = {
                        "channel": "events-dup",
                        "formats": {"http-stream": {"content": "event: m\ndata: end\n\n"}},
                    }
                    response = await client.post(
                        f"http://127.0.0.1:{pushpin_control}/publish/", json={"items": [marker]}
                    )
                    assert response.status_code == 200
                    with anyio.fail_after(10):
                        assert await data_events(reader, 2) == ["once", "end"]


async def test_a_control_api_that_never_answers_holds_no_publish_past_publish_timeout() -> None:
    silent = ControlAPI(delay=None)
    async with silent.serving() as grip_url:
        stream = EventStream(grip=GripPublisher(grip_url, publish_timeout=1.0))  # default timeout and retries
        async with stream, open_stream(stream("s")) as local:
            outcomes: dict[str, tuple[GripPublishError, float]] = {}

            async def publish(text: str) -> None:
                started = anyio.current_time()
                with pytest.raises(GripPublishError) as caught:
                    await stream.publish_event("s", {"event": "m", "text": text})
                outcomes[text] = (caught.value, anyio.current_time() - started)

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(publish, "first")
                    await silent.received.wait()
                    tg.start_soon(publish, "second")  # queued behind the unanswered request
            assert (await local.receive_event()).event == "stream-open"
            assert [(await local.receive_event()).text for _ in range(2)] == ["first", "second"]
    for text in ("first", "second"):
        error, elapsed = outcomes[text]
        assert elapsed < 1.0 + 1.0, (text, elapsed)  # the bound, plus scheduling slack on a loaded machine
        assert "publish_timeout (1 s)" in str(error)
        assert error.status is None
    first = outcomes["first"][0]
    assert first.maybe_published
    assert "did not answer" in str(first)
    assert len(silent.bodies) >= 1
    stats = stream.statistics().grip
    assert stats is not None
    assert stats[0].failures == 2
    assert stats[0].items_published == 0


@pytest.mark.server
async def test_a_refusal_with_a_huge_body_is_read_only_as_far_as_its_reason() -> None:
    # A control API answering 400 with 256 MiB: the publisher read all of it (in memory)
    # before it looked at the status. It reads a few KiB, for the error's reason.
    api = ControlAPI(delay=None, refusal=256 << 20)
    async with api.serving() as grip_url:
        stream = EventStream(grip=GripPublisher(grip_url, publish_timeout=30.0))
        async with stream:
            with anyio.fail_after(20), pytest.raises(GripPublishError) as caught:
                await stream.publish_event("s", {"event": "m", "text": "x"})
    assert caught.value.status == 400
    assert str(caught.value).count("no ") <= 200  # the reason: at most 500 characters of it
    assert api.sent < 32 << 20  # what the sockets' buffers took before the publisher hung up


@pytest.mark.parametrize("option", ["timeout", "publish_timeout"])
@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_publish_time_bounds_are_checked(option: str, value: float) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(ValueError, match=option):
        GripPublisher("http://proxy:5561/", **options)


def test_the_default_bound() -> None:
    publisher = GripPublisher("http://proxy:5561/")
    assert (publisher.timeout, publisher.publish_timeout) == (5.0, 15.0)
