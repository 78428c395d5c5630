"""CORS for endpoints served as raw ASGI apps: which other origins' pages may read the responses.

A page on another origin may read a response only when it carries
``Access-Control-Allow-Origin`` naming that origin (or ``*``); with
credentials (cookies: ``new EventSource(url, {withCredentials: true})``,
``fetch(url, {credentials: "include"})``), only when it names the origin and
says ``Access-Control-Allow-Credentials: true``. A request that is not
"simple" (a POST of JSON, an ``Authorization`` header) is preceded by a
preflight ``OPTIONS`` request, which :class:`CORS` answers itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .._serve._http import header
from ..types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORS"]

_ORIGIN = re.compile(r"(https?)://(\*\.)?([a-z0-9-]+(?:\.[a-z0-9-]+)*)(:[0-9]{1,5})?")
_LABELS = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Request headers a browser sends without asking (the CORS-safelisted ones).
_SAFELISTED = frozenset({"accept", "accept-language", "content-language", "content-type"})
_REFUSED = b"Forbidden: this origin, method or header is not allowed (CORS)"


class CORS:
    """ASGI middleware: CORS headers on the responses of ``app`` for the origins allowed.

    Use it around an app that is served as it is (an endpoint, a raw ASGI app);
    not when the app's framework already answers CORS (Starlette's and
    FastAPI's ``CORSMiddleware``, Django's ``django-cors-headers``): then
    configure it there. A response that already has
    ``Access-Control-Allow-Origin`` is left as it is.

    Args:
        app: The ASGI app.
        allow_origins: Origins whose pages may read the responses: exact
            (``https://app.example.com``, ``http://127.0.0.1:8000``), a pattern
            with one wildcard for one or more subdomain labels
            (``https://*.example.com``, which does not match
            ``https://example.com``), or ``"*"`` (any origin; not with
            credentials).
        allow_credentials: Let pages send cookies (and read the answers):
            ``Access-Control-Allow-Credentials: true`` for allowed origins.
        allow_methods: Methods a preflight may ask for.
        allow_headers: Request headers a preflight may ask for (besides the
            CORS-safelisted ones), any case.
        expose_headers: Response headers the page may read.
        max_age: Seconds a browser may cache a preflight's answer.

    An allowed origin's preflight (``OPTIONS`` with ``Origin`` and
    ``Access-Control-Request-Method``) gets ``204`` with the allowed methods
    and headers; a preflight for another origin, method or header gets ``403``
    and nothing is called. Other requests reach ``app`` whatever their origin
    (a browser enforces CORS by reading the headers); an allowed origin's
    responses get the headers. Every response of an app whose answer depends
    on the origin says ``Vary: Origin``, so caches keep them apart.

    Raises:
        ValueError: an origin that is not ``scheme://host[:port]`` with
            ``http`` or ``https`` (``null`` and paths are refused), ``"*"``
            with ``allow_credentials``, a method or header name that is not a
            token, a negative ``max_age``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allow_origins: Sequence[str],
        allow_credentials: bool = False,
        allow_methods: Sequence[str] = ("GET", "HEAD", "POST"),
        allow_headers: Sequence[str] = ("Authorization", "Content-Type", "Last-Event-ID"),
        expose_headers: Sequence[str] = (),
        max_age: int = 600,
    ) -> None:
        if isinstance(allow_origins, str):
            raise TypeError("allow_origins must be a sequence of origins, not a str")
        self.app = app
        self.allow_any: bool = "*" in allow_origins
        if self.allow_any and allow_credentials:
            raise ValueError("allow_origins '*' cannot go with allow_credentials: name the origins")
        self._exact: set[str] = set()
        self._suffixes: list[tuple[str, str, str]] = []  # (scheme, ".domain", ":port")
        for origin in allow_origins:
            if origin == "*":
                continue
            match = _ORIGIN.fullmatch(origin.lower()) if isinstance(origin, str) else None
            if match is None:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], http or https)")
            scheme, wildcard, host, port = match[1], match[2], match[3], match[4] or ""
            if wildcard:
                self._suffixes.append((scheme, "." + host, port))
            else:
                self._exact.add(f"{scheme}://{host}{port}")
        for name in (*allow_methods, *allow_headers, *expose_headers):
            if not isinstance(name, str) or not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a method or header name")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, not {max_age!r}")
        self.allow_credentials = allow_credentials
        self.allow_methods: tuple[str, ...] = tuple(method.upper() for method in allow_methods)
        self._allow_headers: frozenset[str] = frozenset(name.lower() for name in allow_headers)
        self._preflight: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-methods", ", ".join(self.allow_methods).encode("ascii")),
            (b"access-control-max-age", str(int(max_age)).encode("ascii")),
        ]
        if allow_headers:
            names = ", ".join(allow_headers).encode("ascii")
            self._preflight.append((b"access-control-allow-headers", names))
        self._expose = ", ".join(expose_headers).encode("ascii")

    def allows(self, origin: str) -> bool:
        """Whether a page of ``origin`` (an ``Origin`` header's value) may read the responses."""
        if self.allow_any:
            return True
        origin = origin.lower()
        if origin in self._exact:
            return True
        scheme, sep, rest = origin.partition("://")
        if not sep:
            return False
        host, colon, port = rest.partition(":")
        port = colon + port
        for want_scheme, suffix, want_port in self._suffixes:
            if (
                scheme == want_scheme
                and port == want_port
                and host.endswith(suffix)
                and len(host) > len(suffix)
                and _LABELS.fullmatch(host[: -len(suffix)])
            ):
                return True
        return False

    def _headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        # The CORS headers of an allowed origin's response.
        if self.allow_any:
            return [(b"access-control-allow-origin", b"*")]
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]
        if self.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: answer a preflight, or call ``app`` and add the headers.

        Raises:
            Exception: what ``app`` raises.
        """
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = header(scope, b"origin")
        asked = header(scope, b"access-control-request-method")
        if scope.get("method") == "OPTIONS" and origin is not None and asked is not None:
            await self._answer_preflight(scope, origin, asked, send)
            return
        extra: list[tuple[bytes, bytes]]
        if origin is not None and self.allows(origin):
            extra = self._headers(origin)
            if self._expose:
                extra.append((b"access-control-expose-headers", self._expose))
        else:
            extra = [] if self.allow_any else [(b"vary", b"Origin")]
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(key.lower() == b"access-control-allow-origin" for key, _ in headers):
                    message = {**message, "headers": headers + extra}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _answer_preflight(self, scope: Scope, origin: str, asked: str, send: Send) -> None:
        requested = header(scope, b"access-control-request-headers") or ""
        names = {name.strip().lower() for name in requested.split(",") if name.strip()}
        allowed = (
            self.allows(origin)
            and asked.strip() in self.allow_methods
            and names <= (self._allow_headers | _SAFELISTED)
        )
        vary = [] if self.allow_any else [(b"vary", b"Origin")]
        if not allowed:
            headers = [(b"content-type", b"text/plain; charset=utf-8"), *vary]
            headers.append((b"content-length", str(len(_REFUSED)).encode("ascii")))
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": _REFUSED, "more_body": False})
            return
        headers = [*self._headers(origin), *self._preflight]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
