"""Log lines about clients, limited in rate: a flood of clients must not become a flood of lines.

Every line of the library goes to the ``eventstream`` logger (a
``NullHandler`` is attached: the application decides where lines go). Lines
about one client carry ``extra`` fields (``channels``, ``template``,
``reason``) for structured handlers (structlog, a JSON formatter).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

__all__ = ["RateLimitedLog", "logger"]

logger: Final = logging.getLogger("eventstream")


class RateLimitedLog:
    """At most ``burst`` lines at once and one per ``every`` seconds on average (a token bucket).

    Suppressed lines are counted, and the next line that passes says how many
    were left out.
    """

    __slots__ = ("_at", "_tokens", "burst", "every", "suppressed")

    def __init__(self, *, burst: int = 10, every: float = 6.0) -> None:
        self.burst = burst
        self.every = every
        self._tokens = float(burst)
        self._at = time.monotonic()
        #: Lines left out since the last one logged.
        self.suppressed = 0

    def warning(self, message: str, *args: object, extra: dict[str, Any]) -> bool:
        """Log ``message % args`` at WARNING unless over the rate; return whether it was logged."""
        return self._log(logging.WARNING, message, args, extra)

    def error(self, message: str, *args: object, extra: dict[str, Any] | None = None) -> bool:
        """Log ``message % args`` at ERROR unless over the rate; return whether it was logged."""
        return self._log(logging.ERROR, message, args, extra)

    def _log(self, level: int, message: str, args: tuple[object, ...], extra: dict[str, Any] | None) -> bool:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) / self.every)
        self._at = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            message += " (and %d more such lines left out)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        logger.log(level, message, *args, extra=extra)
        return True
