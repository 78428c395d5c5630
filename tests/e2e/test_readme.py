"""Every Python code block of the README runs, in order, in one namespace (top-level await allowed)."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ..support.helpers import wait_until
from ..support.redis_engine import run_redis
from ..support.servers import ROOT, run_server

pytestmark = pytest.mark.anyio

BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 10


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private engine for the broker's examples (REDIS_URL)."""
    with run_redis() as engine:
        yield engine.url


async def test_readme_python_blocks_run(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("GRIP_URL", "http://127.0.0.1:5561/?verify-iss=pushpin&verify-key=changeme")
    # A real module, as the code would be in an app (frameworks such as Litestar look up
    # a handler's module in sys.modules to resolve its annotations).
    module = types.ModuleType("readme")
    monkeypatch.setitem(sys.modules, "readme", module)
    namespace = module.__dict__
    monkeypatch.setenv("REDIS_URL", redis_url)
    for number, block in enumerate(BLOCKS, 1):
        code = compile(
            block, f"README.md python block {number}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(code, namespace)  # the project's own README
        if inspect.isawaitable(result):
            await result


@pytest.mark.server
async def test_readme_client_example_prints_the_quick_start_demos_messages(log_dir: Path) -> None:
    """The client example (Consuming streams from Python) against the quick start's demo, served
    as ``nox -s demo`` serves it, and the quick start's publish: it prints the message."""
    (block,) = [block for block in BLOCKS if "async def follow(" in block]
    printed: list[tuple[Any, ...]] = []
    namespace: dict[str, Any] = {"print": lambda *args: printed.append(args)}
    exec(compile(block, "README.md client example", "exec"), namespace)  # the project's own README
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
