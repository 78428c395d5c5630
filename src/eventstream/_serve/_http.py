"""Small HTTP helpers for the endpoint: headers, content negotiation, plain responses."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from ..types import Scope, Send

__all__ = ["accepts_event_stream", "header", "query_param", "raw_path", "send_plain", "text_header"]

_SPECIFICITY = {"text/event-stream": 2, "text/*": 1, "*/*": 0}


def header(scope: Scope, name: bytes) -> str | None:
    """The value of request header ``name`` (lower case), repeated values joined by ``,``."""
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if not values:
        return None
    return b",".join(values).decode("latin-1")


def text_header(scope: Scope, name: bytes) -> str | None:
    """As :func:`header`, decoded as UTF-8 (what browsers send): for headers that carry text, such as ids.

    Bytes that are not UTF-8 become lone surrogates (``U+DC80`` to
    ``U+DCFF``), which no valid id or channel name has: such a value is
    read, and matches nothing.
    """
    values = [value for key, value in scope.get("headers", ()) if key.lower() == name]
    if not values:
        return None
    return b",".join(values).decode("utf-8", "surrogateescape")


def raw_path(scope: Scope) -> bytes:
    """The request path as the client sent it (``raw_path``; the decoded ``path`` when it is missing)."""
    raw = scope.get("raw_path")
    return raw if isinstance(raw, bytes) else str(scope.get("path", "/")).encode("utf-8")


def query_param(scope: Scope, name: str) -> str | None:
    """The first value of query parameter ``name`` (decoded as UTF-8), or ``None``.

    Raw and percent-encoded bytes alike are decoded as UTF-8; bytes that are
    not UTF-8 become lone surrogates, as in :func:`text_header`.
    """
    query = scope.get("query_string", b"")
    if not query:
        return None
    text = query.decode("utf-8", "surrogateescape")
    if name not in text and "%" not in text:
        return None  # (no key can decode to it: most queries, their channels', are not walked)
    for key, value in parse_qsl(text, keep_blank_values=True, errors="surrogateescape"):
        if key == name:
            return str(value)
    return None


def accepts_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header value allows a ``text/event-stream`` response.

    A missing or empty header accepts anything. Otherwise the most specific
    matching media range decides (``text/event-stream`` over ``text/*`` over
    ``*/*``), and it must have a ``q`` above zero.
    """
    if accept is None or not accept.strip():
        return True
    best_specificity = -1
    best_q = 0.0
    for media_range in accept.split(","):
        media, *params = media_range.split(";")
        specificity = _SPECIFICITY.get(media.strip().lower())
        if specificity is None:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 1.0  # an unreadable q is ignored, as RFC 9110 allows
        if specificity > best_specificity:
            best_specificity, best_q = specificity, q
        elif specificity == best_specificity:
            best_q = max(best_q, q)
    return best_specificity >= 0 and best_q > 0


async def send_plain(
    send: Send,
    status: int,
    text: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    """Send a complete ``text/plain`` response (headers only for a HEAD request)."""
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})
