"""The shell commands of the README and the documentation pages, run as written on this machine (Debian),
in fresh virtual environments.

``COMMANDS`` lists every command line of their ``sh`` blocks (comments
stripped) with how it is checked here; ``test_every_command_is_accounted_for``
fails when the pages and the list drift apart. The other tests copy the
checkout (its tracked and new files) to a temporary directory, create a
virtual environment there with the README's command, install with pip from
the package index (network), and run the commands with ``bash`` in the
activated environment. Only the README's fixed ports (8000, 7999, 5561, 8001,
8002, 6390) are replaced by free ones, and servers that the README leaves in the
foreground get a bind option; everything else is run as written.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from eventstream import NEED_DATA, ServerSentEvent, SSEDecoder

from ..support.documents import DOCUMENTS, blocks
from ..support.pushpin import require_pushpin
from ..support.servers import ROOT, free_port, stop_process

pytestmark = pytest.mark.server

RUN = "run"
#: Every command line of the sh blocks of the README and the documentation pages, and how it is checked.
COMMANDS = {
    "apt-get install -y python3-venv curl": (
        "not run (it changes the system); test_debian_tools checks what it provides"
    ),
    "python3 -m venv .venv && . .venv/bin/activate": RUN,
    "python3 -m pip install nox && python3 -m nox -s demo": RUN,
    """curl -X POST http://127.0.0.1:8000/api/publish -d '{"event": "message", "data": {"user": "curl", "text": "hello"}}'""": RUN,  # noqa: E501
    "python3 -m pip install .": RUN,
    "python3 -m pip install -e .": RUN,
    "python3 -m pip install -e '.[examples]'": RUN,
    "python3 -m pip install -e '.[django]'": RUN,
    "python3 -m pip install build && python3 -m build": RUN,
    "python3 -m pip install dist/eventstream-*.whl": RUN,
    "hypercorn --workers 0 examples.raw_asgi:app": RUN,
    "hypercorn --workers 0 -k trio examples.starlette_app:app": RUN,
    "uvicorn examples.fastapi_app:app": RUN,
    """curl -X POST http://127.0.0.1:8000/api/publish -d '{"event": "message", "data": {"text": "hi"}}'""": RUN,  # noqa: E501
    "hypercorn --workers 0 examples.pipe:app": RUN,
    "curl -N http://127.0.0.1:8000/api/events": RUN,
    "apt-get install -y pushpin redis-server": (
        "not run (root); require_pushpin checks pushpin, condure and zurl, the walkthrough runs redis-server"
    ),
    "pushpin --config examples/grip/pushpin.conf &": RUN,
    "redis-server --bind 127.0.0.1 --port 6390 --save '' --appendonly no &": RUN,
    "python3 -m pip install -e '.[examples,valkey]'": RUN,
    "export GRIP_URL='http://127.0.0.1:5561/?verify-iss=pushpin&verify-key=changeme'": RUN,
    "export REDIS_URL='redis://127.0.0.1:6390/0'": RUN,
    "hypercorn --workers 0 examples.grip.app:app --bind 127.0.0.1:8001 &": RUN,
    "hypercorn --workers 0 examples.grip.app:app --bind 127.0.0.1:8002 &": RUN,
    """curl -X POST http://127.0.0.1:8002/api/publish -d '{"event": "message", "data": {"text": "hi"}}'""": RUN,  # noqa: E501
    "hypercorn --certfile cert.pem --keyfile key.pem --bind 0.0.0.0:443 app:app": (
        "not run as written (port 443 needs root, cert.pem is yours): tests/e2e/test_http2.py runs "
        "hypercorn with the same --certfile/--keyfile flags, a test certificate and a free port"
    ),
    "hypercorn -k trio --certfile cert.pem --keyfile key.pem --bind 0.0.0.0:443 app:app": (
        "not run as written: tests/e2e/test_http2.py runs the trio worker with the same flags"
    ),
    "python3 -m pip install '.[valkey]'": RUN,
    "python3 -m pip install '.[prometheus]'": (
        "not run: the test environment gets prometheus-client from the test dependency group "
        "(pyproject.toml), and tests/e2e/test_prometheus.py scrapes it with a real Prometheus"
    ),
    "apt-get install redis-server": (
        "not run (root); .ci/run installs it and tests/support/redis_engine.py runs private instances"
    ),
    "python3 -m pip install -e '.[valkey]' uvicorn": RUN,
    "REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.raw_asgi:app --workers 4": (
        "not run as written (6379 is the system's engine): tests/e2e/test_broker_processes.py runs "
        "this command with REDIS_URL pointing at a private engine on a free port"
    ),
    "hypercorn --workers 0 --bind 127.0.0.1:8001 examples.raw_asgi:app &": (
        "not run as written (fixed ports): tests/e2e/test_deploy.py runs two single-process servers on "
        "free ports, each scraped by a real Prometheus, and sums them in PromQL"
    ),
    "hypercorn --workers 0 --bind 127.0.0.1:8002 examples.raw_asgi:app &": (
        "not run as written: see the line before (tests/e2e/test_deploy.py)"
    ),
    "uvicorn examples.chat_auth.app:app": (
        "not run as written (port 8000): tests/e2e/test_chat_auth_browser.py runs the same app under "
        "uvicorn (and hypercorn -k trio) on a free port and drives its page in Chromium"
    ),
    "CHAT_CORS_ORIGIN=http://127.0.0.1:8001 uvicorn examples.chat_auth.app:app": (
        "not run as written (fixed ports): tests/e2e/test_chat_auth_browser.py runs the app with "
        "CHAT_CORS_ORIGIN set to the origin of a page server on a free port, and the page there uses a ticket"
    ),
    "python3 -m nox -s tests": "not run: it is this test suite",
    "python3 -m nox -s unit": "not run: tests/unit, a part of this test suite",
    "python3 -m nox -s lint typing": "not run here: .ci/run runs it",
    "python3 -m nox -s docs verifytypes": "not run here: .ci/run runs it",
    "python3 -m nox -s bench": (
        "not run: about 45 minutes; tests/e2e/test_benchmarks.py runs the harness briefly"
    ),
}
#: How long one install step may take (pip downloads from the package index).
INSTALL_TIMEOUT = 600


def readme_commands() -> list[str]:
    """Every command line of the ``sh`` blocks of the README and the documentation pages."""
    commands = []
    for block in (block for document in DOCUMENTS for block in blocks(document, "sh")):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def test_every_command_is_accounted_for() -> None:
    assert set(readme_commands()) == set(COMMANDS)


def test_debian_tools() -> None:
    """What ``apt-get install python3-venv curl`` brings: a venv with pip, and curl."""
    assert shutil.which("curl") is not None
    assert subprocess.run(["python3", "-c", "import venv, ensurepip"], check=False).returncode == 0


@dataclass
class Checkout:
    """A copy of the checkout with the README's virtual environment in ``.venv``."""

    path: Path

    def bash(
        self, command: str, *, env: Mapping[str, str] | None = None, timeout: float = INSTALL_TIMEOUT
    ) -> str:
        """Run ``command`` in the activated environment; return its output."""
        result = subprocess.run(
            ["bash", "-c", f". .venv/bin/activate && {command}"],
            cwd=self.path, env=clean_env(env), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def start(
        self, command: str, *, env: Mapping[str, str] | None = None, log: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``command`` (a server) in its own process group; its output goes to ``log``."""
        with open(log, "wb") as out:
            return subprocess.Popen(
                ["bash", "-c", f". .venv/bin/activate && {command}"],
                cwd=self.path, env=clean_env(env), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Nothing of this test run leaks in: no PYTHONPATH to the source tree, no outer venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith("/work/venv")
    )
    return {**env, **(extra or {})}


def copy_checkout(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def new_checkout(tmp: Path) -> Checkout:
    path = copy_checkout(tmp / "eventstream")
    result = subprocess.run(
        ["bash", "-c", "python3 -m venv .venv && . .venv/bin/activate"],
        cwd=path, env=clean_env(), capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return Checkout(path)


@pytest.fixture(scope="module")
def examples_checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    """A checkout whose environment has ``pip install -e '.[examples]'``."""
    checkout = new_checkout(tmp_path_factory.mktemp("readme"))
    checkout.bash("python3 -m pip install -e '.[examples]'")
    return checkout


def adapt(command: str, ports: Mapping[int, int]) -> str:
    """The command with the README's fixed ports replaced."""
    for readme_port, port in ports.items():
        command = command.replace(f"127.0.0.1:{readme_port}", f"127.0.0.1:{port}")
        command = command.replace(f"--port {readme_port}", f"--port {port}")
    return command


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} is not served; log:\n{log.read_text()}") from None
            time.sleep(0.05)  # polling readiness under a deadline


class Events:
    """A streaming GET, read event by event, with a deadline per event."""

    def __init__(self, client: httpx.Client, url: str, headers: Mapping[str, str] | None = None) -> None:
        self._context = client.stream("GET", url, timeout=20, headers=headers)
        self.response = self._context.__enter__()
        assert self.response.status_code == 200
        self._chunks = self.response.iter_raw()
        self._decoder = SSEDecoder()

    def next(self) -> ServerSentEvent:
        while (event := self._decoder.next_event()) is NEED_DATA:
            self._decoder.feed(next(self._chunks))
        return event

    def finish(self) -> None:
        """Read to the response's end; ``httpx.RemoteProtocolError`` if it was cut, not ended."""
        for chunk in self._chunks:
            self._decoder.feed(chunk)

    def close(self) -> None:
        self._context.__exit__(None, None, None)


#: Seconds within which a Ctrl+C'd example must have exited. "At once" is what the README says;
#: what it rules out is a stop that waits for the server's own graceful timeout (hypercorn's:
#: 3 s, after which it cuts the streams) or for ever. A loaded CI machine took 1.1 s.
AT_ONCE = 2.5


def stop_with_sigint(process: subprocess.Popen[bytes], log: Path) -> float:
    """Ctrl+C (SIGINT to the process group); return the seconds until it exited."""
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"still running 20 s after SIGINT; log:\n{log.read_text()}") from None
    return time.monotonic() - started


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
            stop_process(process)


def test_install_commands(tmp_path: Path) -> None:
    """Installing: from the checkout, editable, and from a wheel built with ``python -m build``."""
    checkout = new_checkout(tmp_path)
    where = "python3 -c 'import eventstream; print(eventstream.__file__)'"
    checkout.bash("python3 -m pip install .")
    assert "site-packages" in checkout.bash(where).splitlines()[-1]
    checkout.bash("python3 -m pip install -e .")
    assert checkout.bash(where).splitlines()[-1] == str(checkout.path / "src/eventstream/__init__.py")
    checkout.bash("python3 -m pip install build && python3 -m build")
    assert list((checkout.path / "dist").glob("eventstream-*-py3-none-any.whl"))
    checkout.bash("python3 -m pip install dist/eventstream-*.whl")
    assert "site-packages" in checkout.bash(where).splitlines()[-1]
    checkout.bash("python3 -m pip install '.[valkey]'")
    checkout.bash("python3 -m pip install -e '.[valkey]' uvicorn")
    assert "GlideClient" in checkout.bash("python3 -c 'import glide; print(glide.GlideClient.__name__)'")


@pytest.mark.parametrize(
    "command",
    [
        "hypercorn --workers 0 examples.raw_asgi:app",
        "hypercorn --workers 0 -k trio examples.starlette_app:app",
        "uvicorn examples.fastapi_app:app",
    ],
)
def test_chat_example_commands(
    examples_checkout: Checkout, command: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Each chat example starts as written, streams, takes the README's curl, and stops on Ctrl+C."""
    port = free_port()
    option = f"--port {port}" if command.startswith("uvicorn") else f"--bind 127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = examples_checkout.start(f"{command} {option}", log=log)
    processes.append(server)
    wait_http(f"http://127.0.0.1:{port}/", server, log)
    publish = (
        """curl -X POST http://127.0.0.1:8000/api/publish -d '{"event": "message", "data": {"text": "hi"}}'"""
    )
    with httpx.Client() as client:
        events = Events(client, f"http://127.0.0.1:{port}/api/events")
        try:
            assert events.next().event == "stream-open"
            output = examples_checkout.bash(adapt(publish, {8000: port}), timeout=30)
            assert "Published" in output or "published" in output, output
            message = events.next()
            assert (message.event, message.json()) == ("message", {"text": "hi"})
            elapsed = stop_with_sigint(server, log)
            events.finish()  # the library ended the stream: its response is complete
        finally:
            events.close()
    assert "Traceback" not in log.read_text()
    assert elapsed < AT_ONCE


def test_pipe_example_commands(
    examples_checkout: Checkout, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    command = f"hypercorn --workers 0 examples.pipe:app --bind 127.0.0.1:{port}"
    server = examples_checkout.start(command, log=log)
    processes.append(server)
    wait_http(f"http://127.0.0.1:{port}/", server, log)
    curl = adapt("curl -N http://127.0.0.1:8000/api/events", {8000: port})
    result = subprocess.run(
        ["bash", "-c", f"{curl} --max-time 3"], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 28, result  # ended by --max-time: the stream was still open
    assert result.stdout.startswith("event: stream-open\n")
    assert "event: tick\n" in result.stdout
    assert stop_with_sigint(server, log) < AT_ONCE
    assert "Traceback" not in log.read_text()


def test_quick_start_demo(
    examples_checkout: Checkout, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """``nox -s demo`` serves, takes the README's curl, and stops at once on Ctrl+C, without traceback."""
    port = free_port()
    log = tmp_path / "nox.log"
    env = {"EVENTSTREAM_DEMO_BIND": f"127.0.0.1:{port}"}
    nox = examples_checkout.start("python3 -m pip install nox && python3 -m nox -s demo", env=env, log=log)
    processes.append(nox)
    wait_http(f"http://127.0.0.1:{port}/", nox, log, timeout=INSTALL_TIMEOUT)
    publish = (
        """curl -X POST http://127.0.0.1:8000/api/publish """
        """-d '{"event": "message", "data": {"user": "curl", "text": "hello"}}'"""
    )
    with httpx.Client() as client:
        assert "new EventSource(" in client.get(f"http://127.0.0.1:{port}/").text
        events = Events(client, f"http://127.0.0.1:{port}/api/events")
        follow = adapt("curl -N http://127.0.0.1:8000/api/events", {8000: port})
        curl = subprocess.Popen(
            ["bash", "-c", f"{follow} --max-time 60"], stdout=subprocess.PIPE, start_new_session=True
        )
        processes.append(curl)
        try:
            assert events.next().event == "stream-open"
            assert read_until(curl, b"\n\n").startswith(b"event: stream-open\n")
            examples_checkout.bash(adapt(publish, {8000: port}), timeout=30)
            assert events.next().json() == {"user": "curl", "text": "hello"}
            shown = read_until(curl, b"\n\n")  # the shell's reader shows it too
            decoder = SSEDecoder()
            decoder.feed(shown)
            message = decoder.next_event()
            assert isinstance(message, ServerSentEvent)
            assert (message.event, message.json()) == ("message", {"user": "curl", "text": "hello"})
            # The monitoring URLs the README names.
            assert client.get(f"http://127.0.0.1:{port}/readyz").json()["status"] == "ready"
            assert client.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "alive"
            metrics = client.get(f"http://127.0.0.1:{port}/metrics").text
            assert "\neventstream_events_published_total 1.0\n" in metrics, metrics
            elapsed = stop_with_sigint(nox, log)
            assert curl.wait(10) == 0  # its response ended complete, before --max-time
        finally:
            events.close()
            assert curl.stdout is not None
            curl.stdout.close()
    output = log.read_text()
    assert "Traceback" not in output, output
    assert "Session demo was successful" in output, output
    assert f"curl -N http://127.0.0.1:{port}/api/events" in output  # the session says how to read it
    assert f"metrics: http://127.0.0.1:{port}/metrics" in output
    assert elapsed < AT_ONCE


def read_until(process: subprocess.Popen[bytes], end: bytes, timeout: float = 30) -> bytes:
    """What ``process`` writes to its stdout from now up to and including ``end``."""
    assert process.stdout is not None
    received = b""
    deadline = time.monotonic() + timeout
    while end not in received:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {end!r} within {timeout} s: {received!r}"
        chunk = os.read(process.stdout.fileno(), 65536)
        assert chunk, f"the output ended before {end!r}: {received!r}"
        received += chunk
    return received


#: What the README and the examples' docstrings say each framework example runs with.
FRAMEWORK_EXAMPLES = {
    "django": "uvicorn examples.django_app.asgi:app",
    "litestar": "uvicorn examples.litestar_app:app",
    "quart": "hypercorn --workers 0 examples.quart_app:app",
}


@pytest.mark.parametrize("extra", list(FRAMEWORK_EXAMPLES))
def test_framework_example_extras(
    extra: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The README's ``pip install -e '.[django]'`` (or litestar, quart) is all that example needs."""
    checkout = new_checkout(tmp_path)
    checkout.bash("python3 -m pip install -e '.[django]'".replace("django", extra))
    port = free_port()
    command = FRAMEWORK_EXAMPLES[extra]
    option = f"--port {port}" if command.startswith("uvicorn") else f"--bind 127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = checkout.start(f"{command} {option}", log=log)
    processes.append(server)
    wait_http(f"http://127.0.0.1:{port}/", server, log)
    publish = (
        """curl -X POST http://127.0.0.1:8000/api/publish -d '{"event": "message", "data": {"text": "hi"}}'"""
    )
    with httpx.Client() as client:
        assert "new EventSource(" in client.get(f"http://127.0.0.1:{port}/").text
        events = Events(client, f"http://127.0.0.1:{port}/api/events")
        try:
            assert events.next().event == "stream-open"
            checkout.bash(adapt(publish, {8000: port}), timeout=30)
            message = events.next()
            assert (message.event, message.json()) == ("message", {"text": "hi"})
            elapsed = stop_with_sigint(server, log)
        finally:
            events.close()
    assert "Traceback" not in log.read_text(), log.read_text()
    assert elapsed < 2.0


def test_pushpin_walkthrough(
    examples_checkout: Checkout, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Two app processes sharing a broker behind a private Pushpin (the README's config, on free ports).

    A client that reconnects through Pushpin gets what both processes published while it was away.
    """
    require_pushpin()
    ports = {7999: free_port(), 5561: free_port(), 8001: free_port(), 8002: free_port(), 6390: free_port()}
    grip = examples_checkout.path / "examples" / "grip"
    config = (grip / "pushpin.conf").read_text()
    config = config.replace("7999", str(ports[7999])).replace("5561", str(ports[5561]))
    config = config.replace("/tmp/eventstream-pushpin", str(tmp_path / "pushpin"))
    (grip / "pushpin.conf").write_text(config)
    (grip / "routes").write_text(adapt((grip / "routes").read_text(), ports))
    pushpin = examples_checkout.start(
        "pushpin --config examples/grip/pushpin.conf &".removesuffix(" &"), log=tmp_path / "pushpin.log"
    )
    processes.append(pushpin)
    redis = "redis-server --bind 127.0.0.1 --port 6390 --save '' --appendonly no &"
    processes.append(
        examples_checkout.start(adapt(redis, ports).removesuffix(" &"), log=tmp_path / "redis.log")
    )
    examples_checkout.bash("python3 -m pip install -e '.[examples,valkey]'")
    exports = {}
    for export in (
        "export GRIP_URL='http://127.0.0.1:5561/?verify-iss=pushpin&verify-key=changeme'",
        "export REDIS_URL='redis://127.0.0.1:6390/0'",
    ):
        name, _, value = adapt(export, ports).removeprefix("export ").partition("=")
        exports[name] = value.strip("'")
    apps: list[subprocess.Popen[bytes]] = []
    for command in (
        "hypercorn --workers 0 examples.grip.app:app --bind 127.0.0.1:8001 &",
        "hypercorn --workers 0 examples.grip.app:app --bind 127.0.0.1:8002 &",
    ):
        log = tmp_path / f"app-{len(apps)}.log"
        app = examples_checkout.start(adapt(command, ports).removesuffix(" &"), env=exports, log=log)
        processes.append(app)
        wait_http(f"http://127.0.0.1:{ports[8001 + len(apps)]}/", app, log)
        apps.append(app)
    proxy = f"http://127.0.0.1:{ports[7999]}"
    wait_http(f"{proxy}/", pushpin, tmp_path / "pushpin.log")
    publish = (
        """curl -X POST http://127.0.0.1:8002/api/publish -d '{"event": "message", "data": {"text": "hi"}}'"""
    )
    with httpx.Client() as client:
        assert "new EventSource(" in client.get(f"{proxy}/", timeout=10).text  # through Pushpin
        deadline = time.monotonic() + 20
        while True:  # Pushpin's internal sockets connect a moment after it starts
            events: Events | None = None
            try:
                events = Events(client, f"{proxy}/api/events")
                assert events.next().event == "stream-open"
                examples_checkout.bash(adapt(publish, ports), timeout=30)
                message = events.next()
                break
            except (httpx.HTTPError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # retrying under a deadline
            finally:
                if events is not None:
                    events.close()
        assert (message.event, message.json()) == ("message", {"text": "hi"})
        assert message.id is not None
        # Away, the client misses a message of each process; it resumes through Pushpin
        # (which asks the process on 8001) with the last id it has.
        for port, text in ((8001, "from 8001"), (8002, "from 8002")):
            command = adapt(publish, ports).replace("127.0.0.1:8002", f"127.0.0.1:{ports[port]}")
            examples_checkout.bash(command.replace('"hi"', f'"{text}"'), timeout=30)
        resumed = Events(client, f"{proxy}/api/events", headers={"Last-Event-ID": message.id})
        try:
            received = [resumed.next() for _ in range(3)]
        finally:
            resumed.close()
    assert [event.event for event in received] == ["stream-open", "message", "message"]
    assert [event.json() for event in received[1:]] == [{"text": "from 8001"}, {"text": "from 8002"}]
