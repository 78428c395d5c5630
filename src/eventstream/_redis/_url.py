"""Reading a ``redis://`` / ``rediss://`` URL (or ``redis+cluster://`` / ``rediss+cluster://``, a
Valkey/Redis Cluster by one or more of its nodes) into a validated address (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress", "parse_redis_url"]


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis-protocol engine (Valkey, Redis) listens, and how to log in.

    On a cluster (``cluster``), ``host`` and ``port`` are its first seed node
    and ``seeds`` every one (the client maps the rest from any of them).
    """

    host: str
    port: int = 6379
    database: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cluster: bool = False
    seeds: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("the engine's host is empty")
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")
        if self.database < 0:
            raise ValueError(f"database {self.database} is negative")
        if self.cluster and self.database:
            raise ValueError("a cluster has database 0 only")

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        """Every address given: the seeds of a cluster, else the one engine."""
        return self.seeds or ((self.host, self.port),)

    @property
    def display(self) -> str:
        """The URL without credentials, for messages and logs."""
        hosts = ",".join(f"{f'[{host}]' if ':' in host else host}:{port}" for host, port in self.nodes)
        if self.cluster:
            return f"{'rediss' if self.tls else 'redis'}+cluster://{hosts}"
        return f"{'rediss' if self.tls else 'redis'}://{hosts}/{self.database}"


def parse_redis_url(url: str) -> RedisAddress:
    """Read ``redis://[user:password@]host[:port][/db]`` (``rediss://`` for TLS), or
    ``redis+cluster://[user:password@]host[:port][,host[:port]...]`` (``rediss+cluster://``).

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
    scheme, _, rest = url.strip().partition("://")
    if scheme in ("redis+cluster", "rediss+cluster"):
        return _cluster_address(rest, tls=scheme == "rediss+cluster")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"malformed broker URL{_UNQUOTED}: its host or port cannot be read") from None
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(
            f"broker URL{_UNQUOTED}: the scheme must be redis://, rediss://, redis+cluster:// "
            "or rediss+cluster://"
        )
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


def _cluster_address(rest: str, *, tls: bool) -> RedisAddress:
    # What follows "redis+cluster://": [user:password@]host[:port][,host[:port]...][/] (database 0 only).
    userinfo, at, hosts = rest.rpartition("@")
    if hosts.endswith("/0"):
        hosts = hosts[:-2]
    hosts = hosts.rstrip("/")
    if any(c in hosts for c in "/?#") or (at and any(c in userinfo for c in "/?#")):
        raise ValueError(
            f"broker URL{_UNQUOTED}: a cluster URL is [user:password@]host:port[,host:port...] "
            "(no path but /0, no query string or fragment; percent-encode a '/', '?', '#' or '@' "
            "in the password)"
        )
    seeds = []
    for node in hosts.split(","):
        try:
            parts = urlsplit(f"//{node}")
            port = parts.port
        except ValueError:
            raise ValueError(
                f"malformed broker URL{_UNQUOTED}: a node's host or port cannot be read"
            ) from None
        if not parts.hostname or parts.username is not None or port == 0:
            raise ValueError(f"malformed broker URL{_UNQUOTED}: each node is host[:port]")
        seeds.append((parts.hostname, 6379 if port is None else port))
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon else None
    return RedisAddress(
        host=seeds[0][0],
        port=seeds[0][1],
        tls=tls,
        username=username,
        password=password,
        cluster=True,
        seeds=tuple(seeds),
    )


#: Said in place of the URL in every error (never quoted: it may hold a password).
_UNQUOTED = " (not quoted: it may hold a password)"
