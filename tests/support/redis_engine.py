"""A private Redis-protocol engine for tests: its own directory, port and process.

Debian's ``redis-server`` (7.0) is started on 127.0.0.1 on a free port with
its own temporary directory, no RDB snapshots and the append-only file on, so
a restart keeps its data. It is stopped by PID. A system instance is never used.

``run_redis(tls=True)`` starts one that speaks TLS only (``--tls-port``, no
plain port), with a certificate for ``127.0.0.1`` and ``localhost`` signed by
a private CA made for it at test time (:func:`write_tls_files`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

from .servers import _accepting, free_port, stop_process


def require_redis() -> None:
    """Skip when redis-server (or its redis-cli) or valkey-glide is missing, except under CI, where
    that is a failure."""
    import importlib.util

    import pytest

    missing = []
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        missing.append("redis-server is not installed: apt-get install redis-server")
    if importlib.util.find_spec("glide") is None:
        missing.append("valkey-glide is not installed: pip install '.[valkey]'")
    if missing:
        message = "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def write_tls_files(directory: Path) -> None:
    """Write a private CA (``ca.pem``) and a server certificate it signed for ``127.0.0.1`` (IP SAN)
    and ``localhost`` (DNS SAN) with its key (``server.pem``, ``server.key``) into ``directory``, and a
    client certificate it signed with its key (``client.pem``, ``client.key``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eventstream test CA")])
    signs_certificates = x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    names = [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(signs_certificates, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eventstream test client")]))
        .issuer_name(ca_name)
        .public_key(client_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "client.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    (directory / "client.key").write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key = directory / "server.key"
    key.touch(mode=0o600)
    key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@dataclass
class RedisEngine:
    """One private redis-server; :meth:`stop` and :meth:`start` keep its port and data."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    #: More redis-server options, e.g. ("--requirepass", "secret").
    options: tuple[str, ...] = ()
    #: TLS only, with the certificate of :func:`write_tls_files` in ``directory``
    #: (clients' certificates not asked for).
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def ca_file(self) -> Path:
        """The file of the private CA that signed a TLS engine's certificate (PEM)."""
        assert self.tls
        return self.directory / "ca.pem"

    @property
    def ca_pem(self) -> bytes:
        """The PEM of the private CA that signed a TLS engine's certificate."""
        return self.ca_file.read_bytes()

    def _listen(self) -> list[str]:
        if not self.tls:
            return ["--port", str(self.port)]
        return [
            "--port", "0", "--tls-port", str(self.port),
            "--tls-cert-file", str(self.directory / "server.pem"),
            "--tls-key-file", str(self.directory / "server.key"),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def _cli(self) -> list[str]:
        """redis-cli and its options to reach this engine (trusting its CA if TLS)."""
        tls = ["--tls", "--cacert", str(self.ca_file)] if self.tls else []
        if self.tls:  # (a client certificate, for an engine started with --tls-auth-clients yes)
            tls += ["--cert", str(self.directory / "client.pem"), "--key", str(self.directory / "client.key")]
        return ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), *tls]

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            [
                "redis-server", *self._listen(), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--appendonly", "yes",
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
                "--protected-mode", "yes", *self.options,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; its log ends:\n{self.log()[-3000:]}")
            time.sleep(0.02)  # polling readiness under a deadline

    def ping(self) -> bool:
        if not _accepting(self.port):
            return False
        if self.tls:
            with contextlib.suppress(subprocess.TimeoutExpired):
                result = subprocess.run([*self._cli(), "PING"], capture_output=True, timeout=5)
                return result.stdout.startswith((b"PONG", b"NOAUTH"))
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
            return answer.startswith((b"+PONG", b"-NOAUTH"))
        return False

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (redis then writes its append-only file) or SIGKILL; wait for the exit."""
        if self.process is not None:
            stop_process(self.process, timeout, kill=kill)

    def command(self, *args: str) -> bytes:
        """Run one command with redis-cli (for checks from the tests' side)."""
        result = subprocess.run([*self._cli(), "--raw", *args], capture_output=True, timeout=10, check=True)
        return result.stdout

    def calls(self, name: str) -> int:
        """How many times the engine ran command ``name`` (``evalsha``, ``ping``...) so far."""
        for line in self.command("INFO", "commandstats").decode().splitlines():
            if line.startswith(f"cmdstat_{name.lower()}:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0


@contextlib.contextmanager
def run_redis(
    *, check: bool = True, options: tuple[str, ...] = (), tls: bool = False
) -> Iterator[RedisEngine]:
    """Start a private redis-server in a temporary directory; stop it and remove the directory.

    ``check``: skip (or fail under CI) the calling test when the engine or the client is missing.
    ``tls``: TLS only, with a private CA and certificate made now (:attr:`RedisEngine.ca_pem`).
    """
    if check:
        require_redis()
    with tempfile.TemporaryDirectory(prefix="eventstream-redis-") as directory:
        if tls:
            write_tls_files(Path(directory))
        for _attempt in range(3):
            engine = RedisEngine(Path(directory), free_port(), options=options, tls=tls)
            try:
                engine.start()
                break
            except RuntimeError:
                engine.stop(kill=True)  # another process took the port: try another
        else:
            raise RuntimeError(f"redis-server did not start; its log:\n{engine.log()}")
        try:
            yield engine
        finally:
            engine.stop(kill=True)
