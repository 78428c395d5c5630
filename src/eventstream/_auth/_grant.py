"""What an ``authorize`` callable may answer besides ``True`` and ``False``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .._exceptions import EventStreamError

__all__ = ["Grant", "Unauthorized"]


@dataclass(frozen=True, slots=True)
class Grant:
    """An ``authorize`` callable's yes, with what the stream must know about it.

    Returning a grant is the same as returning ``True``, plus what its
    attributes say.

    Raises:
        ValueError: ``expires_at`` is not a finite number, or ``identity`` is
            empty.
        TypeError: ``identity`` is not a str.
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


class Unauthorized(EventStreamError):
    """Raised by an ``authorize`` callable: the request has no valid credentials.

    The endpoint answers ``401 Unauthorized`` with ``WWW-Authenticate: Bearer``
    and nothing else: the exception's message (why the credentials were
    refused) is for the server's debug log, never for the client. Returning
    ``False`` instead answers ``403`` (valid credentials, channels not granted).
    """
