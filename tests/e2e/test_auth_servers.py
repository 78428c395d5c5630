"""eventstream.auth under real servers (uvicorn, hypercorn asyncio and trio): 401 and 403 over
HTTP, a ticket used twice, garbage credentials, and a short-lived token whose stream ends with
``stream-expired`` and resumes with a new token and ``Last-Event-ID``, losing nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from eventstream.client import EventSource, EventSourceError

from ..support.helpers import open_events
from ..support.marks import client_follows_server
from ..support.servers import Server, run_server
from ..support.tokens import hs256

pytestmark = [pytest.mark.anyio, pytest.mark.server]

KINDS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
_names = itertools.count()


@pytest.fixture(scope="module")
def auth_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    with run_server(request.param, "tests.apps.auth_app:app", log_dir=log_dir) as server:
        yield server


def user() -> str:
    return f"user{next(_names)}"


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def status_of(
    client: httpx.AsyncClient, url: str, **kwargs: object
) -> tuple[int, httpx.Headers, bytes]:
    async with open_events(client, url, **kwargs) as reader:
        response = reader.response
        if response.status_code == 200:
            assert (await reader.next()).event == "stream-open"
            return 200, response.headers, b""
        return response.status_code, response.headers, await response.aread()


@client_follows_server("auth_server", KINDS, scope="module")
async def test_401_403_and_200_over_http(auth_server: Server) -> None:
    name = user()
    url = f"{auth_server.base_url}/events/user-{name}"
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in (
            {},
            bearer("not a token"),
            bearer(hs256(sub=name, lifetime=-60)),
            bearer("x" * 9000),
            {"cookie": "session=" + "y" * 9000},
            {"cookie": b"session=\xff\xfe garbage"},  # control characters: the server's own 400
        ):
            status, head, body = await status_of(client, url, headers=headers)
            assert status == 401, headers
            assert head["www-authenticate"] == "Bearer"
            assert body == b"Unauthorized"
        for query in ("ticket=" + "z" * 9000, "ticket=%FF%FE%00", "ticket=v1.e30.AAAA"):
            status, _, body = await status_of(client, f"{url}?{query}")
            assert (status, body) == (401, b"Unauthorized"), query
        token = hs256(sub=name)
        assert (await status_of(client, f"{auth_server.base_url}/events/user-other", headers=bearer(token)))[
            0
        ] == 403
        assert (await status_of(client, url, headers=bearer(token)))[0] == 200
        assert (await status_of(client, url, headers={"cookie": f"a=b; session={token}"}))[0] == 200


@client_follows_server("auth_server", KINDS, scope="module")
async def test_a_ticket_opens_one_stream_and_is_refused_the_second_time(auth_server: Server) -> None:
    name = user()
    url = f"{auth_server.base_url}/events/user-{name}"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.post(f"{auth_server.base_url}/ticket")).status_code == 401
        minted = await client.post(
            f"{auth_server.base_url}/ticket", headers={"cookie": f"session={hs256(sub=name)}"}
        )
        assert minted.status_code == 200, minted.text
        ticket = minted.text
        async with EventSource(f"{url}?ticket={ticket}") as source:
            assert (await source.__anext__()).event == "stream-open"
        with pytest.raises(EventSourceError) as refused:
            async with EventSource(f"{url}?ticket={ticket}") as again:
                await again.__anext__()
        assert refused.value.status_code == 401


@client_follows_server("auth_server", KINDS, scope="module")
async def test_an_expiring_token_ends_the_stream_and_a_new_one_resumes_it_losing_nothing(
    auth_server: Server,
) -> None:
    """The page's flow: on ``stream-expired``, get a new token and reconnect with the last id.
    Events published between the end and the reconnection come from history."""
    name = user()
    channel = f"user-{name}"
    url = f"{auth_server.base_url}/events/{channel}"
    received: list[int] = []

    async def publish(values: list[int]) -> None:
        answer = await client.post(
            f"{auth_server.base_url}/publish", json={"channel": channel, "values": values}
        )
        assert answer.status_code == 200, answer.text

    async with httpx.AsyncClient(timeout=10) as client:
        with anyio.fail_after(20):
            async with EventSource(url, headers=bearer(hs256(sub=name, lifetime=1.5))) as source:
                async for event in source:
                    if event.event == "stream-open":
                        await publish([1, 2])
                    elif event.event is None:
                        received.append(event.json())
                    elif event.event == "stream-expired":
                        assert event.json() == {"reason": "token expired"}
                        break
                last_id = source.last_event_id
                assert source.connections == 1
            assert received == [1, 2]
            assert last_id
            await publish([3, 4])  # while the client has no stream
            async with EventSource(
                url, headers=bearer(hs256(sub=name, lifetime=60)), last_event_id=last_id
            ) as source:
                async for event in source:
                    if event.event is None:
                        received.append(event.json())
                        if len(received) == 5:
                            break
                    elif event.event == "stream-open":
                        await publish([5])
                    else:
                        assert event.event == "keep-alive", event
    assert received == [1, 2, 3, 4, 5]
