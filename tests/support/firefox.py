"""Debian's Firefox ESR, headless on a fresh profile, driven through its built-in Marionette protocol.

Playwright cannot drive Debian's Firefox, and geckodriver is not packaged in Debian
bookworm; Marionette is part of Firefox itself (``-marionette``), so nothing is
downloaded. The protocol is JSON over TCP, each message framed as ``<length>:<json>``:
a command is ``[0, id, name, params]``, its answer ``[1, id, error, result]``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FIREFOX = os.environ.get("EVENTSTREAM_FIREFOX", "/usr/bin/firefox-esr")

#: Nothing but the loopback: no updates, telemetry, studies, captive-portal or
#: connectivity probes, Safe Browsing lists, remote settings or prefetching.
PREFS: dict[str, object] = {
    "marionette.port": 0,  # any free port; Firefox writes it to MarionetteActivePort
    "app.update.auto": False,
    "app.update.enabled": False,
    "app.update.disabledForTesting": True,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.backup.scheduled.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.provider.google4.updateURL": "",
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.page": 0,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.policy.firstRunURL": "",
    "extensions.blocklist.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.prefetch-next": False,
    "network.proxy.type": 0,
    "services.settings.server": "http://127.0.0.1:9/",  # remote settings: a closed port
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.unified": False,
}


class MarionetteError(Exception):
    """Firefox answered a command with an error."""


class Firefox:
    """One Marionette session: navigate, click and type, run scripts, wait for conditions, open
    windows (a private one has cookies of its own), take screenshots."""

    def __init__(self, sock: socket.socket, version: str) -> None:
        self._sock = sock
        self._ids = 0
        self.version = version

    @classmethod
    def connect(cls, port: int) -> Firefox:
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        hello = _read_message(sock)
        if hello.get("marionetteProtocol") != 3:
            raise MarionetteError(f"unexpected Marionette greeting {hello!r}")
        browser = cls(sock, "")
        capabilities = browser.command("WebDriver:NewSession", {"capabilities": {}})["capabilities"]
        browser.version = f"{capabilities['browserName']} {capabilities['browserVersion']}"
        return browser

    def command(self, name: str, params: dict[str, Any] | None = None) -> Any:
        self._ids += 1
        data = json.dumps([0, self._ids, name, params or {}]).encode()
        self._sock.sendall(str(len(data)).encode() + b":" + data)
        kind, answer_id, error, result = _read_message(self._sock)
        if kind != 1 or answer_id != self._ids:
            raise MarionetteError(f"unexpected answer {[kind, answer_id]!r} to command {self._ids}")
        if error is not None:
            raise MarionetteError(f"{name}: {error.get('error')}: {error.get('message')}")
        return result

    def navigate(self, url: str) -> None:
        self.command("WebDriver:Navigate", {"url": url})

    def execute(self, script: str, *args: object) -> Any:
        return self.command("WebDriver:ExecuteScript", {"script": script, "args": list(args)})["value"]

    def element(self, selector: str) -> str:
        """The id of the first element matching the CSS ``selector``.

        Raises:
            MarionetteError: no such element.
        """
        found = self.command("WebDriver:FindElement", {"using": "css selector", "value": selector})["value"]
        return str(next(iter(found.values())))  # {"element-6066-11e4-a52e-4f735466cecf": id}

    def click(self, selector: str) -> None:
        """Click the element as a user would; a navigation it starts is waited for (page load)."""
        self.command("WebDriver:ElementClick", {"id": self.element(selector)})

    def type(self, selector: str, text: str) -> None:
        """Type ``text`` into the element, key by key."""
        self.command("WebDriver:ElementSendKeys", {"id": self.element(selector), "text": text})

    def new_window(self, *, private: bool = False) -> str:
        """Open a window and switch to it; ``private``: a private window, with cookies of its own."""
        handle = str(self.command("WebDriver:NewWindow", {"type": "window", "private": private})["handle"])
        self.switch_to(handle)
        return handle

    def switch_to(self, handle: str) -> None:
        """Send the next commands to the window ``handle`` (and focus it)."""
        self.command("WebDriver:SwitchToWindow", {"handle": handle, "focus": True})

    def close_window(self) -> None:
        """Close the current window; switch to another with :meth:`switch_to` next."""
        self.command("WebDriver:CloseWindow")

    def wait_for(self, condition: str, timeout: float = 15.0) -> None:
        """Wait in the page until the JavaScript expression ``condition`` is true.

        Raises:
            MarionetteError: ``timeout`` seconds went by first (Marionette's script timeout).
        """
        self.command("WebDriver:SetTimeouts", {"script": int(timeout * 1000)})
        script = (
            "const done = arguments[arguments.length - 1];"
            f"(function poll() {{ if ({condition}) done(true); else setTimeout(poll, 20); }})();"
        )
        self.command("WebDriver:ExecuteAsyncScript", {"script": script, "args": []})

    def screenshot(self, path: Path) -> None:
        encoded = self.command("WebDriver:TakeScreenshot", {"full": True})["value"]
        path.write_bytes(base64.b64decode(encoded))

    def close(self) -> None:
        with contextlib.suppress(OSError, MarionetteError):
            self.command("Marionette:Quit", {"flags": ["eForceQuit"]})
        self._sock.close()


def _read_message(sock: socket.socket) -> Any:
    header = b""
    while not header.endswith(b":"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("Marionette closed the connection")
        header += byte
        if len(header) > 12:
            raise MarionetteError(f"bad Marionette frame header {header!r}")
    remaining = int(header[:-1])
    body = bytearray()
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise ConnectionError("Marionette closed the connection")
        body += chunk
        remaining -= len(chunk)
    return json.loads(body)


@contextlib.contextmanager
def run_firefox(log_path: Path, ready_timeout: float = 60.0) -> Iterator[Firefox]:
    """Start headless Firefox on a fresh temporary profile; stop it (and its children) on exit."""
    if not (os.path.exists(FIREFOX) or shutil.which(FIREFOX)):
        raise FileNotFoundError(FIREFOX)
    with tempfile.TemporaryDirectory(prefix="eventstream-firefox-") as profile:
        user_js = "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in PREFS.items())
        Path(profile, "user.js").write_text(user_js)
        port_file = Path(profile, "MarionetteActivePort")
        env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [FIREFOX, "-headless", "-no-remote", "-profile", profile, "-marionette", "about:blank"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: the content processes stop with it
            )
        try:
            deadline = time.monotonic() + ready_timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Firefox did not start; its log:\n{log_path.read_text()}")
                time.sleep(0.05)  # polling for the port file, bounded by the deadline
            browser = Firefox.connect(int(port_file.read_text()))
            try:
                yield browser
            finally:
                browser.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever is left of its process group
            process.wait(10)
