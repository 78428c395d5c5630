"""A second real browser: Debian's Firefox ESR (headless, loopback only) against the chat example.

Driven through Firefox's own Marionette protocol (tests/support/firefox.py). Skipped when Firefox
is missing, except under CI, where that fails the run. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..support.firefox import FIREFOX, Firefox, run_firefox
from ..support.relay import relay
from ..support.servers import ROOT, run_server

pytestmark = pytest.mark.server

ARTIFACTS = ROOT / "test-artifacts"
MESSAGES = "Array.from(document.querySelectorAll('#messages li'), item => item.textContent)"


@pytest.fixture(scope="module")
def firefox(log_dir: Path) -> Iterator[Firefox]:
    if not os.path.exists(FIREFOX):
        message = f"Firefox not found at {FIREFOX} (apt-get install firefox-esr)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with run_firefox(log_dir / "firefox.log") as browser:
        print(f"browser: {browser.version}")
        yield browser


def publish(base_url: str, text: str, channel: str = "test") -> None:
    response = httpx.post(
        f"{base_url}/api/publish",
        json={"channel": channel, "event": "message", "data": {"user": "test", "text": text}},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def messages(page: Firefox) -> list[str]:
    shown: list[str] = page.execute(f"return {MESSAGES};")
    return shown


def wait_for_messages(page: Firefox, count: int) -> list[str]:
    page.wait_for(f"document.querySelectorAll('#messages li').length >= {count}")
    return messages(page)


def wait_connected(page: Firefox) -> None:
    page.wait_for("document.getElementById('status').textContent === 'connected'")


def screenshot(page: Firefox, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(ARTIFACTS / f"firefox-{name}.png")


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_firefox_shows_published_and_typed_messages(firefox: Firefox, kind: str, log_dir: Path) -> None:
    with run_server(kind, "examples.raw_asgi:app", log_dir=log_dir) as server:
        firefox.navigate(f"{server.base_url}/?channel=ff")
        wait_connected(firefox)
        for text in ("first", "second", "third"):
            publish(server.base_url, text, "ff")
        publish(server.base_url, "elsewhere", "other")
        assert wait_for_messages(firefox, 3) == ["test:first", "test:second", "test:third"]
        # Typing and sending from the page: the message comes back through the stream.
        firefox.execute(
            "const form = document.getElementById('send');"
            "form.text.value = 'typed in Firefox'; form.requestSubmit();"
        )
        assert wait_for_messages(firefox, 4)[-1] == "guest:typed in Firefox"
        assert len(messages(firefox)) == 4
        screenshot(firefox, f"chat-{kind}")


@pytest.mark.parametrize("kind", ["hypercorn-asyncio", "hypercorn-trio"])
def test_firefox_reconnects_after_a_cut_and_shows_missed_messages_once(
    firefox: Firefox, kind: str, log_dir: Path
) -> None:
    with run_server(kind, "examples.raw_asgi:app", log_dir=log_dir) as server:
        with relay(server.port) as cut:
            firefox.navigate(f"http://127.0.0.1:{cut.port}/")
            wait_connected(firefox)
            publish(server.base_url, "before the cut")
            assert wait_for_messages(firefox, 1) == ["test:before the cut"]
            cut.stop()  # Firefox's connection drops; it retries every second (retry: 1000)
            firefox.wait_for("document.getElementById('status').textContent !== 'connected'")
            for text in ("during the cut 1", "during the cut 2", "during the cut 3"):
                publish(server.base_url, text)
            cut.start()
            wait_connected(firefox)
            during = [f"test:during the cut {i}" for i in (1, 2, 3)]
            assert wait_for_messages(firefox, 4) == ["test:before the cut", *during]
            publish(server.base_url, "after the cut")
            assert wait_for_messages(firefox, 5)[-1] == "test:after the cut"
            assert messages(firefox) == ["test:before the cut", *during, "test:after the cut"]  # each once
            screenshot(firefox, f"resume-{kind}")
            cut.stop()
    # The server restarts: its in-memory history is gone, the page is told to reset.
    with run_server(kind, "examples.raw_asgi:app", log_dir=log_dir) as restarted:
        cut.target = restarted.port
        cut.start()
        try:
            assert wait_for_messages(firefox, 6)[-1] == "(some messages were missed)"
            publish(restarted.base_url, "after the restart")
            assert wait_for_messages(firefox, 7)[-1] == "test:after the restart"
            assert len(messages(firefox)) == 7
            screenshot(firefox, f"reset-{kind}")
        finally:
            cut.stop()
