"""Request and endpoint validation under real servers: lastEventId=error refused, a bad channels
callable answered with a clear 500 and one log line (in-process: tests/unit/test_request_validation.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from ..support.helpers import open_events
from ..support.servers import SERVER_KINDS, Server, run_server

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", params=SERVER_KINDS)
def conform_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    with run_server(request.param, app="tests.apps.conform_app:app", log_dir=log_dir) as server:
        yield server


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_last_event_id_error_under_real_servers(conform_server: Server) -> None:
    async with httpx.AsyncClient(base_url=conform_server.base_url, timeout=10) as client:
        for request in (
            client.build_request("GET", "/events/v1", params={"lastEventId": "error"}),
            client.build_request("GET", "/events/v1", headers={"Last-Event-ID": "error"}),
        ):
            response = await client.send(request)
            assert response.status_code == 400
            assert "Last-Event-ID is 'error'" in response.text
        # A real stream on the same server: a reconnecting client with a good id is served.
        async with open_events(client, "/events/v1?lastEventId=0-0") as reader:
            assert reader.response.status_code == 200
            assert (await reader.next()).event == "stream-open"


@pytest.mark.server
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_bad_callable_under_real_servers(conform_server: Server) -> None:
    async with httpx.AsyncClient(base_url=conform_server.base_url, timeout=10) as client:
        for path, name, shown in (
            ("/none", "channels_of_nothing", "None"),
            ("/bytes", "channels_as_bytes", "b'x'"),
        ):
            response = await client.get(path)
            assert response.status_code == 500
            assert response.text == "Internal Server Error: the endpoint's channels callable failed"
            line = f"the channels callable tests.apps.conform_app.{name} returned {shown}"
            with anyio.fail_after(10):
                while line not in conform_server.log():
                    await anyio.sleep(0.05)  # the server's log is written by another process
            # One line, no traceback: the server did not see an exception.
            assert "Traceback" not in conform_server.log()
