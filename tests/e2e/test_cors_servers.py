"""eventstream.cors.CORS under real servers: the raw ASGI example with ``CORS_ORIGINS`` answers
the preflight of its publish route, and its publishes and streams carry the headers for an
allowed origin only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..support.helpers import open_events
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.servers import Server, run_server

pytestmark = [pytest.mark.anyio, pytest.mark.server, CLIENT_ON_ASYNCIO]

PAGE = "https://chat.example.com"


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn-asyncio", "hypercorn-trio"])
def example(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    env = {"CORS_ORIGINS": f"{PAGE} https://*.example.org"}
    with run_server(request.param, "examples.raw_asgi:app", env=env, log_dir=log_dir) as server:
        yield server


async def test_the_examples_publish_route_answers_preflights_and_streams_carry_the_headers(
    example: Server,
) -> None:
    preflight = {
        "origin": PAGE,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type",
    }
    async with httpx.AsyncClient(base_url=example.base_url, timeout=10) as client:
        answer = await client.options("/api/publish", headers=preflight)
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == PAGE
        assert "POST" in answer.headers["access-control-allow-methods"]
        refused = await client.options("/api/publish", headers={**preflight, "origin": "https://evil.test"})
        assert refused.status_code == 403
        assert "access-control-allow-origin" not in refused.headers
        origin = "https://a.example.org"
        async with open_events(client, "/api/events?channel=cors", headers={"origin": origin}) as reader:
            assert reader.response.status_code == 200
            assert reader.response.headers["access-control-allow-origin"] == origin
            assert (await reader.next()).event == "stream-open"
            published = await client.post(
                "/api/publish", headers={"origin": PAGE}, json={"channel": "cors", "event": "m", "data": 1}
            )
            assert published.status_code == 202
            assert published.headers["access-control-allow-origin"] == PAGE
            while (event := await reader.next()).event != "m":
                pass
            assert event.json() == 1
        other = await client.post("/api/publish", headers={"origin": "https://evil.test"}, json={"data": 1})
        assert other.status_code == 202  # served: the browser keeps the answer from the page
        assert "access-control-allow-origin" not in other.headers
        assert other.headers["vary"] == "Origin"
