"""A JWKS document fetched over the network: cached, refreshed at a bounded rate, in bounded time and size.

httpx is imported at the first fetch (see ``_auth/__init__.py``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio

from .._base import KeysUnavailable, check_count, check_seconds
from .._observe import RateLimitedLog
from ._keys import TokenVerifier

__all__ = ["JWKSFetcher", "KeysUnavailable"]

#: Failed fetches: one line each, at most 10 at once and one per 6 s beyond.
_FAILURES = RateLimitedLog()


class JWKSFetcher:
    """The JWKS document at ``url``, fetched when first needed and kept ``ttl`` seconds.

    A token whose ``kid`` is not in the document makes it fetch again, but not
    sooner than ``min_refresh_interval`` seconds after the last attempt: random
    ``kid`` values cannot make it fetch per request. A fetch takes at most
    ``timeout`` seconds in all (a server that trickles its answer is cut) and
    reads at most ``max_size`` bytes (a longer body is refused while it is
    read, not after); the body is asked for without compression and a
    compressed one is refused, and redirects are not followed. A failed fetch
    (no answer, an error status, too large, not a JWKS document of usable
    public keys) keeps the document fetched before, if any, and is logged at
    WARNING (rate-limited) on the ``eventstream`` logger; with no document at
    all, :meth:`document` raises :class:`KeysUnavailable`.

    Args:
        url: An ``https://`` URL (``http://`` only with ``allow_http``).
        ttl: Seconds a fetched document is used before it is fetched again.
        min_refresh_interval: The least time between two fetch attempts
            (failed ones included), but for the first and for expiry by ``ttl``.
        timeout: Seconds one fetch may take, in all.
        max_size: The most bytes of a body.
        allow_http: Accept an ``http://`` URL (keys fetched in clear can be replaced on the way).

    Raises:
        ValueError: the URL is not https (nor http with ``allow_http``) or has
            no host, or a number is out of range.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh_interval: float = 30.0,
        timeout: float = 5.0,
        max_size: int = 1 << 20,
        allow_http: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
            raise ValueError(f"the JWKS URL must be https:// (http:// only with allow_http), not {url!r}")
        if not parts.hostname:
            raise ValueError(f"the JWKS URL has no host: {url!r}")
        check_seconds("ttl", ttl)
        check_seconds("min_refresh_interval", min_refresh_interval)
        check_seconds("timeout", timeout)
        check_count("max_size", max_size)
        self.url: str = url
        self.ttl: float = float(ttl)
        self.min_refresh_interval: float = float(min_refresh_interval)
        self.timeout: float = float(timeout)
        self.max_size: int = max_size
        self._document: Mapping[str, Any] | None = None
        self._fetched_at = -math.inf  # monotonic: the last good fetch
        self._attempted_at = -math.inf  # monotonic: the last attempt, good or not
        self._lock: anyio.Lock | None = None
        #: How many fetches were attempted (good or not).
        self.fetches: int = 0

    async def document(self, *, refresh: bool = False) -> Mapping[str, Any]:
        """The current JWKS document; ``refresh``: fetch again if ``min_refresh_interval`` allows.

        Concurrent callers share one fetch.

        Raises:
            KeysUnavailable: no document was ever fetched, and fetching one failed
                now or less than ``min_refresh_interval`` seconds ago.

        Cancellation: a fetch under way is abandoned; the next call tries again.
        """
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            now = time.monotonic()
            stale = now - self._fetched_at >= self.ttl
            may_retry = now - self._attempted_at >= self.min_refresh_interval
            if (self._document is None or stale or refresh) and may_retry:
                await self._fetch()
            if self._document is None:
                raise KeysUnavailable(f"no JWKS document could be fetched from {self.url}")
            return self._document

    async def _fetch(self) -> None:
        import httpx  # (see _auth/__init__.py: not at startup)

        self._attempted_at = time.monotonic()
        self.fetches += 1
        try:
            with anyio.fail_after(self.timeout):
                body = await self._get()
            document = json.loads(body)
            TokenVerifier(jwks=document)  # ValueError: not a JWKS document of usable public keys
        except (OSError, TimeoutError, httpx.HTTPError, ValueError, TypeError, RecursionError) as exc:
            _FAILURES.warning(
                "the JWKS document at %s could not be fetched: %s (%s)",
                self.url,
                type(exc).__name__,
                _short(exc),
                extra={"url": self.url},
            )
            return
        self._document = document
        self._fetched_at = time.monotonic()

    async def _get(self) -> bytes:
        import httpx  # (see _auth/__init__.py: not at startup)

        timeout = httpx.Timeout(self.timeout)
        headers = {"accept": "application/json", "accept-encoding": "identity"}
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", self.url, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise ValueError("a compressed body")
            length = response.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_size):
                raise ValueError(f"a body of {length} bytes, over {self.max_size}")
            body = bytearray()
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self.max_size:
                    raise ValueError(f"a body over {self.max_size} bytes")
            return bytes(body)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
