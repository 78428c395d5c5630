"""subscribe_limits under real servers (uvicorn, hypercorn asyncio and trio): an address that
holds too many streams, or opens them too fast, gets 429 with Retry-After, and recovers once it
closes one or waits; behind a proxy, the server's proxy-headers option gives each client its own
address."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..support.helpers import open_events, wait_until
from ..support.marks import client_follows_server
from ..support.servers import Server, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server]

KINDS = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")


@pytest.fixture(scope="module")
def limits_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    with run_server(request.param, "tests.apps.limits_app:app", log_dir=log_dir) as server:
        yield server


async def status_of(client: httpx.AsyncClient, url: str, **kwargs: object) -> tuple[int, str | None]:
    async with open_events(client, url, **kwargs) as reader:
        response = reader.response
        if response.status_code == 200:
            assert (await reader.next()).event == "stream-open"
        else:
            await response.aread()
        return response.status_code, response.headers.get("retry-after")


@client_follows_server("limits_server", KINDS, scope="module")
async def test_open_streams_per_address_429_then_recovery(limits_server: Server) -> None:
    url = f"{limits_server.base_url}/open/a"
    async with httpx.AsyncClient(timeout=10) as client:

        async def admitted() -> bool:  # (streams of an earlier run are given back once seen gone)
            return (await status_of(client, url))[0] == 200

        await wait_until(admitted, timeout=10)
        async with open_events(client, url) as first, open_events(client, url) as second:
            assert first.response.status_code == second.response.status_code == 200
            assert (await first.next()).event == (await second.next()).event == "stream-open"
            assert await status_of(client, url) == (429, "5")
            assert await status_of(client, url) == (429, "5")

        async def two_admitted() -> bool:
            async with open_events(client, url) as first, open_events(client, url) as second:
                return first.response.status_code == second.response.status_code == 200

        # Both held streams are closed: the address holds two again, once the server saw them go.
        await wait_until(two_admitted, timeout=10)


@client_follows_server("limits_server", KINDS, scope="module")
async def test_new_streams_per_second_429_with_retry_after_then_recovery(limits_server: Server) -> None:
    url = f"{limits_server.base_url}/rate/a"
    async with httpx.AsyncClient(timeout=10) as client:
        seen: list[tuple[int, str | None]] = []

        async def refused() -> bool:
            seen.append(await status_of(client, url))
            return seen[-1][0] == 429

        await wait_until(refused, timeout=10)
        assert seen[-1] == (429, "1")
        assert 200 in {status for status, _ in seen}  # the burst was admitted first

        async def admitted() -> bool:
            return (await status_of(client, url))[0] == 200

        await wait_until(admitted, timeout=10)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_behind_a_proxy_each_forwarded_client_counts_alone(log_dir: Path) -> None:
    # uvicorn --proxy-headers --forwarded-allow-ips: the scope's client is X-Forwarded-For's
    # address, so the limit applies to each client behind the proxy, not to the proxy.
    extra = ("--proxy-headers", "--forwarded-allow-ips", "127.0.0.1")
    with run_server("uvicorn", "tests.apps.limits_app:app", log_dir=log_dir, extra_args=extra) as server:
        url = f"{server.base_url}/open/p"
        async with httpx.AsyncClient(timeout=10) as client, contextlib.AsyncExitStack() as held:
            for address in ("198.51.100.1", "198.51.100.2"):
                for _ in range(2):
                    reader = await held.enter_async_context(
                        open_events(client, url, headers={"x-forwarded-for": address})
                    )
                    assert reader.response.status_code == 200
            for address in ("198.51.100.1", "198.51.100.2"):
                assert await status_of(client, url, headers={"x-forwarded-for": address}) == (429, "5")
            assert (await status_of(client, url, headers={"x-forwarded-for": "198.51.100.3"}))[0] == 200
