"""Every Python code block of the README and of the documentation pages runs.

Each page's blocks run in order, in one namespace per page (top-level await allowed).
"""

from __future__ import annotations

import ast
import inspect
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from eventstream.testing import open_stream

from ..support.documents import DOCUMENTS, blocks, name
from ..support.helpers import wait_until
from ..support.redis_engine import RedisEngine, run_redis
from ..support.servers import run_server

pytestmark = pytest.mark.anyio

#: The pages with Python blocks, and their blocks.
PAGES = {name(document): found for document in DOCUMENTS if (found := blocks(document, "python"))}


def test_the_pages_have_python_blocks() -> None:
    assert "README.md" in PAGES
    assert sum(len(page_blocks) for page_blocks in PAGES.values()) >= 10


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private engine for the broker's examples (REDIS_URL)."""
    with run_redis() as engine:
        yield engine.url


@pytest.mark.parametrize("page", list(PAGES))
async def test_python_blocks_run(
    page: str, monkeypatch: pytest.MonkeyPatch, redis_url: str, tls_engine: RedisEngine
) -> None:
    monkeypatch.setenv("GRIP_URL", "http://127.0.0.1:5561/?verify-iss=pushpin&verify-key=changeme")
    # A real module, as the code would be in an app (frameworks such as Litestar look up
    # a handler's module in sys.modules to resolve its annotations).
    module = types.ModuleType("readme")
    monkeypatch.setitem(sys.modules, "readme", module)
    namespace = module.__dict__
    monkeypatch.setenv("REDIS_URL", redis_url)
    # The TLS example's engine: its certificate signed by a private CA.
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", str(tls_engine.port))
    monkeypatch.setenv("REDIS_CA_FILE", str(tls_engine.ca_file))
    for number, block in enumerate(PAGES[page], 1):
        code = compile(block, f"{page} python block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, namespace)  # the project's own documentation
        if inspect.isawaitable(result):
            await result


@pytest.mark.server
async def test_readme_client_example_prints_the_quick_start_demos_messages(log_dir: Path) -> None:
    """The client example (Consuming streams from Python) against the quick start's demo, served
    as ``nox -s demo`` serves it, and the quick start's publish: it prints the message."""
    (block,) = [
        block for page_blocks in PAGES.values() for block in page_blocks if "async def follow(" in block
    ]
    printed: list[tuple[Any, ...]] = []
    namespace: dict[str, Any] = {"print": lambda *args: printed.append(args)}
    exec(compile(block, "the client example", "exec"), namespace)  # the project's own documentation
    published = {"event": "message", "data": {"user": "curl", "text": "hello"}}
    with run_server(
        "hypercorn-asyncio", "examples.raw_asgi:app", log_dir=log_dir, extra_args=["--workers", "0"]
    ) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:

            async def publish_until_printed() -> bool:  # publishes before it subscribed reach no one
                response = await client.post("/api/publish", json=published)
                assert response.status_code == 202, response.text
                return bool(printed)

            async with anyio.create_task_group() as tg:
                tg.start_soon(namespace["follow"], f"{server.base_url}/api/events", "a token")
                await wait_until(publish_until_printed, timeout=30)
                tg.cancel_scope.cancel()
    assert printed
    for event_id, data in printed:
        assert isinstance(event_id, str)
        assert data == {"user": "curl", "text": "hello"}


async def test_readme_example_streams_what_it_publishes() -> None:
    """The front page's example: a stream of ``GET /api/events`` gets what ``POST /api/publish``
    publishes; a body that is not JSON, or not an event, gets 400 and reaches no one."""
    (block,) = [block for block in PAGES["README.md"] if 'Route("/api/publish"' in block]
    namespace: dict[str, Any] = {}
    exec(compile(block, "README.md example", "exec"), namespace)  # the project's own README
    app, stream = namespace["app"], namespace["stream"]
    transport = httpx.ASGITransport(app=app)
    async with (
        open_stream(app, "/api/events") as response,
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        assert response.status == 200
        assert (await response.receive_event()).event == "stream-open"
        await stream.wait_subscribers(1, "chat")
        for bad in (b"not json", b'{"event": "a\\nb", "data": 1}', b"[1, 2]"):
            answer = await client.post("/api/publish", content=bad)
            assert answer.status_code == 400, answer.text
            assert answer.text.startswith("Bad event: ")
        answer = await client.post("/api/publish", json={"event": "message", "data": {"text": "hi"}})
        assert answer.status_code == 202, answer.text
        event = await response.receive_event()
        assert (event.event, event.json()) == ("message", {"text": "hi"})
    assert stream.statistics().events_published == 1
