"""A real browser's EventSource (headless Chromium from Debian) against the chat example.

Skipped when Chromium or Playwright is missing, except under CI, where that fails the run.
Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.pushpin import SIG_ISS, SIG_KEY, require_pushpin, run_pushpin
from ..support.redis_engine import require_redis, run_redis
from ..support.relay import relay
from ..support.servers import ROOT, free_port, run_server, stop_process

pytestmark = pytest.mark.server

CHROMIUM = os.environ.get("EVENTSTREAM_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
# The browser must not try to reach the network (this machine has none but the loopback).
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
]  # fmt: skip


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        print(f"browser: Chromium {instance.version}")
        yield instance
        instance.close()


@pytest.fixture(params=["hypercorn-asyncio", "hypercorn-trio"])
def chat(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[str]:
    with run_server(request.param, "examples.raw_asgi:app", log_dir=log_dir) as server:
        yield server.base_url


def publish(base_url: str, text: str, channel: str = "test") -> None:
    response = httpx.post(
        f"{base_url}/api/publish",
        json={"channel": channel, "event": "message", "data": {"user": "test", "text": text}},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def messages(page: Any) -> list[str]:
    texts: list[str] = page.eval_on_selector_all("#messages li", "items => items.map(i => i.textContent)")
    return texts


def wait_for_messages(page: Any, count: int) -> list[str]:
    page.wait_for_function(f"document.querySelectorAll('#messages li').length >= {count}", timeout=15_000)
    return messages(page)


def wait_connected(page: Any) -> None:
    page.wait_for_function("document.getElementById('status').textContent === 'connected'", timeout=15_000)


def screenshot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_page_shows_published_messages_in_order(
    browser: Any, chat: str, request: pytest.FixtureRequest
) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{chat}/")
        wait_connected(page)  # the page saw stream-open
        for text in ("first", "second", "third"):
            publish(chat, text)
        assert wait_for_messages(page, 3) == ["test:first", "test:second", "test:third"]
        # A person types a message and presses Send: it comes back through the stream.
        page.fill("input[name=text]", "typed in the page")
        page.click("button")
        assert wait_for_messages(page, 4)[-1] == "guest:typed in the page"
        screenshot(page, f"chat-{request.node.callspec.id}")
    finally:
        page.close()


def test_page_on_two_channels_receives_both(browser: Any, chat: str) -> None:
    page = browser.new_page()
    try:
        page.goto(f"{chat}/?channel=red&channel=blue")
        wait_connected(page)
        publish(chat, "to red", "red")
        publish(chat, "to blue", "blue")
        publish(chat, "to nobody", "green")
        assert wait_for_messages(page, 2) == ["test:to red", "test:to blue"]
    finally:
        page.close()


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_cut_connection_resumes_then_restart_resets(browser: Any, kind: str, log_dir: Path) -> None:
    page = browser.new_page()
    try:
        with run_server(kind, "examples.raw_asgi:app", log_dir=log_dir) as server:
            with relay(server.port) as cut:
                page.goto(f"http://127.0.0.1:{cut.port}/")
                wait_connected(page)
                publish(server.base_url, "before the cut")
                assert wait_for_messages(page, 1) == ["test:before the cut"]
                cut.stop()  # the browser's connection drops; it retries every second (retry: 1000)
                page.wait_for_function("document.getElementById('status').textContent !== 'connected'")
                for text in ("during the cut 1", "during the cut 2", "during the cut 3"):
                    publish(server.base_url, text)
                cut.start()
                wait_connected(page)
                shown = wait_for_messages(page, 4)
                during = [f"test:during the cut {i}" for i in (1, 2, 3)]
                assert shown == ["test:before the cut", *during]
                publish(server.base_url, "after the cut")
                assert wait_for_messages(page, 5)[-1] == "test:after the cut"
                assert len(messages(page)) == 5  # each once
                screenshot(page, f"resume-{kind}")
                cut.stop()
        # The server restarts: its in-memory history is gone, the page is told to reset.
        with run_server(kind, "examples.raw_asgi:app", log_dir=log_dir) as restarted:
            cut.target = restarted.port
            cut.start()
            try:
                shown = wait_for_messages(page, 6)
                assert shown[-1] == "(some messages were missed)"
                publish(restarted.base_url, "after the restart")
                assert wait_for_messages(page, 7)[-1] == "test:after the restart"
                screenshot(page, f"reset-{kind}")
            finally:
                cut.stop()
    finally:
        page.close()


def test_page_through_pushpin_in_front_of_two_processes(browser: Any, log_dir: Path) -> None:
    require_pushpin()
    control, http = free_port(), free_port()
    env = {"GRIP_URL": f"http://127.0.0.1:{control}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"}
    with (
        run_server("hypercorn-asyncio", "examples.grip.app:app", env=env, log_dir=log_dir) as first,
        run_server("hypercorn-trio", "examples.grip.app:app", env=env, log_dir=log_dir) as second,
        run_pushpin(first.port, http_port=http, control_port=control) as pushpin,
    ):
        pushpin.wait_holds("/api/events")
        page = browser.new_page()
        try:
            page.goto(f"{pushpin.url}/")
            wait_connected(page)
            publish(second.base_url, "from the second process")
            publish(first.base_url, "from the first process")
            assert wait_for_messages(page, 2) == [
                "test:from the second process",
                "test:from the first process",
            ]
            screenshot(page, "pushpin")
        finally:
            page.close()


def test_page_through_a_round_robin_relay_while_processes_restart(browser: Any, log_dir: Path) -> None:
    # Three app processes share a broker behind a round-robin relay; each is
    # restarted in turn (the page's stream moves to another one). The page
    # shows every message once, in order, and is never told to reset.
    require_redis()
    kinds = ["hypercorn-asyncio", "hypercorn-trio", "uvicorn"]
    with run_redis() as engine, contextlib.ExitStack() as stack:
        env = {"REDIS_URL": engine.url}

        def start(kind: str) -> Any:
            return stack.enter_context(run_server(kind, "examples.raw_asgi:app", env=env, log_dir=log_dir))

        servers = [start(kind) for kind in kinds]
        with relay([server.port for server in servers]) as balancer:
            page = browser.new_page()
            try:
                page.goto(f"http://127.0.0.1:{balancer.port}/")
                wait_connected(page)
                expected: list[str] = []
                for turn, kind in enumerate(kinds):
                    for index, server in enumerate(servers):
                        publish(server.base_url, f"turn {turn} via {index}")
                        expected.append(f"test:turn {turn} via {index}")
                    assert wait_for_messages(page, len(expected)) == expected
                    # Restart one process: new connections go to the others meanwhile.
                    balancer.set_targets([s.port for i, s in enumerate(servers) if i != turn])
                    balancer.stop()  # cut the page's stream, wherever it was
                    balancer.start()
                    stop_process(servers[turn].process)
                    survivor = servers[(turn + 1) % len(servers)]
                    publish(survivor.base_url, f"while {kind} restarts")  # the page is away: resumed later
                    expected.append(f"test:while {kind} restarts")
                    servers[turn] = start(kind)
                    balancer.set_targets([server.port for server in servers])
                    wait_connected(page)
                    assert wait_for_messages(page, len(expected)) == expected
                for index, server in enumerate(servers):
                    publish(server.base_url, f"after the restarts via {index}")
                    expected.append(f"test:after the restarts via {index}")
                assert wait_for_messages(page, len(expected)) == expected
                assert "(some messages were missed)" not in messages(page)
                screenshot(page, "broker-relay")
            finally:
                page.close()
