"""eventstream.auth and eventstream.cors in real browsers (headless Chromium, Firefox ESR): a page on one
origin streams from the app on another with an HttpOnly cookie (``withCredentials``), a
ticket works once, and a stream whose token expires is resumed with a new ticket and the
last id, missing nothing.

The page is served by a small HTTP server of the test on 127.0.0.1: its origin differs from
the app's by its port, so the page is cross-origin but same-site, and the cookie set for
127.0.0.1 goes with ``withCredentials``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.firefox import Firefox
from ..support.servers import Server, run_server
from ..support.tokens import hs256
from .test_browser import browser  # noqa: F401  (the fixture)
from .test_firefox import firefox  # noqa: F401  (the fixture)

pytestmark = pytest.mark.server

PAGE = """<!doctype html><meta charset="utf-8"><title>auth</title><script>
window.received = []; window.opened = 0; window.expired = 0; window.failed = 0; window.lastId = "";
window.go = null;
function open(url, withCredentials = true) {   // with a ticket: no cookie (it would decide)
  const source = new EventSource(url, {withCredentials});
  source.addEventListener("stream-open", () => { window.opened += 1; });
  source.onmessage = (event) => { window.received.push(event.data); window.lastId = event.lastEventId; };
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) window.failed += 1; };
  source.addEventListener("stream-expired", async () => {
    source.close();
    window.expired += 1;
    await new Promise((resolve) => { window.go = resolve; });    // the test publishes meanwhile
    const ticket = await (await fetch(APP + "/ticket", {method: "POST", credentials: "include"})).text();
    const last = encodeURIComponent(window.lastId);
    open(`${STREAM}?ticket=${encodeURIComponent(ticket)}&lastEventId=${last}`, false);
  });
  return source;
}
async function ticket() {
  return await (await fetch(APP + "/ticket", {method: "POST", credentials: "include"})).text();
}
</script>"""


class PageServer(ThreadingHTTPServer):
    html = b""


class PageHandler(BaseHTTPRequestHandler):
    server: PageServer

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(self.server.html)))
        self.end_headers()
        self.wfile.write(self.server.html)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def origins(log_dir: Path) -> Iterator[tuple[PageServer, Server]]:
    """The page's server (its own origin) and the app, which lets that origin in with credentials."""
    with PageServer(("127.0.0.1", 0), PageHandler) as pages:
        thread = threading.Thread(target=pages.serve_forever, daemon=True)
        thread.start()
        env = {"AUTH_CORS_ORIGIN": f"http://127.0.0.1:{pages.server_address[1]}"}
        try:
            with run_server(
                "hypercorn-asyncio", "tests.apps.auth_app:app", env=env, log_dir=log_dir
            ) as server:
                yield pages, server
        finally:
            pages.shutdown()
            thread.join(10)


def open_page(browser: Any, pages: PageServer, app: Server, user: str, token: str) -> Any:  # noqa: F811
    context = browser.new_context()
    context.add_cookies(
        [
            {
                "name": "session",
                "value": token,
                "domain": "127.0.0.1",
                "path": "/",
                "httpOnly": True,
                "sameSite": "Lax",
            }
        ]
    )
    page = context.new_page()
    html = PAGE.replace("APP", repr(app.base_url)).replace(
        "STREAM", repr(f"{app.base_url}/events/user-{user}")
    )
    pages.html = html.encode()
    page.goto(f"http://127.0.0.1:{pages.server_address[1]}/")
    return page


def publish(app: Server, user: str, values: list[int]) -> None:
    answer = httpx.post(
        f"{app.base_url}/publish", json={"channel": f"user-{user}", "values": values}, timeout=10
    )
    assert answer.status_code == 200, answer.text


def test_a_cross_origin_page_streams_with_an_httponly_cookie(
    browser: Any,  # noqa: F811
    origins: tuple[PageServer, Server],
) -> None:
    pages, app = origins
    page = open_page(browser, pages, app, "alice", hs256(sub="alice"))
    try:
        assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's script cannot read it
        page.evaluate(f"window.source = open({f'{app.base_url}/events/user-alice'!r})")
        page.wait_for_function("window.opened === 1", timeout=15_000)
        publish(app, "alice", [1, 2])
        page.wait_for_function("window.received.length === 2", timeout=15_000)
        assert page.evaluate("window.received") == ["1", "2"]
        # Another user's channel: 403, and the browser gives up (a stream answered with an error).
        page.evaluate(f"open({f'{app.base_url}/events/user-bob'!r})")
        page.wait_for_function("window.failed === 1", timeout=15_000)
    finally:
        page.context.close()


def test_a_ticket_works_once_and_an_expired_stream_resumes_with_a_new_one(
    browser: Any,  # noqa: F811
    origins: tuple[PageServer, Server],
) -> None:
    pages, app = origins
    page = open_page(browser, pages, app, "carol", hs256(sub="carol", lifetime=4))
    stream = f"{app.base_url}/events/user-carol"
    try:
        ticket = page.evaluate("ticket()")
        page.evaluate(
            f"window.source = open({stream!r} + '?ticket=' + encodeURIComponent({ticket!r}), false)"
        )
        page.wait_for_function("window.opened === 1", timeout=15_000)
        # The same ticket again: 401, the browser gives up.
        page.evaluate(f"open({stream!r} + '?ticket=' + encodeURIComponent({ticket!r}), false)")
        page.wait_for_function("window.failed === 1", timeout=15_000)
        publish(app, "carol", [1, 2])
        page.wait_for_function("window.received.length === 2", timeout=15_000)
        # A fresh token for the renewal; the open stream still ends with the old one.
        page.context.add_cookies(
            [
                {
                    "name": "session",
                    "value": hs256(sub="carol"),
                    "domain": "127.0.0.1",
                    "path": "/",
                    "httpOnly": True,
                }
            ]
        )
        page.wait_for_function("window.expired === 1", timeout=15_000)
        publish(app, "carol", [3])  # while the page has no stream
        page.evaluate("window.go()")
        page.wait_for_function("window.opened === 2", timeout=15_000)
        publish(app, "carol", [4])
        page.wait_for_function("window.received.length === 4", timeout=15_000)
        assert page.evaluate("window.received") == ["1", "2", "3", "4"]
        assert page.evaluate("window.failed") == 1
    finally:
        page.context.close()


def test_firefox_streams_cross_origin_with_an_httponly_cookie_and_refuses_a_used_ticket(
    firefox: Firefox,  # noqa: F811
    origins: tuple[PageServer, Server],
) -> None:
    """The same flows in Firefox ESR (driven through Marionette)."""
    pages, app = origins
    stream = f"{app.base_url}/events/user-erin"
    pages.html = PAGE.replace("APP", repr(app.base_url)).replace("STREAM", repr(stream)).encode()
    firefox.navigate(f"http://127.0.0.1:{pages.server_address[1]}/")
    cookie = {"name": "session", "value": hs256(sub="erin"), "path": "/", "httpOnly": True, "sameSite": "Lax"}
    firefox.command("WebDriver:AddCookie", {"cookie": cookie})
    assert firefox.execute("return document.cookie;") == ""
    firefox.execute(f"window.source = open({stream!r});")
    firefox.wait_for("window.opened === 1")
    publish(app, "erin", [1])
    firefox.wait_for("window.received.length === 1")
    ticket = firefox.command(
        "WebDriver:ExecuteAsyncScript",
        {"script": "const done = arguments[arguments.length - 1]; ticket().then(done);", "args": []},
    )["value"]
    for _ in range(2):
        firefox.execute(f"open({stream!r} + '?ticket=' + encodeURIComponent({ticket!r}), false);")
    firefox.wait_for("window.opened === 2 && window.failed === 1")
    publish(app, "erin", [2])
    firefox.wait_for("window.received.length === 3")  # two streams, one event each
    assert sorted(firefox.execute("return window.received;")) == ["1", "2", "2"]
    firefox.execute("window.source.close();")
