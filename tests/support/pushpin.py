"""A private Pushpin (GRIP proxy) for tests: its own directory, config, ports and processes.

Debian's ``pushpin`` package starts four children (condure, zurl,
pushpin-proxy, pushpin-handler) from a runner. The config written here keeps
every ZeroMQ socket in the instance's own directory as an ipc socket and
starts zurl itself (Debian's defaults point at a system zurl service that is
not running), so several instances run side by side on 127.0.0.1 with four
TCP ports between them: the HTTP port clients use, the control port
publishes go to, the origin port of the app behind it, and the handler's
metrics port (Prometheus text), whose counters tests poll rather than the log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .servers import _accepting, free_port

#: A signing key long enough that PyJWT does not warn about it (Pushpin's own default is "changeme").
SIG_KEY = "eventstream-test-signing-key-0123456789"
SIG_ISS = "pushpin"

_CONFIG = """\
[global]
include={{libdir}}/internal.conf
rundir={run}
ipc_prefix=pushpin-
port_offset=0

[runner]
services=condure,zurl,pushpin-proxy,pushpin-handler
http_port=127.0.0.1:{http_port}
logdir={log}
log_level=2
client_buffer_size=8192
client_maxconn=2000
condure_bin=condure
zurl_bin=zurl

[proxy]
routesfile=routes
debug=true
auto_cross_origin=false
accept_x_forwarded_protocol=false
set_x_forwarded_protocol=proto-only
x_forwarded_for=
x_forwarded_for_trusted=
orig_headers_need_mark=
accept_pushpin_route=false
log_from=false
log_user_agent=false
sig_iss={sig_iss}
sig_key={sig_key}
upstream_key=
updates_check=off
organization_name=
zurl_out_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in
zurl_out_stream_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-in-stream
zurl_in_specs=ipc://{{rundir}}/{{ipc_prefix}}zurl-out

[handler]
push_in_spec=ipc://{{rundir}}/{{ipc_prefix}}push-in
push_in_sub_specs=ipc://{{rundir}}/{{ipc_prefix}}push-in-sub
push_in_sub_connect=false
push_in_http_addr=127.0.0.1
push_in_http_port={control_port}
stats_spec=ipc://{{rundir}}/{{ipc_prefix}}stats
command_spec=ipc://{{rundir}}/{{ipc_prefix}}handler-command
message_rate=1000000
message_hwm=1000000
message_wait={message_wait}
id_cache_ttl=60
connection_subscription_max=40
subscription_linger=60
stats_subscription_ttl=60
stats_report_interval=10
stats_format=tnetstring
prometheus_port={metrics_port}
"""


def require_pushpin() -> None:
    """Skip when Pushpin is not installed, except under CI, where that is a failure."""
    missing = [tool for tool in ("pushpin", "condure", "zurl") if shutil.which(tool) is None]
    if missing:
        message = f"Pushpin is not installed ({', '.join(missing)} missing): apt-get install pushpin"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class Pushpin:
    process: subprocess.Popen[bytes]
    directory: Path
    http_port: int
    control_port: int
    origin_port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grip_url(self) -> str:
        """A GRIP_URL for apps behind this instance, with its signature key to verify Grip-Sig."""
        return f"http://127.0.0.1:{self.control_port}/?verify-iss={SIG_ISS}&verify-key={SIG_KEY}"

    def log(self) -> str:
        return (self.directory / "pushpin.log").read_text(errors="replace")

    def wait_holds(self, path: str, timeout: float = 10.0) -> None:
        """Wait until a held stream through the proxy works end to end (the origin must be up).

        Right after start, the proxy's hand-over of held requests to its
        handler can fail for a moment ("500 Accept service unavailable", or
        a closed connection) while their internal sockets connect.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                # A fresh instance may drop a request or never finish answering it: retry.
                with httpx.stream("GET", self.url + path, timeout=2) as response:
                    if response.status_code == 200:
                        return
                    problem = f"{response.status_code} {response.read()!r}"
            except httpx.TransportError as exc:
                problem = repr(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.url}{path} does not hold streams yet: {problem}")
            time.sleep(0.05)  # polling readiness under a deadline

    def metrics(self) -> dict[str, int]:
        """The handler's counters, read when asked: ``message_received`` (items the control API
        accepted, a repeated id not counted; counted before the publish is answered),
        ``message_sent`` (items sent to held clients, likewise), ``connection_connected`` ..."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return {
            name: int(float(value))
            for name, _, value in (line.partition(" ") for line in text.splitlines())
            if name and not name.startswith("#")
        }

    def published(self) -> int:
        """How many items this instance accepted (a repeated id is dropped, not counted)."""
        return self.metrics()["message_received"]


def _control_up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as response:
            return bool(response.read().strip() == b"Pushpin API")
    except OSError:
        return False


def _ready(instance: Pushpin) -> bool:
    log = instance.log()
    return (
        all(f"[{name}] started" in log for name in ("handler", "proxy", "zurl"))
        and "[condure]" in log
        and _control_up(instance.control_port)
        and _accepting(instance.http_port)
        and _accepting(instance.metrics_port)
    )


@contextlib.contextmanager
def run_pushpin(
    origin_port: int,
    *,
    http_port: int | None = None,
    control_port: int | None = None,
    message_wait_ms: int = 5000,
    timeout: float = 20.0,
) -> Iterator[Pushpin]:
    """Run a private Pushpin routing every request to 127.0.0.1:``origin_port``; stop it on exit."""
    require_pushpin()
    directory = Path(tempfile.mkdtemp(prefix="pp", dir="/tmp"))  # ipc paths must stay short
    (directory / "run").mkdir()
    (directory / "log").mkdir()
    http_port = http_port or free_port()
    control_port = control_port or free_port()
    metrics_port = free_port()
    (directory / "pushpin.conf").write_text(
        _CONFIG.format(
            run=directory / "run",
            log=directory / "log",
            http_port=http_port,
            control_port=control_port,
            sig_iss=SIG_ISS,
            sig_key=SIG_KEY,
            message_wait=message_wait_ms,
            metrics_port=metrics_port,
        )
    )
    (directory / "routes").write_text(f"* 127.0.0.1:{origin_port}\n")
    with open(directory / "pushpin.log", "wb") as log:
        process = subprocess.Popen(
            ["pushpin", f"--config={directory / 'pushpin.conf'}", "--merge-output"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    instance = Pushpin(process, directory, http_port, control_port, origin_port, metrics_port)
    try:
        deadline = time.monotonic() + timeout
        while not _ready(instance):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Pushpin did not become ready; its log ends:\n{instance.log()[-3000:]}")
            time.sleep(0.02)  # polling readiness under a deadline
        yield instance
    finally:
        stop_pushpin(process)
        shutil.rmtree(directory, ignore_errors=True)


def _session_members(session_id: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after the command name: state, ppid, pgrp, session
        if int(fields[3]) == session_id and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_pushpin(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the runner (it stops its children), then make sure nothing of its session is left."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    for pid in _session_members(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
