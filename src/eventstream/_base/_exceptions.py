"""Exceptions, and what an ``authorize`` callable may answer besides ``True`` and ``False``.

Stream semantics reuse anyio's exceptions (``ClosedResourceError`` after
``aclose()``, ``EndOfStream``, ``WouldBlock``); bad arguments raise
``ValueError`` or ``TypeError``. The library's own errors are::

    EventStreamError
    ├── GripPublishError      a GRIP proxy did not accept a publish
    ├── BrokerError           the broker's engine refused a request or was unreachable
    └── Unauthorized          raised by an ``authorize`` callable: answer 401

:class:`Grant` and :class:`Unauthorized` live here, at the bottom, so that
``types.py`` (whose ``Authorize`` names ``Grant``) and the request path take
them without importing the authentication package (public in
:mod:`eventstream.auth`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BrokerError",
    "EventStreamError",
    "Grant",
    "GripPublishError",
    "KeysUnavailable",
    "Unauthorized",
]


class EventStreamError(Exception):
    """Base class of this library's own errors."""


class GripPublishError(EventStreamError):
    """A GRIP proxy did not accept a publish, after any retries.

    The event was still delivered to local subscribers and to the other
    proxies. With several failing proxies, :attr:`errors` holds one error per
    proxy and this one describes the first.

    Attributes:
        proxy: The proxy's control URI (without credentials).
        status: The HTTP status it answered last, or ``None`` if no answer came.
        reason: What the proxy said (the response body), or the connection error.
        attempts: How many requests were made.
        maybe_published: A request reached the proxy (or may have) but no
            answer came: the proxy may have published the event. Its clients
            then have it once (repeats of an item are dropped by its id).
            ``False`` when the proxy was never reached or answered an error.
    """

    def __init__(
        self, proxy: str, status: int | None, reason: str, attempts: int = 1, *, maybe_published: bool = False
    ) -> None:
        self.proxy = proxy
        self.status = status
        self.reason = reason
        self.attempts = attempts
        self.maybe_published = maybe_published
        self.errors: tuple[GripPublishError, ...] = (self,)
        if status is not None:
            what = f"answered {status}"
        elif maybe_published:
            what = "did not answer"
        else:
            what = "could not be reached"
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        maybe = " (it may have published the event)" if maybe_published else ""
        super().__init__(f"GRIP proxy {proxy} {what}{tries}{maybe}: {reason}")


class BrokerError(EventStreamError):
    """The broker's engine refused a request, or could not be reached in time.

    Attributes:
        engine: The engine's URL (without credentials).
        reason: What went wrong (the engine's error or the connection error).
        attempts: How many times the request was tried.
        maybe_published: For a publish: True when an attempt was sent and got
            no answer (a timeout, a connection lost), so the engine may have
            published the event (once: a later attempt would have been
            answered with that outcome), or still publish it: an attempt
            that the engine's client held when the engine went away can
            reach it once it is back. False when the engine refused it or
            it was never sent.
    """

    def __init__(self, engine: str, reason: str, attempts: int = 1, *, maybe_published: bool = False) -> None:
        self.engine = engine
        self.reason = reason
        self.attempts = attempts
        self.maybe_published = maybe_published
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        maybe = " (it may have published the event)" if maybe_published else ""
        super().__init__(f"broker engine {engine} failed{tries}: {reason}{maybe}")


#: The most bytes a :attr:`Grant.info` may weigh, encoded as JSON.
MAX_INFO_BYTES = 512


@dataclass(frozen=True, slots=True)
class Grant:
    """An ``authorize`` callable's yes, with what the stream must know about it.

    Returning a grant is the same as returning ``True``, plus what its
    attributes say.

    Raises:
        ValueError: ``expires_at`` is not a finite number, ``identity`` is
            empty or has a lone surrogate (it cannot be encoded as UTF-8, so
            it could not travel to the engine or in an event), or ``info``
            weighs more than 512 bytes of JSON.
        TypeError: ``identity`` is not a str; ``info`` is not a mapping of
            str to JSON values.
    """

    #: When the credentials end (Unix time, seconds), or ``None``. A direct
    #: stream then ends with a ``stream-expired`` event (``{"reason": "token
    #: expired"}``) and no id, so the client's last id stays the last event it
    #: got: it gets new credentials and reconnects with ``Last-Event-ID`` (or
    #: ``?lastEventId=``), losing nothing that history holds. A stream held by a
    #: GRIP proxy is not ended (the proxy holds it; see the authentication how-to).
    expires_at: float | None = None
    #: Who the client is (a JWT's ``sub``), or ``None``.
    identity: str | None = None
    #: What the ``join`` presence event tells about the client (a display name...):
    #: a mapping of str to JSON values, at most 512 bytes once
    #: encoded as JSON, or ``None``. It is published: put nothing secret in it.
    info: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.expires_at is not None:
            if isinstance(self.expires_at, bool) or not isinstance(self.expires_at, int | float):
                raise ValueError(f"expires_at must be a number of seconds, not {self.expires_at!r}")
            if not math.isfinite(self.expires_at):
                raise ValueError(f"expires_at must be finite, not {self.expires_at!r}")
        if self.identity is not None:
            if not isinstance(self.identity, str):
                raise TypeError(f"identity must be a str, not {type(self.identity).__name__}")
            if not self.identity:
                raise ValueError("identity must not be empty")
            if not self.identity.isascii():  # (the usual case costs no encoding)
                try:
                    self.identity.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(
                        f"identity {self.identity!r} is not text: it has a lone surrogate"
                    ) from None
        if self.info is not None:
            if not isinstance(self.info, Mapping) or not all(isinstance(key, str) for key in self.info):
                raise TypeError(f"info must be a mapping with str keys, not {self.info!r}")
            try:
                encoded = json.dumps(dict(self.info), separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"info must hold JSON values only: {exc}") from None
            if len(encoded.encode()) > MAX_INFO_BYTES:
                raise ValueError(
                    f"info is {len(encoded.encode())} bytes of JSON; the limit is {MAX_INFO_BYTES}"
                )


class Unauthorized(EventStreamError):
    """Raised by an ``authorize`` callable: the request has no valid credentials.

    The endpoint answers ``401 Unauthorized`` with ``WWW-Authenticate: Bearer``
    and nothing else: the exception's message (why the credentials were
    refused) is for the server's debug log, never for the client. Returning
    ``False`` instead answers ``403`` (valid credentials, channels not granted).
    """


class KeysUnavailable(EventStreamError):
    """No verification keys can be had now (the JWKS endpoint failed and none were fetched before).

    An endpoint answers ``503 Service Unavailable`` with ``Retry-After``: the
    client's credentials may be good, they cannot be checked.
    """
