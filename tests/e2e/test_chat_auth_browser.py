"""The chat example with login (examples/chat_auth) in headless Chromium, under real servers.

Two people log in through the page's form (an HttpOnly cookie with a short-lived JWT), each
sees the other join and leave (presence, and its join and leave events), and a private
message reaches only the one it is for. The same page served from another origin opens its
stream with a one-time ticket. The same people in Firefox ESR (a normal and a private window:
two cookie jars), where a visitor who has not logged in is refused the stream.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..support.firefox import Firefox
from ..support.servers import ROOT, Server, run_server
from .test_auth_browser import PageHandler, PageServer
from .test_browser import browser  # noqa: F401  (the fixture)
from .test_firefox import firefox  # noqa: F401  (the fixture)

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


def firefox_log_in(page: Firefox, app: Server, name: str) -> None:
    """In Firefox's current window, ``name`` logs in with the page's form; the stream opens."""
    page.navigate(f"{app.base_url}/")
    page.wait_for("document.getElementById('login').style.display === 'block'")
    page.type("input[name=name]", name)
    page.click("#login button")  # the form's POST, its redirect and the page's load are waited for
    page.wait_for("window.opened === 1")
    assert page.execute("return document.cookie;") == ""  # HttpOnly: no script reads the token


def firefox_online(page: Firefox, *names: str) -> None:
    expected = json.dumps(json.dumps(list(names), separators=(",", ":")))
    page.wait_for(f"JSON.stringify(window.online) === {expected}")


def firefox_send(page: Firefox, text: str, to: str = "") -> None:
    if to:  # the page lists whom it can write to once its /online answer is in: wait for that name
        page.wait_for(f"[...document.getElementById('to').options].some((o) => o.value === {json.dumps(to)})")
    page.execute("document.getElementById('to').value = arguments[0];", to)
    assert page.execute("return document.getElementById('to').value;") == to
    page.type("#text", text)
    page.click("#say button")


def firefox_fetch(page: Firefox, path: str, method: str = "GET") -> int:
    """The status of the page's ``fetch`` of ``path``, its cookies included."""
    status: int = page.command(
        "WebDriver:ExecuteAsyncScript",
        {
            "script": "const done = arguments[arguments.length - 1];"
            "fetch(arguments[0], {method: arguments[1], credentials: 'include'})"
            ".then((answer) => done(answer.status));",
            "args": [path, method],
        },
    )["value"]
    return status


def test_firefox_a_logged_in_user_streams_with_the_cookie_and_a_visitor_is_refused(
    firefox: Firefox,  # noqa: F811
    chat: tuple[Server, PageServer],
) -> None:
    app, _pages = chat
    main = firefox.command("WebDriver:GetWindowHandle")["value"]
    private = firefox.new_window(private=True)  # bob's cookies: apart from ann's
    try:
        # Not logged in: the page asks for a name, and the stream itself is refused.
        firefox.navigate(f"{app.base_url}/")
        firefox.wait_for("document.getElementById('login').style.display === 'block'")
        firefox.execute(
            "window.refused = null;"
            "const source = new EventSource('/events/ann', {withCredentials: true});"
            "source.onopen = () => { window.refused = false; };"
            "source.onerror = () => { if (source.readyState === EventSource.CLOSED) window.refused = true; };"
        )
        firefox.wait_for("window.refused !== null")
        assert firefox.execute("return window.refused;") is True
        assert firefox_fetch(firefox, "/events/ann") == 401

        firefox.switch_to(main)
        firefox_log_in(firefox, app, "ann")
        firefox_online(firefox, "ann")
        firefox.switch_to(private)
        firefox_log_in(firefox, app, "bob")
        assert firefox.execute("return document.getElementById('me').textContent;") == "bob"
        firefox_online(firefox, "ann", "bob")
        firefox.switch_to(main)
        assert firefox.execute("return document.getElementById('me').textContent;") == "ann"
        firefox.wait_for("window.lines.includes('bob joined')")
        firefox_online(firefox, "ann", "bob")

        firefox.switch_to(private)
        firefox_send(firefox, "for ann only", to="ann")
        firefox.wait_for("window.lines.includes('you to ann: for ann only')")  # the POST was answered
        firefox_send(firefox, "hello all")
        firefox.wait_for("window.lines.includes('bob: hello all')")  # through bob's own stream
        firefox.switch_to(main)
        firefox.wait_for("window.lines.includes('bob: hello all')")
        lines = firefox.execute("return window.lines;")
        assert "bob (to you): for ann only" in lines
        assert lines.index("bob (to you): for ann only") < lines.index("bob: hello all")
        firefox_send(firefox, "for bob only", to="bob")
        firefox.switch_to(private)
        firefox.wait_for("window.lines.includes('ann (to you): for bob only')")
        assert "bob (to you): for ann only" not in firefox.execute("return window.lines;")

        # bob logs out (the cookie is cleared) and opens the page again: no stream, a form to log in.
        assert firefox_fetch(firefox, "/logout", "POST") == 200  # its redirect to the page, followed
        firefox.navigate(f"{app.base_url}/")
        firefox.wait_for("document.getElementById('login').style.display === 'block'")
        assert firefox.execute("return window.opened;") == 0
        firefox.switch_to(main)
        firefox.wait_for("window.lines.includes('bob left')")
        firefox_online(firefox, "ann")
    finally:
        firefox.switch_to(private)
        firefox.close_window()
        firefox.switch_to(main)
        firefox.navigate(f"{app.base_url}/")
        firefox.command("WebDriver:DeleteAllCookies")  # the app's (127.0.0.1's)
        firefox.navigate("about:blank")  # ann's stream ends with her page


def test_firefox_the_page_on_another_origin_streams_with_a_one_time_ticket(
    firefox: Firefox,  # noqa: F811
    chat: tuple[Server, PageServer],
) -> None:
    app, pages = chat
    elsewhere = f"http://127.0.0.1:{pages.server_address[1]}/"
    main = firefox.command("WebDriver:GetWindowHandle")["value"]
    private = firefox.new_window(private=True)
    try:
        # Not logged in: the page on the other origin links to the app's, and gets no ticket.
        firefox.navigate(elsewhere)
        firefox.wait_for("document.getElementById('elsewhere').style.display === 'block'")
        assert firefox_fetch(firefox, f"{app.base_url}/ticket", "POST") == 401
        assert firefox.execute("return window.opened;") == 0

        firefox.switch_to(main)
        firefox_log_in(firefox, app, "ann")  # the cookie is set for the app's origin
        firefox.navigate(elsewhere)
        firefox.wait_for("window.opened === 1")
        assert "?ticket=" in firefox.execute("return window.source.url;")
        firefox.switch_to(private)
        firefox_log_in(firefox, app, "bob")
        firefox_send(firefox, "across origins", to="ann")
        firefox.wait_for("window.lines.includes('you to ann: across origins')")
        firefox.switch_to(main)
        firefox.wait_for("window.lines.includes('bob (to you): across origins')")
        firefox_online(firefox, "ann", "bob")
        firefox.switch_to(private)
        firefox.close_window()  # bob goes away: his stream ends
        firefox.switch_to(main)
        firefox.wait_for("window.lines.includes('bob left')")
        firefox_online(firefox, "ann")
    finally:
        if private in firefox.command("WebDriver:GetWindowHandles"):
            firefox.switch_to(private)
            firefox.close_window()
        firefox.switch_to(main)
        firefox.navigate(f"{app.base_url}/")
        firefox.command("WebDriver:DeleteAllCookies")  # the app's (127.0.0.1's)
        firefox.navigate("about:blank")
