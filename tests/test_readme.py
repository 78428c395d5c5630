"""Every Python code block of the README runs, in order, in one namespace (top-level await allowed)."""

from __future__ import annotations

import ast
import inspect
import re
import sys
import types
from collections.abc import Iterator

import pytest

from .redis_engine import run_redis
from .servers import ROOT

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
