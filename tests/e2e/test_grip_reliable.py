"""GRIP reliable mode against real Pushpin: a publish lost on its way to the proxy is recovered.

The app runs in this event loop (hypercorn's asyncio or trio serve), so the
test can make one publish never reach the proxy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest

from eventstream import EventStream, GripPublisher
from eventstream.types import ASGIApp, Message, Receive, Scope, Send

from ..support.helpers import EventReader, open_events
from ..support.pushpin import SIG_ISS, SIG_KEY, Pushpin, run_pushpin
from ..support.servers import free_port, serve_in_process

pytestmark = [pytest.mark.anyio, pytest.mark.server]

# A connection the proxy dropped while warming up must not be reused for the next try.
FRESH_CONNECTIONS = httpx.Limits(max_keepalive_connections=0)


class LosingTransport(httpx.AsyncBaseTransport):
    """Forwards publishes to the proxy, except items whose content holds ``marker``: those are lost."""

    def __init__(self, marker: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.marker = marker
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        kept = [
            item for item in body["items"] if self.marker not in item["formats"]["http-stream"]["content"]
        ]
        self.lost += len(body["items"]) - len(kept)
        if not kept:
            return httpx.Response(200, text="Published")
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        forwarded = httpx.Request(
            request.method, request.url, headers=headers, content=json.dumps({"items": kept})
        )
        return await self.inner.handle_async_request(forwarded)

    async def aclose(self) -> None:
        await self.inner.aclose()


def routed(stream: EventStream) -> ASGIApp:
    endpoint = stream("{id}")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["path_params"] = {"id": scope["path"].rsplit("/", 1)[-1]}
        await endpoint(scope, receive, send)

    return app


class Origin:
    """The app behind the proxy, served in this event loop (:func:`serve_origin`); it notes the
    target of each next-link request it answers with 200, as the proxy sent it, when the
    response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.port = 0
        self.next_links: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        query: bytes = scope.get("query_string", b"")
        if scope["type"] != "http" or b"grip-next-link=1" not in query:
            await self.app(scope, receive, send)
            return
        path: bytes = scope.get("raw_path") or scope["path"].encode()
        target = f"{path.decode('latin-1')}?{query.decode('latin-1')}"

        async def noting(message: Message) -> None:
            # Noted before the head goes out: the proxy can pass the body on to a
            # client only after this, so a client that got the events finds it here.
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.next_links.append(target)
            await send(message)

        await self.app(scope, receive, noting)


@asynccontextmanager
async def serve_origin(app: ASGIApp) -> AsyncIterator[Origin]:
    """``app`` served in this event loop (hypercorn) on a free port, as an :class:`Origin`."""
    origin = Origin(app)
    async with serve_in_process(origin) as port:
        origin.port = port
        yield origin


@asynccontextmanager
async def held(
    client: httpx.AsyncClient,
    url: str,
    pushpin: Pushpin,
    origin: Origin | None = None,
    *,
    probe: Sequence[str] = (),
    **kwargs: object,
) -> AsyncIterator[EventReader]:
    """A stream held by the proxy, its stream-open event read; retried while a new Pushpin warms up.

    Right after it starts, the proxy may drop a request, never finish
    answering it, or pass the client its first body and then cancel the held
    session ("received message out of sequence, canceling" in its log). So a
    stream counts as held once the proxy showed that holding works end to
    end: in reliable mode (``origin`` given), by fetching a next link from
    the origin for a first session (see :func:`warm_up`); otherwise, by
    sending a comment published straight to it on the GRIP channels
    ``probe`` to a receiver on each.
    """
    assert (origin is None) != (not probe), "an origin (reliable mode) or channels to probe"
    if origin is not None:
        await warm_up(client, url, origin, **kwargs)
    deadline = anyio.current_time() + 20
    attempt = 0
    while True:
        attempt += 1
        opened = open_events(client, url, **kwargs)
        reader = None
        problem = "no response headers within 2 s"
        confirmed = False
        with anyio.move_on_after(2):
            try:
                reader = await opened.__aenter__()
                if reader.response.status_code == 200:
                    opening = await reader.next()
                    assert opening.event == "stream-open"
                    if probe:
                        problem = "the proxy did not subscribe it"
                        await probe_channels(client, pushpin, probe, attempt)
                    confirmed = True
                else:
                    problem = f"status {reader.response.status_code}"
            except (httpx.TransportError, EOFError) as exc:
                problem = repr(exc)
        if reader is not None:
            try:
                if confirmed:
                    yield reader
                    return
            finally:
                await opened.__aexit__(None, None, None)
        if anyio.current_time() > deadline:
            raise TimeoutError(f"{url} does not hold streams yet: {problem}\n{pushpin.log()[-4000:]}")
        await anyio.sleep(0.05)  # polling readiness under a deadline


async def warm_up(client: httpx.AsyncClient, url: str, origin: Origin, **kwargs: object) -> None:
    """Hold a first stream until the proxy fetched its next link, then close it (once per proxy).

    The proxy fetches a channel's next link about 1.15 s after its first
    subscriber: then the session survived its hand-over and the proxy's
    requests to the origin work. (A comment published to a reliable session
    would make the proxy fetch a next link at once, racing a test's own
    publishes: right after start such a fetch was seen never to finish.)
    """
    deadline = anyio.current_time() + 30
    while not origin.next_links:
        with anyio.move_on_after(4):
            try:
                async with open_events(client, url, **kwargs) as reader:
                    if reader.response.status_code == 200:
                        await reader.next()
                        while not origin.next_links:
                            await anyio.sleep(0.05)  # polling the origin's record under a deadline
            except (httpx.TransportError, EOFError):
                pass
        if anyio.current_time() > deadline:
            raise TimeoutError(f"{url}: the proxy fetched no next link")


async def probe_channels(
    client: httpx.AsyncClient, pushpin: Pushpin, channels: Sequence[str], n: int
) -> None:
    """Publish a comment straight to the proxy on ``channels``.

    Raises ``EOFError`` if the proxy sent the comment to fewer receivers than
    there are channels (it dropped the session): it counts what it sent before
    answering the publish. (More is fine: a session of an earlier attempt may
    linger a moment after its client left.) Not for a reliable session: see
    :func:`warm_up`.
    """
    sent = pushpin.metrics()["message_sent"]
    items = [
        {"channel": name, "formats": {"http-stream": {"content": f": held {n}\n\n"}}} for name in channels
    ]
    response = await client.post(f"http://127.0.0.1:{pushpin.control_port}/publish/", json={"items": items})
    response.raise_for_status()
    if pushpin.metrics()["message_sent"] - sent < len(channels):
        raise EOFError(f"the proxy dropped the session held on {', '.join(channels)}")


async def data_events(reader: EventReader, count: int) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        event = await reader.next()
        if event.event == "m":
            values.append(event.text or "")
    return values


async def test_a_publish_lost_on_the_way_is_recovered_through_the_next_link() -> None:
    control = free_port()
    transport = LosingTransport("GAP")
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    stream = EventStream(grip=GripPublisher(grip_url, transport=transport), grip_reliable=True)
    async with stream, serve_origin(routed(stream)) as origin:
        with run_pushpin(origin.port, control_port=control, message_wait_ms=500) as pushpin:
            async with httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client:
                async with held(client, f"{pushpin.url}/events/rel", pushpin, origin) as reader:
                    fetched_before = len(origin.next_links)
                    assert reader.response.headers.get("grip-link") is None  # instructions stay at the proxy
                    for text in ("one", "two", "GAP three", "four", "five"):
                        await stream.publish_event("rel", {"event": "m", "text": text})
                    try:
                        with anyio.fail_after(15):
                            received = await data_events(reader, 5)
                    except (httpx.TransportError, TimeoutError) as exc:
                        raise AssertionError(f"stream ended: {exc!r}\n{pushpin.log()[-6000:]}") from exc
            assert transport.lost == 1
            assert received == ["one", "two", "GAP three", "four", "five"]
            # The lost event came through Pushpin fetching the next link.
            assert "/events/rel?grip-next-link=1" in origin.next_links[fetched_before:]


async def test_a_client_reconnecting_through_the_proxy_resumes_with_last_event_id() -> None:
    control = free_port()
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    stream = EventStream(grip=grip_url, grip_reliable=True)
    async with stream, serve_origin(routed(stream)) as origin:
        with run_pushpin(origin.port, control_port=control, message_wait_ms=500) as pushpin:
            async with httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client:
                async with held(client, f"{pushpin.url}/events/res", pushpin, origin) as reader:
                    for text in ("a", "b", "c"):
                        await stream.publish_event("res", {"event": "m", "text": text})
                    await data_events(reader, 3)
                    last_id = reader.decoder.last_event_id
                for text in ("d", "e"):  # while the client is away
                    await stream.publish_event("res", {"event": "m", "text": text})
                async with held(
                    client, f"{pushpin.url}/events/res", pushpin, origin, headers={"Last-Event-ID": last_id}
                ) as again:
                    assert await data_events(again, 2) == ["d", "e"]
                    await stream.publish_event("res", {"event": "m", "text": "f"})
                    assert await data_events(again, 1) == ["f"]
