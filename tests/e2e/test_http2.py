"""HTTP/2: hypercorn serving eventstream over TLS to Chromium (one connection for ten
EventSources, beyond HTTP/1.1's six per host), and h2c with prior knowledge to httpx.

The certificate is made by the test for 127.0.0.1; Chromium is told to accept
that one key (``--ignore-certificate-errors-spki-list``), nothing else.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import itertools
import os
import shutil
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventstream.client import EventSource

from ..support.helpers import wait_until
from ..support.marks import client_follows_server
from ..support.servers import Server, run_server
from .test_browser import CHROMIUM, FLAGS, _missing

pytestmark = pytest.mark.server

HYPERCORNS = ["hypercorn-asyncio", "hypercorn-trio"]
_names = itertools.count()


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path
    spki_sha256: str  # base64, as --ignore-certificate-errors-spki-list wants it


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for the IP address 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Certificate(cert_path, key_path, base64.b64encode(hashlib.sha256(spki).digest()).decode())


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module", params=HYPERCORNS)
def tls_server(request: pytest.FixtureRequest, certificate: Certificate, log_dir: Path) -> Iterator[Server]:
    tls = ["--certfile", str(certificate.cert_path), "--keyfile", str(certificate.key_path)]
    with run_server(request.param, "tests.apps.h2_app:app", log_dir=log_dir, extra_args=tls) as server:
        yield server


@pytest.fixture  # not module-scoped: Playwright's loop must be gone before the async tests run
def h2_browser(certificate: Certificate) -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")

    flags = [*FLAGS, f"--ignore-certificate-errors-spki-list={certificate.spki_sha256}"]
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield instance
        instance.close()


def https(server: Server) -> str:
    return f"https://127.0.0.1:{server.port}"


def open_streams(client: httpx.Client, server: Server) -> list[dict[str, Any]]:
    response = client.get(f"{https(server)}/open-streams")
    streams: list[dict[str, Any]] = response.json()
    return streams


def subscribers(client: httpx.Client, server: Server) -> dict[str, int]:
    channels: dict[str, int] = client.get(f"{https(server)}/stats").json()["channels"]
    return channels


def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    """Poll a condition under a deadline (the browser test is synchronous)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_ten_event_sources_in_one_page_share_one_http2_connection(
    h2_browser: Any, tls_server: Server, certificate: Certificate
) -> None:
    prefix, count = f"h2page{next(_names)}", 10
    channels = [f"{prefix}-{i}" for i in range(count)]
    trust = ssl.create_default_context(cafile=str(certificate.cert_path))
    with httpx.Client(verify=trust, http2=True, timeout=10) as client:
        page = h2_browser.new_page()
        try:
            page.goto(f"{https(tls_server)}/many?prefix={prefix}&n={count}")
            page.wait_for_function(f"window.opened === {count}", timeout=15_000)
            protocol = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            assert protocol == "h2"
            # The server's view: ten streams, all HTTP/2, all from one client address and port.
            streams = [
                s for s in open_streams(client, tls_server) if s["path"].startswith(f"/events/{prefix}-")
            ]
            assert sorted(s["path"] for s in streams) == sorted(f"/events/{c}" for c in channels)
            assert {s["http_version"] for s in streams} == {"2"}
            assert len({tuple(s["client"]) for s in streams}) == 1
            assert all(subscribers(client, tls_server).get(c) == 1 for c in channels)

            for i, channel in enumerate(channels):
                client.post(f"{https(tls_server)}/publish", json={"channel": channel, "values": [i]})
            page.wait_for_function("window.received.every(r => r.length === 1)", timeout=15_000)
            assert page.evaluate("window.received") == [[i] for i in range(count)]

            # Closing one EventSource (an HTTP/2 stream reset) unsubscribes exactly that one.
            page.evaluate("window.sources[3].close()")
            wait_for(lambda: channels[3] not in subscribers(client, tls_server))
            remaining = subscribers(client, tls_server)
            assert {c: remaining.get(c) for c in channels if c != channels[3]} == {
                c: 1 for c in channels if c != channels[3]
            }
            for i, channel in enumerate(channels):
                client.post(f"{https(tls_server)}/publish", json={"channel": channel, "values": [100 + i]})
            page.wait_for_function("window.received.filter(r => r.length === 2).length === 9", timeout=15_000)
            received = page.evaluate("window.received")
            assert received[3] == [3]
            assert [r for i, r in enumerate(received) if i != 3] == [
                [i, 100 + i] for i in range(count) if i != 3
            ]
            streams = [
                s for s in open_streams(client, tls_server) if s["path"].startswith(f"/events/{prefix}-")
            ]
            assert len(streams) == count - 1
        finally:
            page.close()
    wait_for(lambda: not any(c in subscribers_after(tls_server, certificate) for c in channels))


def subscribers_after(server: Server, certificate: Certificate) -> dict[str, int]:
    trust = ssl.create_default_context(cafile=str(certificate.cert_path))
    with httpx.Client(verify=trust, timeout=10) as client:
        return subscribers(client, server)


@pytest.fixture(scope="module", params=HYPERCORNS)
def h2c_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    with run_server(request.param, "tests.apps.h2_app:app", log_dir=log_dir) as server:
        yield server


@pytest.mark.anyio
@client_follows_server("h2c_server", HYPERCORNS, scope="module")
async def test_h2c_with_prior_knowledge_from_httpx(h2c_server: Server) -> None:
    prefix = f"h2c{next(_names)}"
    channels = [f"{prefix}-{i}" for i in range(3)]
    base = h2c_server.base_url
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=10) as client,
        EventSource(f"{base}/events/{channels[0]}", client=client) as first,
        EventSource(f"{base}/events/{channels[1]}", client=client) as second,
        EventSource(f"{base}/events/{channels[2]}", client=client) as third,
    ):
        sources = [first, second, third]
        for source in sources:
            with anyio.fail_after(10):
                assert (await source.__anext__()).event == "stream-open"
            assert source.response is not None
            assert source.response.http_version == "HTTP/2"
        streams = [s for s in (await client.get(f"{base}/open-streams")).json() if prefix in s["path"]]
        assert {s["http_version"] for s in streams} == {"2"}
        assert len(streams) == 3
        assert len({tuple(s["client"]) for s in streams}) == 1  # one connection
        for i, channel in enumerate(channels):
            await client.post(f"{base}/publish", json={"channel": channel, "values": [i]})
        for i, source in enumerate(sources):
            with anyio.fail_after(10):
                while (event := await source.__anext__()).event is not None:
                    pass
            assert event.json() == i
            assert source.last_event_id == event.id

        # httpcore sends no RST_STREAM when a response is closed early (encode/httpcore#943):
        # the server keeps that stream until the connection closes. The others go on.
        await second.aclose()
        for i, channel in enumerate(channels):
            await client.post(f"{base}/publish", json={"channel": channel, "values": [10 + i]})
        for i in (0, 2):
            with anyio.fail_after(10):
                while (event := await sources[i].__anext__()).event is not None:
                    pass
            assert event.json() == 10 + i
    # Closing the client closes the connection: the server unsubscribes all three.
    async with httpx.AsyncClient(timeout=10) as observer:

        async def all_gone() -> bool:
            channels_now = (await observer.get(f"{base}/stats")).json()["channels"]
            return not any(channel in channels_now for channel in channels)

        await wait_until(all_gone)
