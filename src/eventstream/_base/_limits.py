"""Rate limits on subscribing, per client address: new streams per second and open streams.

:class:`SubscribeLimits` is the frozen, checked configuration (an option of
:class:`~eventstream.EventStream`); :class:`AddressLimiter` is its state in one
process: a token bucket and an open-stream count per address, in a table of
bounded size. The address is the ASGI scope's ``client`` host, as the server
gives it: behind a proxy, the server must set it from ``X-Forwarded-For``
(uvicorn's ``--proxy-headers --forwarded-allow-ips``, hypercorn's
``ProxyFixMiddleware``); the library trusts no header. IPv6 addresses count
per network prefix (``/64`` by default: one host holds a whole /64).
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from ._checks import check_count

__all__ = ["AddressLimiter", "Refused", "SubscribeLimits"]

# How many table entries one new address may look at to make room (entries with open streams are skipped).
_EVICTION_SCAN = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeLimits:
    """Limits on subscribing per client address, answered with ``429 Too Many Requests`` and ``Retry-After``.

    Args:
        rate: New streams per second per address (a token bucket), or ``None``: no limit.
        burst: How many new streams an address may open at once before ``rate``
            applies; ``None``: ``max(1, ceil(rate))``.
        max_open: Open streams per address, or ``None``: no limit.
        open_retry_after: The ``Retry-After`` (seconds) of a request refused by ``max_open``.
        max_addresses: The most addresses remembered at once: memory stays bounded
            under a flood of distinct addresses. Beyond it, the least recently seen
            address without an open stream is forgotten (its rate starts afresh); when
            every remembered address holds an open stream, a new address is refused.
        ipv6_prefix: IPv6 addresses count per network of this prefix length (``128``: each alone).

    Raises:
        ValueError: an option is out of range (a bool is not a number).
    """

    rate: float | None = None
    burst: int | None = None
    max_open: int | None = None
    open_retry_after: int = 5
    max_addresses: int = 65_536
    ipv6_prefix: int = 64

    def __post_init__(self) -> None:
        rate = self.rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf
        ):
            raise ValueError(f"rate must be a positive number of streams per second or None, not {rate!r}")
        for name in ("burst", "max_open"):
            check_count(name, getattr(self, name), allow_none=True)
        check_count("open_retry_after", self.open_retry_after)
        check_count("max_addresses", self.max_addresses)
        check_count("ipv6_prefix", self.ipv6_prefix, high=128)
        if self.burst is not None and rate is None:
            raise ValueError("burst needs a rate")

    @property
    def bucket_size(self) -> float:
        """How many new streams an address may open at once (``burst``, or its default)."""
        if self.burst is not None:
            return float(self.burst)
        return float(max(1, math.ceil(self.rate))) if self.rate is not None else math.inf


class Refused(Exception):
    """A subscription refused by a :class:`SubscribeLimits`: answered 429 with ``Retry-After``."""

    def __init__(self, reason: str, retry_after: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Entry:
    __slots__ = ("open", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.open = 0


class AddressLimiter:
    """The per-address state of a :class:`SubscribeLimits` in one process (one event loop thread)."""

    def __init__(self, limits: SubscribeLimits) -> None:
        self.limits = limits
        self._entries: dict[str, _Entry] = {}  # insertion order: least recently seen first

    def __len__(self) -> int:
        """How many addresses are remembered (at most ``max_addresses``)."""
        return len(self._entries)

    def key(self, client: object) -> str:
        """The address ``client`` (the scope's ``client``) counts under.

        IPv6 addresses count per network of ``ipv6_prefix``; a host that is not an
        IP address (a Unix socket's path) counts as it is, and no client at all
        (the server does not say) counts as ``""``: every such request together.
        """
        if not isinstance(client, (tuple, list)) or not client or not isinstance(client[0], str):
            return ""
        host = client[0]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host
        if isinstance(address, ipaddress.IPv6Address):
            mapped = address.ipv4_mapped
            if mapped is not None:
                return str(mapped)
            network = ipaddress.IPv6Network((address, self.limits.ipv6_prefix), strict=False)
            return str(network)
        return str(address)

    def admit(self, key: str, *, holds: bool) -> None:
        """Count a new stream of address ``key``; ``holds``: it stays open in this process.

        An admitted stream that ``holds`` must be given back with :meth:`release`
        when it ends, however it ends.

        Raises:
            Refused: the address opened streams faster than ``rate``, holds
                ``max_open`` streams, or is new while the table is full of
                addresses that hold streams. Nothing is counted then.
        """
        limits = self.limits
        now = time.monotonic()
        entries = self._entries
        entry = entries.pop(key, None)
        if entry is None:
            if len(entries) >= limits.max_addresses and not self._make_room():
                raise Refused(
                    "Too many requests: too many clients at once, retry later", limits.open_retry_after
                )
            entry = _Entry(limits.bucket_size, now)
        entries[key] = entry  # the most recently seen, last
        if limits.rate is not None:
            entry.tokens = min(limits.bucket_size, entry.tokens + (now - entry.stamp) * limits.rate)
            entry.stamp = now
            if entry.tokens < 1:
                wait = math.ceil((1 - entry.tokens) / limits.rate)
                raise Refused("Too many requests: streams opened too fast, retry later", max(1, wait))
        if holds and limits.max_open is not None and entry.open >= limits.max_open:
            raise Refused("Too many requests: too many open streams, retry later", limits.open_retry_after)
        if limits.rate is not None:
            entry.tokens -= 1
        if holds:
            entry.open += 1

    def release(self, key: str) -> None:
        """A stream that :meth:`admit` counted as held has ended."""
        entry = self._entries.get(key)
        if entry is not None and entry.open > 0:
            entry.open -= 1

    def _make_room(self) -> bool:
        # Forget the least recently seen address without an open stream, looking at a bounded
        # number of entries (those that hold streams go to the end). False: none found.
        entries = self._entries
        for _ in range(min(_EVICTION_SCAN, len(entries))):
            key = next(iter(entries))
            entry = entries.pop(key)
            if entry.open == 0:
                return True
            entries[key] = entry
        return False
