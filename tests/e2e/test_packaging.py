"""The wheel and sdist build, install into a fresh virtual environment, and serve an example."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from ..support.servers import ROOT, free_port, stop_process

pytestmark = pytest.mark.server


def run(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in args], cwd=cwd, check=True, capture_output=True, timeout=600)


def test_build_install_and_serve(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    (wheel,) = dist.glob("eventstream-*.whl")
    (sdist,) = dist.glob("eventstream-*.tar.gz")
    names = zipfile.ZipFile(wheel).namelist()
    assert "eventstream/py.typed" in names
    assert "eventstream/__init__.py" in names
    assert not any(name.startswith(("tests/", "examples/")) for name in names)
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(name.endswith("/examples/raw_asgi.py") for name in members)
    assert any(name.endswith("/tests/unit/test_sse.py") for name in members)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel, "hypercorn")
    # The example, from a directory where the source tree is not importable.
    app_dir = tmp_path / "app"
    shutil.copytree(ROOT / "examples", app_dir / "examples")
    run(python, "-c", "import eventstream, sys; assert 'site-packages' in eventstream.__file__", cwd=app_dir)
    port = free_port()
    server = subprocess.Popen(
        [python, "-m", "hypercorn", "--bind", f"127.0.0.1:{port}", "examples.raw_asgi:app"],
        cwd=app_dir, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)  # polling readiness under a deadline
        assert "new EventSource(" in page.text
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events", timeout=10) as response:
            opening = b"event: stream-open\nretry: 1000\ndata: \n\n"
            received = b""
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= len(opening):
                    break
            assert received.startswith(opening)
    finally:
        stop_process(server)
