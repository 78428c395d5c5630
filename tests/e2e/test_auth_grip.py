"""eventstream.auth behind real Pushpin in reliable mode: how authorization holds when the
proxy's next-link requests carry no credentials, and what becomes of a token's expiry.

The proxy forwards a client's request with its ``Authorization`` header, cookies and query:
the authorizer answers it as it answers a direct request (401, 403, or the hold). The
proxy's next-link requests carry none of the client's credentials; they are trusted
because ``Grip-Sig`` proves the proxy sent them, and they are held on the channels the proxy
names in ``Grip-Last``, which are those of the original, authorized request. A client cannot
make such a request: the proxy strips ``Grip-*`` request headers.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import jwt
import pytest

from eventstream import EventStream
from eventstream.auth import JWTAuthorizer
from eventstream.types import ASGIApp, Receive, Scope, Send

from ..support.helpers import open_events, wait_until
from ..support.tokens import AUDIENCE, ISSUER, SECRET, TICKET_SECRET, hs256
from .test_grip_reliable import data_events, held, routed
from .test_grip_security import fetched, reliable_behind_pushpin

pytestmark = [pytest.mark.anyio, pytest.mark.server]

CREDENTIALS = (b"authorization", b"cookie")


def authorizer() -> JWTAuthorizer:
    return JWTAuthorizer(
        secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=0,
        channels=["user-{sub}"],
        cookie="session",
        ticket_secret=TICKET_SECRET,
    )


class Recording:
    """The app of ``routed(stream)``, noting the headers and query of each next-link request."""

    def __init__(self) -> None:
        self.next_link_requests: list[tuple[bytes, dict[bytes, bytes]]] = []

    def __call__(self, stream: EventStream) -> ASGIApp:
        inner = routed(stream)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            query: bytes = scope.get("query_string", b"")
            if scope["type"] == "http" and b"grip-next-link=1" in query:
                self.next_link_requests.append(
                    (query, {key.lower(): value for key, value in scope["headers"]})
                )
            await inner(scope, receive, send)

        return app


async def answer(client: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[int, httpx.Headers, bytes]:
    async with open_events(client, url, **kwargs) as reader:
        if reader.response.status_code == 200:
            return 200, reader.response.headers, str((await reader.next()).event).encode()
        return reader.response.status_code, reader.response.headers, await reader.response.aread()


async def test_reliable_mode_keeps_authorization_through_next_links_without_credentials() -> None:
    recording = Recording()
    async with reliable_behind_pushpin(recording, authorize=authorizer()) as (
        stream,
        _,
        pushpin,
        origin,
        client,
    ):
        alice = {"authorization": f"Bearer {hs256(sub='alice')}"}
        url = f"{pushpin.url}/events/user-alice"
        async with held(client, url, pushpin, origin, headers=alice) as reader:
            # Through the proxy, the answers are those of a direct request, with nothing more.
            status, headers, body = await answer(client, url)
            assert (status, headers.get("www-authenticate"), body) == (401, "Bearer", b"Unauthorized")
            assert (await answer(client, f"{pushpin.url}/events/user-bob", headers=alice))[0] == 403
            # A client naming the next link itself, with a Grip-Last of its choosing, is an
            # ordinary request (the proxy strips Grip-* headers): no credentials, 401.
            crafted = {"Grip-Last": f"events-user-bob; last-id={stream._epoch}-0"}
            assert (await answer(client, f"{pushpin.url}/events/user-bob?grip-next-link=1", headers=crafted))[
                0
            ] == 401
            # A publish lost on its way to the proxy: the proxy fetches the next link,
            # without credentials, and it is served from Grip-Last: nothing is lost.
            before = len(recording.next_link_requests)
            for text in ("one", "GAP two", "three"):
                await stream.publish_event("user-alice", {"event": "m", "text": text})
            with anyio.fail_after(15):
                assert await data_events(reader, 3) == ["one", "GAP two", "three"]
        await fetched(origin, "/events/user-alice?grip-next-link=1")
        assert len(recording.next_link_requests) > before
        for _, seen in recording.next_link_requests:
            assert not any(name in seen for name in CREDENTIALS), seen
            assert b"grip-sig" in seen


async def test_a_ticket_through_the_proxy_holds_once_and_its_next_link_repeats_it_spent() -> None:
    recording = Recording()
    auth = authorizer()
    async with reliable_behind_pushpin(recording, authorize=auth) as (stream, _, pushpin, origin, client):
        cookie = {"cookie": f"session={hs256(sub='carol')}"}
        async with held(client, f"{pushpin.url}/events/user-carol", pushpin, origin, headers=cookie):
            pass  # the proxy is warm: the ticket is used once, below
        minted = auth.mint_ticket({"type": "http", "headers": [(b"cookie", cookie["cookie"].encode())]})
        url = f"{pushpin.url}/events/user-carol?ticket={minted}"
        async with open_events(client, url) as reader:
            assert reader.response.status_code == 200
            assert (await reader.next()).event == "stream-open"
            for text in ("GAP one", "two"):
                await stream.publish_event("user-carol", {"event": "m", "text": text})
            with anyio.fail_after(15):
                assert await data_events(reader, 2) == ["GAP one", "two"]
        # The next link repeats the request's query, so the ticket too, which is spent:
        # the proxy's signed request is not authorized again; a client's use of it is 401.
        queries = [query for query, _ in recording.next_link_requests if minted.encode() in query]
        assert queries
        assert (await answer(client, url))[0] == 401


async def test_a_held_stream_outlives_its_token_the_origin_cannot_end_it() -> None:
    """The documented limit: the proxy holds the stream, so the token's expiry does not end it
    (the origin answered once, with hold instructions, and GRIP has no per-stream deadline)."""
    recording = Recording()
    async with reliable_behind_pushpin(recording, authorize=authorizer()) as (
        stream,
        _,
        pushpin,
        origin,
        client,
    ):
        async with held(
            client,
            f"{pushpin.url}/events/user-warm",
            pushpin,
            origin,
            headers={"authorization": f"Bearer {hs256(sub='warm')}"},
        ):
            pass
        token = hs256(sub="dave", lifetime=3)  # (time for the request through the proxy, on a busy machine)
        async with open_events(
            client, f"{pushpin.url}/events/user-dave", headers={"authorization": f"Bearer {token}"}
        ) as reader:
            assert (await reader.next()).event == "stream-open"

            async def expired() -> bool:
                return time.time() >= _exp(token) + 0.2

            await wait_until(expired, timeout=10)
            await stream.publish_event("user-dave", {"event": "m", "text": "after expiry"})
            with anyio.fail_after(15):
                assert await data_events(reader, 1) == ["after expiry"]
        # A new request with the expired token is refused, through the proxy as directly.
        assert (
            await answer(
                client, f"{pushpin.url}/events/user-dave", headers={"authorization": f"Bearer {token}"}
            )
        )[0] == 401


def _exp(token: str) -> float:
    return float(jwt.decode(token, options={"verify_signature": False})["exp"])
