"""GRIP reliable mode under attack, through real Pushpin.

Each test replays an attack that worked: a dot-segment path that got a
refused channel through the next link, a request target that sent the next
link to another host, a query that broke the Grip-Link header, and
Last-Event-IDs that made the hold path answer 500. Request targets are sent
as they are (httpx's ``target`` extension), as an attacker's client would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from eventstream import EventStream, GripPublisher

from ..support.helpers import wait_until
from ..support.pushpin import SIG_ISS, SIG_KEY, Pushpin, run_pushpin
from ..support.servers import free_port
from .test_grip_reliable import (
    FRESH_CONNECTIONS,
    LosingTransport,
    Origin,
    data_events,
    held,
    routed,
    serve_origin,
)

pytestmark = [pytest.mark.anyio, pytest.mark.server]


def authorize(scope: object, channels: list[str]) -> bool:
    return all(channel.startswith("pub-") or channel == "lobby" for channel in channels)


@asynccontextmanager
async def reliable_behind_pushpin(
    make_app: Any, **options: Any
) -> AsyncIterator[tuple[EventStream, LosingTransport, Pushpin, Origin, httpx.AsyncClient]]:
    """A reliable-mode app served in this event loop behind a private Pushpin.

    Published items whose content holds ``GAP`` never reach the proxy, which
    then fetches them through the next link.
    """
    control = free_port()
    transport = LosingTransport("GAP")
    grip_url = f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"
    stream = EventStream(grip=GripPublisher(grip_url, transport=transport), grip_reliable=True, **options)
    async with stream, serve_origin(make_app(stream)) as origin:
        with run_pushpin(origin.port, control_port=control, message_wait_ms=500) as pushpin:
            async with httpx.AsyncClient(timeout=20, limits=FRESH_CONNECTIONS) as client:
                yield stream, transport, pushpin, origin, client


def starlette_app(stream: EventStream) -> Starlette:
    return Starlette(
        routes=[
            Route("/deep/{name:path}", stream("{name}")),
            Mount("/api/lobby", stream("lobby")),  # as in the README
            Route("/admin", stream("admin")),
        ]
    )


async def fetched(origin: Origin, target: str) -> None:
    """Wait until the proxy fetched the next link ``target`` from the origin."""

    async def found() -> bool:
        return target in origin.next_links

    await wait_until(found)


async def get(client: httpx.AsyncClient, pushpin: Pushpin, target: bytes, **kwargs: Any) -> httpx.Response:
    """One request with ``target`` sent byte for byte (no client-side normalisation)."""
    extensions = {"target": target}
    async with client.stream("GET", pushpin.url + "/", extensions=extensions, **kwargs) as response:
        if response.headers.get("content-type") != "text/event-stream":
            await response.aread()
        return response


async def test_a_dot_segment_path_does_not_reach_a_refused_channel() -> None:
    async with reliable_behind_pushpin(starlette_app, authorize=authorize) as (
        stream,
        _,
        pushpin,
        origin,
        client,
    ):
        async with held(client, f"{pushpin.url}/deep/pub-a", pushpin, origin) as honest:
            assert (await get(client, pushpin, b"/deep/secret-x")).status_code == 403
            assert (await get(client, pushpin, b"/admin")).status_code == 403
            for target in (
                b"/deep/pub-a/../secret-x",
                b"/deep/pub-a/%2E%2E/secret-x",
                b"/deep/pub-a/%2e./secret-x",
                b"/api/lobby/../admin",
            ):
                response = await get(client, pushpin, target)
                assert response.status_code == 400, (target, response.status_code, response.headers)
                assert "'..'" in response.text
            # A client naming the next link itself, with a Grip-Last of its choosing:
            # the proxy strips Grip-* headers, so it is an ordinary, refused request.
            crafted = await get(
                client,
                pushpin,
                b"/deep/secret-x?grip-next-link=1",
                headers={"Grip-Last": f"events-pub-a; last-id={stream._epoch}-0"},
            )
            assert crafted.status_code == 403
            # Nothing above subscribed anyone to the refused channels at the proxy: it
            # accepted their items and sent them to nobody (it counts both before it
            # answers the publish).
            before = pushpin.metrics()
            for channel, text in (("secret-x", "secret"), ("admin", "admin only")):
                await stream.publish_event(channel, {"event": "m", "text": text})
            after = pushpin.metrics()
            assert after["message_received"] - before["message_received"] == 2
            assert after["message_sent"] - before["message_sent"] == 0
            await stream.publish_event("pub-a", {"event": "m", "text": "public"})
            # The honest client's next-link request (after a lost publish) is served
            # from Grip-Last without authorization, and recovers the lost event.
            await stream.publish_event("pub-a", {"event": "m", "text": "GAP"})
            await stream.publish_event("pub-a", {"event": "m", "text": "after"})
            with anyio.fail_after(15):
                assert await data_events(honest, 3) == ["public", "GAP", "after"]
        # The honest client's next link kept its path.
        await fetched(origin, "/deep/pub-a?grip-next-link=1")


async def test_the_next_link_stays_on_the_origin_and_survives_any_query() -> None:
    decoy_connections = 0

    async def decoy(stream: anyio.abc.SocketStream) -> None:
        nonlocal decoy_connections
        decoy_connections += 1
        await stream.aclose()

    async with (
        await anyio.create_tcp_listener(local_host="127.0.0.1") as listener,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(listener.serve, decoy)
        decoy_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with reliable_behind_pushpin(routed) as (stream, transport, pushpin, origin, client):
            async with held(client, f"{pushpin.url}/events/warm", pushpin, origin):
                pass
            # What the proxy logged while warming up (a fresh proxy may answer a first
            # fetch with 502 while its internal sockets connect) is not this test's.
            log_start = len(pushpin.log())
            network_path = f"//127.0.0.1:{decoy_port}/events/np".encode()
            # (Pushpin refuses a raw '<' or '>' in a request target; escaped, they reach the app.)
            odd_query = b"/events/q?tags=a,b;c&x=%0d%0aGrip-Channel:%20admin&y=%3C//127.0.0.1:1/%3E;rel=next"
            extensions = {"target": network_path}
            async with (
                held(client, f"{pushpin.url}/", pushpin, origin, extensions=extensions) as first,
                held(client, f"{pushpin.url}/", pushpin, origin, extensions={"target": odd_query}) as second,
            ):
                for text in ("one", "GAP two", "three"):
                    await stream.publish_event("np", {"event": "m", "text": text})
                    await stream.publish_event("q", {"event": "m", "text": text})
                with anyio.fail_after(15):
                    assert await data_events(first, 3) == ["one", "GAP two", "three"]
                    assert await data_events(second, 3) == ["one", "GAP two", "three"]
            await fetched(origin, f"//127.0.0.1:{decoy_port}/events/np?grip-next-link=1")
            expected = (  # as Pushpin logs it (upper-case escapes)
                "/events/q?tags=a%2Cb%3Bc&x=%0D%0AGrip-Channel%3A%20admin&y=%3C%2F%2F127.0.0.1%3A1%2F%3E%3Brel=next"
            )
            await fetched(origin, f"{expected}&grip-next-link=1")
            log = pushpin.log()[log_start:]
        tg.cancel_scope.cancel()
    assert transport.lost == 2
    assert decoy_connections == 0
    assert " code=502 " not in log


async def test_odd_last_event_ids_through_the_proxy_get_stream_reset() -> None:
    async with reliable_behind_pushpin(routed) as (stream, _, pushpin, origin, client):
        await stream.publish_event("odd", {"event": "m", "text": "before"})
        # A fresh Pushpin may answer its first requests with its own 500 ("Accept service
        # unavailable") while it warms up: hold one stream first, then count only what the
        # cases below make it log.
        async with held(client, f"{pushpin.url}/events/odd", pushpin, origin):
            pass
        log_start = len(pushpin.log())
        epoch = stream._epoch.encode()
        cases: list[dict[str, Any]] = [
            {"headers": [(b"last-event-id", epoch + b"-\xb2")]},
            {"extensions": {"target": b"/events/odd?lastEventId=" + epoch + b"-%C2%B2"}},
            {"headers": [(b"last-event-id", epoch + b"-" + b"9" * 5000)]},
            {"extensions": {"target": b"/events/odd?lastEventId=" + epoch + b"-%D9%A3"}},
        ]
        for case in cases:
            async with held(client, f"{pushpin.url}/events/odd", pushpin, origin, **case) as reader:
                assert (await reader.next()).event == "stream-reset"
        log = pushpin.log()[log_start:]
        # A known id still resumes.
        last_id = stream._history.last("odd").id  # type: ignore[union-attr]
        await stream.publish_event("odd", {"event": "m", "text": "missed"})
        async with held(
            client, f"{pushpin.url}/events/odd", pushpin, origin, headers={"Last-Event-ID": last_id}
        ) as reader:
            assert await data_events(reader, 1) == ["missed"]
    assert " code=500 " not in log
