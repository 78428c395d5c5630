"""Where the broker's feed connects, and how it logs in and checks the engine's certificate.

Taken from the broker's URL or from the valkey-glide configuration the user
gave (its first address, TLS settings and credentials), so the feed's own
connection reaches the engine the command client reaches, the same way.
"""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._url import RedisAddress

if TYPE_CHECKING:
    from glide import GlideClientConfiguration

__all__ = ["FeedEndpoint", "feed_endpoint"]


@dataclass(frozen=True, kw_only=True)
class FeedEndpoint:
    """Where the feed connects, and how it logs in."""

    host: str
    port: int
    tls: bool = False
    #: PEM certificates of the authorities to trust (else the system's).
    ca_pem: bytes | None = field(default=None, repr=False)
    #: A PEM client certificate and its key (mutual TLS).
    client_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    #: TLS without checking the engine's certificate (the user's explicit choice).
    insecure: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of the connection (None without TLS)."""
        if not self.tls:
            return None
        context = ssl.create_default_context()
        if self.ca_pem is not None:
            context.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_pem is not None:
            # The ssl module loads a certificate chain from files only: a private, short-lived folder.
            with tempfile.TemporaryDirectory(prefix="eventstream-tls-") as folder:
                cert, key = Path(folder, "cert.pem"), Path(folder, "key.pem")
                cert.write_bytes(self.client_pem)
                key.write_bytes(self.client_key_pem or b"")
                context.load_cert_chain(cert, key if self.client_key_pem is not None else None)
        return context


def feed_endpoint(
    address: RedisAddress | None, configuration: GlideClientConfiguration | None
) -> FeedEndpoint:
    """Where the feed connects and how it logs in: from a parsed URL, or from a glide configuration."""
    if address is not None:
        return FeedEndpoint(
            host=address.host,
            port=address.port,
            tls=address.tls,
            username=address.username,
            password=address.password,
        )
    assert configuration is not None
    first = configuration.addresses[0]
    credentials = configuration.credentials
    advanced = configuration.advanced_config
    tls = advanced.tls_config if advanced is not None else None
    return FeedEndpoint(
        host=first.host,
        port=first.port,
        tls=bool(configuration.use_tls),
        ca_pem=tls.root_pem_cacerts if tls is not None else None,
        client_pem=_pem(tls, "client_cert_pem", "client_cert_path"),
        client_key_pem=_pem(tls, "client_key_pem", "client_key_path"),
        insecure=bool(tls is not None and tls.use_insecure_tls),
        username=credentials.username if credentials is not None else None,
        password=credentials.password if credentials is not None else None,
    )


def _pem(tls: object, data: str, path: str) -> bytes | None:
    # A PEM given to glide's TLS settings as bytes, or as the path of a file.
    if tls is None:
        return None
    value = getattr(tls, data, None)
    if value is not None:
        return bytes(value)
    location = getattr(tls, path, None)
    return Path(location).read_bytes() if location is not None else None
