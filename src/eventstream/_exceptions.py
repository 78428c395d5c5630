"""Exceptions.

Stream semantics reuse anyio's exceptions (``ClosedResourceError`` after
``aclose()``, ``EndOfStream``, ``WouldBlock``); bad arguments raise
``ValueError`` or ``TypeError``. The library's own errors are::

    EventStreamError
    ├── GripPublishError      a GRIP proxy did not accept a publish
    └── BrokerError           the broker's engine refused a request or was unreachable
"""

from __future__ import annotations

__all__ = ["BrokerError", "EventStreamError", "GripPublishError"]


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
            answered with that outcome); False when the engine refused it
            or it was never sent.
    """

    def __init__(self, engine: str, reason: str, attempts: int = 1, *, maybe_published: bool = False) -> None:
        self.engine = engine
        self.reason = reason
        self.attempts = attempts
        self.maybe_published = maybe_published
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        maybe = " (it may have published the event)" if maybe_published else ""
        super().__init__(f"broker engine {engine} failed{tries}: {reason}{maybe}")
