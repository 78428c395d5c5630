"""The chat example with login (examples/chat_auth) in headless Chromium, under real servers.

Two people log in through the page's form (an HttpOnly cookie with a short-lived JWT), each
sees the other join and leave (presence, and its join and leave events), and a private
message reaches only the one it is for. The same page served from another origin opens its
stream with a one-time ticket.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.servers import ROOT, Server, run_server
from .test_auth_browser import PageHandler, PageServer
from .test_browser import browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.server

PAGE = (ROOT / "examples" / "chat_auth" / "page.html").read_text(encoding="utf-8")
WAIT = 15_000  # ms: a bound on each wait, not a delay


@pytest.fixture(params=["uvicorn", "hypercorn-trio"])
def chat(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[tuple[Server, PageServer]]:
    """The chat app (on asyncio or trio), and a server of its page on another origin it lets in."""
    with PageServer(("127.0.0.1", 0), PageHandler) as pages:
        thread = threading.Thread(target=pages.serve_forever, daemon=True)
        thread.start()
        env = {"CHAT_CORS_ORIGIN": f"http://127.0.0.1:{pages.server_address[1]}"}
        try:
            with run_server(request.param, "examples.chat_auth.app:app", env=env, log_dir=log_dir) as server:
                pages.html = PAGE.replace('const APP = "";', f"const APP = {server.base_url!r};").encode()
                yield server, pages
        finally:
            pages.shutdown()
            thread.join(10)


def log_in(browser: Any, app: Server, name: str) -> Any:  # noqa: F811
    """A browser of its own (cookies apart) where ``name`` logged in with the page's form."""
    page = browser.new_context().new_page()
    page.goto(f"{app.base_url}/")
    page.fill("input[name=name]", name)
    page.click("#login button")
    page.wait_for_function("window.opened === 1", timeout=WAIT)
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the token
    return page


def online(page: Any, *names: str) -> None:
    expected = json.dumps(json.dumps(list(names), separators=(",", ":")))  # a JS string literal
    page.wait_for_function(f"JSON.stringify(window.online) === {expected}", timeout=WAIT)


def send(page: Any, text: str, to: str = "") -> None:
    page.select_option("#to", to)  # "": everyone
    page.fill("#text", text)
    page.click("#say button")


def test_two_people_see_each_other_come_and_go_and_a_private_message_reaches_one(
    browser: Any,  # noqa: F811
    chat: tuple[Server, PageServer],
) -> None:
    app, _pages = chat
    ann = log_in(browser, app, "ann")
    online(ann, "ann")
    bob = log_in(browser, app, "bob")
    cy = log_in(browser, app, "cy")
    try:
        for page in (ann, bob, cy):
            online(page, "ann", "bob", "cy")  # bob and cy from the join events, or the list on opening
        ann.wait_for_function("window.lines.includes('bob joined')", timeout=WAIT)
        send(bob, "for ann only", to="ann")
        ann.wait_for_function("window.lines.includes('bob (to you): for ann only')", timeout=WAIT)
        send(bob, "hello all")
        for page in (ann, cy):
            page.wait_for_function("window.lines.includes('bob: hello all')", timeout=WAIT)
        # cy got the lobby message sent after the private one, on the same stream: not the private one.
        assert not any("for ann only" in line for line in cy.evaluate("window.lines"))
        bob.context.close()  # bob goes away: his stream ends
        for page in (ann, cy):
            page.wait_for_function("window.lines.includes('bob left')", timeout=WAIT)
            online(page, "ann", "cy")
    finally:
        for page in (ann, cy):
            page.context.close()


def test_the_page_on_another_origin_streams_with_a_one_time_ticket(
    browser: Any,  # noqa: F811
    chat: tuple[Server, PageServer],
) -> None:
    app, pages = chat
    ann = log_in(browser, app, "ann")  # the cookie is set for the app's origin
    elsewhere = ann.context.new_page()
    try:
        elsewhere.goto(f"http://127.0.0.1:{pages.server_address[1]}/")
        elsewhere.wait_for_function("window.opened === 1", timeout=WAIT)
        assert "?ticket=" in elsewhere.evaluate("window.source.url")
        bob = log_in(browser, app, "bob")
        elsewhere.wait_for_function("window.lines.includes('bob joined')", timeout=WAIT)
        online(elsewhere, "ann", "bob")
        send(bob, "across origins", to="ann")
        elsewhere.wait_for_function("window.lines.includes('bob (to you): across origins')", timeout=WAIT)
        bob.context.close()
        elsewhere.wait_for_function("window.lines.includes('bob left')", timeout=WAIT)
    finally:
        ann.context.close()
