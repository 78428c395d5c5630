"""One-time tickets: short-lived, single-use values a browser puts in a stream's URL.

A ticket is ``v1.<payload>.<mac>``: the payload (base64url JSON) holds a
random nonce, the ticket's expiry and the claims of the token it was minted
from; the mac is HMAC-SHA256 over it with the app's ticket secret, compared
in constant time. A ticket is checked (format, mac, expiry) before the
ledger is asked, so forged tickets cost one HMAC and never fill the ledger;
the ledger then records the nonce until the ticket expires, and refuses it
the second time. :class:`TicketLedger` is what a shared ledger must do (for
instance Redis ``SET nonce 1 NX PXAT expiry+skew``: kept past the expiry by
the most the clocks may differ, as its clock forgets and each process's clock
checks the expiry) so that a ticket is single-use across processes;
:class:`MemoryTicketLedger` holds it in this process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

from .._base import Unauthorized, check_count

__all__ = ["MemoryTicketLedger", "TicketCodec", "TicketLedger"]

logger = logging.getLogger("eventstream")

_VERSION = "v1"
_DOMAIN = b"eventstream-ticket/v1."  # the mac covers this label, so no other HMAC of the secret passes
_MAX_TICKET = 4096


class TicketLedger(Protocol):
    """Where used tickets are recorded until they expire (in-process, or shared by every process)."""

    async def use(self, nonce: str, expires_at: float) -> bool:
        """Record ticket ``nonce`` as used until ``expires_at`` (Unix time).

        Returns ``True`` the first time, ``False`` when it was used before (or
        when the ledger cannot record it: a full ledger refuses, never forgets
        a used ticket early). A ledger that forgets by another clock than the
        processes' (a shared store's) keeps the record past ``expires_at`` by
        the most the clocks may differ: a process whose clock is behind still
        takes the ticket for unexpired.

        Cancellation: the ticket may or may not be recorded.
        """


class MemoryTicketLedger:
    """A :class:`TicketLedger` in this process: at most ``max_tickets`` unexpired tickets.

    Expired tickets are purged as new ones are used. When ``max_tickets``
    tickets are in use and none has expired, a new ticket is refused (and a
    warning logged): a ticket is never forgotten before it expires, so it can
    never be used twice. Tickets are single-use in this process only: with
    several processes, use a shared ledger.

    Raises:
        ValueError: ``max_tickets`` is below 1.
    """

    def __init__(self, max_tickets: int = 100_000) -> None:
        check_count("max_tickets", max_tickets)
        self.max_tickets: int = max_tickets
        self._used: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []

    def __len__(self) -> int:
        """How many unexpired tickets are recorded (expired ones may still count until purged)."""
        return len(self._used)

    async def use(self, nonce: str, expires_at: float) -> bool:
        now = time.time()
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            _, old = heapq.heappop(expiries)
            del self._used[old]
        if nonce in self._used:
            return False
        if len(self._used) >= self.max_tickets:
            logger.warning("ticket refused: %d unexpired tickets are recorded", len(self._used))
            return False
        self._used[nonce] = expires_at
        heapq.heappush(expiries, (expires_at, nonce))
        return True


class TicketCodec:
    """Mints tickets and opens them, with one secret (at least 32 bytes).

    Raises:
        ValueError: ``secret`` is shorter than 32 bytes.
        TypeError: ``secret`` is neither str nor bytes.
    """

    def __init__(self, secret: str | bytes) -> None:
        key = secret.encode("utf-8") if isinstance(secret, str) else secret
        if not isinstance(key, bytes):
            raise TypeError(f"ticket_secret must be str or bytes, not {type(secret).__name__}")
        if len(key) < 32:
            raise ValueError(f"ticket_secret needs at least 32 bytes, not {len(key)}")
        self._key = key

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._key, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def mint(self, claims: Mapping[str, Any], expires_at: float) -> str:
        """A new ticket for ``claims``, valid until ``expires_at`` (Unix time).

        Raises:
            ValueError: the claims make a ticket longer than 4096 characters,
                or are not JSON.
        """
        body = {"n": secrets.token_urlsafe(18), "e": expires_at, "c": dict(claims)}
        raw = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
        payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        ticket = f"{_VERSION}.{payload}.{self._mac(payload)}"
        if len(ticket) > _MAX_TICKET:
            raise ValueError(f"the token's claims make a ticket of {len(ticket)} characters (at most 4096)")
        return ticket

    def open(self, ticket: str) -> tuple[str, float, dict[str, Any]]:
        """The nonce, expiry and claims of a genuine, unexpired ticket (not yet marked used).

        Raises:
            Unauthorized: the ticket is malformed, too long, minted with another
                secret, or expired.
        """
        if len(ticket) > _MAX_TICKET:
            raise Unauthorized("ticket refused: too long")
        version, _, rest = ticket.partition(".")
        payload, _, mac = rest.partition(".")
        if version != _VERSION or not payload.isascii() or not mac.isascii():
            raise Unauthorized("ticket refused: malformed")
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise Unauthorized("ticket refused: bad signature")
        try:
            body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            nonce, expires_at, claims = body["n"], body["e"], body["c"]
        except (ValueError, binascii.Error, KeyError, TypeError):
            raise Unauthorized("ticket refused: malformed payload") from None
        if not isinstance(nonce, str) or not isinstance(claims, dict):
            raise Unauthorized("ticket refused: malformed payload")
        if not isinstance(expires_at, int | float) or not math.isfinite(expires_at):
            raise Unauthorized("ticket refused: malformed payload")
        if expires_at <= time.time():
            raise Unauthorized("ticket refused: expired")
        return nonce, float(expires_at), claims
