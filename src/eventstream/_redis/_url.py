"""Reading a ``redis://`` / ``rediss://`` URL into a validated address (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress", "parse_redis_url"]


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis-protocol engine (Valkey, Redis) listens, and how to log in."""

    host: str
    port: int = 6379
    database: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("the engine's host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.database < 0:
            raise ValueError(f"database {self.database} is negative")

    @property
    def display(self) -> str:
        """The URL without credentials, for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'rediss' if self.tls else 'redis'}://{host}:{self.port}/{self.database}"


def parse_redis_url(url: str) -> RedisAddress:
    """Read ``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS).

    The errors never quote the URL, nor any part of it: whatever its shape,
    a malformed one may hold a password anywhere (an unescaped ``/``, ``#``,
    ``?`` or ``@`` in it moves it into the host, port, path or fragment).

    Raises:
        ValueError: not a string, another scheme, no host, a bad port or
            database number, or a query string, fragment or path beyond the
            database (nothing is silently ignored).
    """
    if not isinstance(url, str):
        raise ValueError(f"a broker URL must be a str, not {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"malformed broker URL{_UNQUOTED}: its host or port cannot be read") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"broker URL{_UNQUOTED}: the scheme must be redis:// or rediss://")
    if not parts.hostname:
        raise ValueError(f"broker URL{_UNQUOTED} has no host")
    if parts.query or parts.fragment:
        raise ValueError(
            f"broker URL{_UNQUOTED}: query strings and fragments are not supported "
            "(percent-encode a '/', '?', '#' or '@' in the password)"
        )
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(
            f"broker URL{_UNQUOTED}: the path must be a database number "
            "(percent-encode a '/', '?', '#' or '@' in the password)"
        )
    if port == 0:
        raise ValueError(f"broker URL{_UNQUOTED}: the port is out of range (1-65535)")
    return RedisAddress(
        host=parts.hostname,
        port=6379 if port is None else port,
        database=int(path) if path else 0,
        tls=parts.scheme == "rediss",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


#: Said in place of the URL in every error (never quoted: it may hold a password).
_UNQUOTED = " (not quoted: it may hold a password)"
