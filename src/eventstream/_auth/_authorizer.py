"""The ready-made ``authorize`` callable: a JWT from a header, a cookie or a one-time ticket."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._base import Grant, KeysUnavailable, Unauthorized, check_count, check_seconds
from .._serve._http import header, query_param
from ._jwks import JWKSFetcher
from ._keys import ASYMMETRIC, TokenVerifier, unverified_kid
from ._patterns import ChannelPattern, granted, patterns_from_claim
from ._tickets import MemoryTicketLedger, TicketCodec, TicketLedger

if TYPE_CHECKING:
    from ..types import Scope

__all__ = ["JWTAuthorizer"]

logger = logging.getLogger("eventstream.auth")

_COOKIE_NAME = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class JWTAuthorizer:
    """An ``authorize`` callable for :class:`~eventstream.EventStream`: who may stream which channels.

    It reads a JWT from the first of these the request has, and only from it:

    1. an ``Authorization: Bearer <token>`` header (apps, servers, polyfills);
    2. the cookie ``cookie`` (a browser's ``EventSource``, same site or with
       ``withCredentials``: set it ``HttpOnly; Secure; SameSite``);
    3. the query parameter ``ticket_param``: a one-time ticket from
       :meth:`mint_ticket` (a cross-origin page that cannot send the cookie);
       only when ``ticket_secret`` is given.

    The token must verify (see the key arguments below); then every requested
    channel must be granted by ``channels`` or by the token's ``channels_claim``
    (patterns: ``user-{sub}`` is filled from the token's claims, ``room-*``
    grants every channel that starts with ``room-``; a claim fills a field
    only when it is a plain word that holds neither the character after the
    field nor, between two fields, their separator: ``user-{sub}-*`` grants
    the sub ``bob-x`` nothing). The answer is a
    :class:`Grant` whose ``expires_at`` is the token's ``exp`` (the stream ends
    then) and whose ``identity`` is the claim ``identity_claim``; ``False``
    (403) when a channel is not granted; :class:`Unauthorized` (401) when the
    credentials are missing, malformed, longer than ``max_token_length`` or
    refused. Why a token was refused is logged at debug level on the
    ``eventstream.auth`` logger, never told to the client.

    Args:
        secret: An HMAC secret (at least 32 bytes); algorithms default to HS256.
        public_key: A PEM public key (RSA, EC, Ed25519/Ed448).
        jwks: A JWKS document (a mapping or JSON text) of public keys, chosen
            by the token's ``kid``.
        jwks_url: Where to fetch the JWKS document (an ``https://`` URL), or a
            :class:`JWKSFetcher` for its limits: fetched when first needed,
            cached, fetched again for an unknown ``kid`` at a bounded rate.
            While no document can be had, requests get 503
            (:class:`KeysUnavailable`).
        algorithms: The accepted algorithms, all of the key's family (never
            ``none``; never HMAC with a public key).
        issuer: The required ``iss``, or ``None`` (not checked).
        audience: The required ``aud``, or ``None`` (then a token with an
            ``aud`` is refused: it is meant for someone else).
        leeway: Seconds of clock skew allowed on ``exp`` and ``nbf``.
        required: Claims a token must have (``exp`` by default: a token
            without one never ends its stream).
        channels: Patterns every valid token is granted (``"user-{sub}"``).
        channels_claim: The claim that lists a token's own patterns, or ``None``.
        identity_claim: The claim that names the client (``Grant.identity``).
        info_claims: The claims copied into ``Grant.info`` (what presence's
            ``join`` events tell, e.g. ``("name",)``); left out when their
            JSON weighs more than 512 bytes.
        cookie: The cookie that holds the token, or ``None``.
        ticket_secret: The secret tickets are signed with (at least 32 bytes,
            not the token's), or ``None``: no tickets.
        ticket_param: The query parameter that holds a ticket.
        ticket_ttl: How long a new ticket is valid, in seconds (it is also
            never valid past its token's ``exp``).
        ticket_ledger: Where used tickets are recorded; by default a
            :class:`MemoryTicketLedger` (single use in this process only).
        max_token_length: Longer credentials are refused unread (401).

    Raises:
        ValueError: see :class:`TokenVerifier` for the keys (``jwks_url``
            counts as one of them; its algorithms must be public-key ones), and
            :class:`JWKSFetcher` for the URL; a pattern in
            ``channels`` is invalid; an invalid cookie name; ``ticket_ttl``
            or ``max_token_length`` not positive.
        TypeError: a key or pattern of the wrong type.
    """

    def __init__(
        self,
        *,
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: Mapping[str, Any] | str | None = None,
        jwks_url: str | JWKSFetcher | None = None,
        algorithms: Sequence[str] | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        required: Sequence[str] = ("exp",),
        channels: Sequence[str] = (),
        channels_claim: str | None = "channels",
        identity_claim: str = "sub",
        info_claims: Sequence[str] = (),
        cookie: str | None = "eventstream_token",
        ticket_secret: str | bytes | None = None,
        ticket_param: str = "ticket",
        ticket_ttl: float = 30.0,
        ticket_ledger: TicketLedger | None = None,
        max_token_length: int = 8192,
    ) -> None:
        self._verifier_options: dict[str, Any] = {
            "algorithms": algorithms,
            "issuer": issuer,
            "audience": audience,
            "leeway": leeway,
            "required": required,
        }
        #: Where the keys are fetched from (``jwks_url``), or ``None``: the keys were given.
        self.jwks_fetcher: JWKSFetcher | None = None
        self._verifier: TokenVerifier | None = None
        self._document: Mapping[str, Any] | None = None  # the JWKS document _verifier was built from
        if jwks_url is None:
            self._verifier = TokenVerifier(
                secret=secret, public_key=public_key, jwks=jwks, **self._verifier_options
            )
        else:
            if any(key is not None for key in (secret, public_key, jwks)):
                raise ValueError("give exactly one of secret, public_key, jwks and jwks_url")
            if isinstance(algorithms, str):
                raise TypeError("algorithms must be a sequence of names, not a str")
            for name in algorithms or ():
                if name not in ASYMMETRIC:
                    raise ValueError(f"algorithm {name!r} cannot be used with a JWKS of public keys")
            if leeway < 0:
                raise ValueError(f"leeway must be >= 0, not {leeway!r}")
            self.jwks_fetcher = jwks_url if isinstance(jwks_url, JWKSFetcher) else JWKSFetcher(jwks_url)
        if isinstance(channels, str):
            raise TypeError("channels must be a sequence of patterns, not a str")
        self.channels: tuple[ChannelPattern, ...] = tuple(ChannelPattern(text) for text in channels)
        if cookie is not None and (not cookie or not set(cookie) <= _COOKIE_NAME):
            raise ValueError(f"{cookie!r} is not a valid cookie name")
        check_seconds("ticket_ttl", ticket_ttl)
        check_count("max_token_length", max_token_length)
        self.channels_claim: str | None = channels_claim
        self.identity_claim: str = identity_claim
        if isinstance(info_claims, str):
            raise TypeError("info_claims must be a sequence of claim names, not a str")
        self.info_claims: tuple[str, ...] = tuple(info_claims)
        self.cookie: str | None = cookie
        self.ticket_param: str = ticket_param
        self.ticket_ttl: float = float(ticket_ttl)
        self.max_token_length: int = max_token_length
        self._tickets = TicketCodec(ticket_secret) if ticket_secret is not None else None
        self.ticket_ledger: TicketLedger = MemoryTicketLedger() if ticket_ledger is None else ticket_ledger

    async def __call__(self, scope: Scope, channels: list[str]) -> Grant | bool:
        """Decide one stream request (the ``authorize`` protocol).

        Raises:
            Unauthorized: no credentials, or none that verify (401).

        Cancellation: a ticket being redeemed may or may not be used up.
        """
        try:
            claims = await self.authenticate(scope)
        except Unauthorized as exc:
            logger.debug("401 for %s: %s", scope.get("path", ""), exc)
            raise
        if not self.grants(claims, channels):
            logger.debug("403 for %s: a channel is not granted", scope.get("path", ""))
            return False
        return self.grant(claims)

    @property
    def verifier(self) -> TokenVerifier:
        """What verifies tokens: of the keys given, or of the JWKS document fetched last (``jwks_url``).

        Raises:
            KeysUnavailable: with ``jwks_url``, no document was fetched yet.
        """
        if self._verifier is None:
            raise KeysUnavailable("no JWKS document was fetched yet")
        return self._verifier

    async def _current_verifier(self, token: str) -> TokenVerifier:
        # With jwks_url: the verifier of the current document, fetched again (at a bounded
        # rate: see JWKSFetcher) when the token's kid is not in it. Raises KeysUnavailable.
        fetcher = self.jwks_fetcher
        if fetcher is None:
            return self.verifier
        verifier = self._verifier_of(await fetcher.document())
        kid = unverified_kid(token)
        if kid is not None and not verifier.knows(kid):
            verifier = self._verifier_of(await fetcher.document(refresh=True))
        return verifier

    def _verifier_of(self, document: Mapping[str, Any]) -> TokenVerifier:
        if document is not self._document or self._verifier is None:
            try:
                verifier = TokenVerifier(jwks=document, **self._verifier_options)
            except ValueError as exc:  # the keys do not suit the algorithms pinned here
                raise KeysUnavailable(f"the JWKS document's keys cannot be used: {exc}") from None
            self._verifier, self._document = verifier, document
        return self._verifier

    async def authenticate(self, scope: Scope) -> dict[str, Any]:
        """The verified claims of the request's credentials (header, cookie or ticket, in that order).

        A ticket is used up by this call.

        Raises:
            Unauthorized: no credentials, or none that verify.
            KeysUnavailable: with ``jwks_url``, no keys can be had now.

        Cancellation: a ticket may or may not be used up.
        """
        token = self._token(scope)
        if token is not None:
            return (await self._current_verifier(token)).verify(token)
        if self._tickets is not None:
            ticket = query_param(scope, self.ticket_param)
            if ticket is not None:
                self._check_length(ticket)
                nonce, expires_at, claims = self._tickets.open(ticket)
                if not await self.ticket_ledger.use(nonce, expires_at):
                    raise Unauthorized("ticket refused: already used")
                return claims
        raise Unauthorized("no credentials")

    def mint_ticket(self, scope: Scope) -> str:
        """A one-time ticket for the token of ``scope`` (header or cookie; not a ticket).

        Call it from an authenticated request of your app (for example ``POST
        /api/ticket`` from the page, with its cookie) and hand the result to the
        page, which opens ``EventSource(url + "?ticket=" + ticket)``. The ticket
        is valid for ``ticket_ttl`` seconds (and not past the token's ``exp``),
        once, and carries the token's claims that deciding needs (``exp``, the
        identity, the channels claim and the claims the patterns name; signed,
        not encrypted: it can be read): the stream it opens ends when the token
        would have expired.

        Raises:
            Unauthorized: the request has no valid token.
            KeysUnavailable: with ``jwks_url``, no document was fetched yet
                (the keys fetched last verify the token: no fetch here).
            RuntimeError: the authorizer has no ``ticket_secret``.
            ValueError: the token's claims are too large for a ticket (4096 characters).
        """
        if self._tickets is None:
            raise RuntimeError("this JWTAuthorizer has no ticket_secret: it mints no tickets")
        token = self._token(scope)
        if token is None:
            raise Unauthorized("no credentials")
        claims = self.verifier.verify(token)
        expires_at = time.time() + self.ticket_ttl
        exp = claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            expires_at = min(expires_at, float(exp))
        return self._tickets.mint(self._ticket_claims(claims), expires_at)

    def _ticket_claims(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        # Only what deciding needs (exp, the identity, the channels claim, the claims its
        # patterns and the configured ones name): the ticket is readable in the URL.
        wanted = {"exp", self.identity_claim, *self.info_claims}
        patterns = list(self.channels)
        if self.channels_claim is not None and self.channels_claim in claims:
            wanted.add(self.channels_claim)
            patterns += patterns_from_claim(claims[self.channels_claim])
        for pattern in patterns:
            wanted |= pattern.fields
        return {name: value for name, value in claims.items() if name in wanted}

    def grants(self, claims: Mapping[str, Any], channels: Sequence[str]) -> bool:
        """Whether verified ``claims`` grant every one of ``channels``."""
        patterns = list(self.channels)
        if self.channels_claim is not None:
            patterns += patterns_from_claim(claims.get(self.channels_claim))
        return granted(patterns, claims, channels)

    def grant(self, claims: Mapping[str, Any]) -> Grant:
        """The :class:`Grant` for verified ``claims``: ``exp``, identity (a non-empty str that is text:
        JSON may carry a lone surrogate, which no engine or event can), info claims."""
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        identity = claims.get(self.identity_claim)
        named = identity if isinstance(identity, str) and identity and _is_text(identity) else None
        info = {name: claims[name] for name in self.info_claims if name in claims}
        if info:
            try:
                return Grant(expires_at=expires_at, identity=named, info=info)
            except (TypeError, ValueError) as exc:  # too large (JSON values only: verified claims)
                logger.debug("info claims left out of the grant: %s", exc)
        return Grant(expires_at=expires_at, identity=named)

    def _token(self, scope: Scope) -> str | None:
        # The bearer header, else the cookie: the first present decides (None: neither).
        authorization = header(scope, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            if scheme.lower() == "bearer":
                token = token.strip()
                self._check_length(token)
                if not token:
                    raise Unauthorized("empty bearer token")
                return token
        if self.cookie is not None:
            cookie = _cookie(scope, self.cookie.encode("ascii"))
            if cookie is not None:
                self._check_length(cookie)
                return cookie
        return None

    def _check_length(self, credential: str) -> None:
        if len(credential) > self.max_token_length:
            raise Unauthorized("credential too long")


def _cookie(scope: Scope, wanted: bytes) -> str | None:
    # Cookie headers (HTTP/2 sends one per cookie) are "; "-separated pairs.
    for key, value in scope.get("headers", ()):
        if key.lower() != b"cookie":
            continue
        for pair in bytes(value).split(b";"):
            name, eq, content = pair.strip().partition(b"=")
            if eq and name == wanted:
                return content.strip().strip(b'"').decode("latin-1")
    return None


def _is_text(value: str) -> bool:
    """Whether ``value`` can be encoded as UTF-8 (has no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
