"""How many feed messages a second may each cost a read of the engine to be checked.

A feed message the follower cannot trust as it is (of another epoch, under a
number beyond the next one, or under a number already delivered but not the
entry delivered) is checked against the engine's history, with the follower's
lock held: a read of the engine, during which no other message of the feed is
taken in. Anyone who may publish on the engine can send such messages; without
a bound, a flood of them held the feed of every channel one round trip each.

Past the budget such a message is ignored, and counted (a warning says how many,
at most every :data:`WARN_EVERY` seconds). A real one among them (a gap after a
lost feed message, a new epoch) is found by the follower's periodic check
instead, within the broker's ``check_interval`` (at once after the feed's
connection comes back or its inbox dropped messages: the usual causes of gaps);
a channel whose numbering went back is checked at a next message under budget.
"""

from __future__ import annotations

import logging
import time
from typing import Final

__all__ = ["CHECKS_BURST", "CHECKS_PER_SECOND", "WARN_EVERY", "CheckBudget"]

logger = logging.getLogger("eventstream")

#: Feed messages checked against the engine per second, after a burst of :data:`CHECKS_BURST`.
CHECKS_PER_SECOND: Final = 20.0
CHECKS_BURST: Final = 20
#: Seconds between two warnings about messages left unchecked.
WARN_EVERY: Final = 10.0


class CheckBudget:
    """A token bucket of reads that feed messages may cost, and the count of those refused."""

    __slots__ = ("_stamp", "_tokens", "_warned_at", "engine", "refused", "unreported")

    def __init__(self, engine: str) -> None:
        self.engine = engine
        self._tokens = float(CHECKS_BURST)
        self._stamp = time.monotonic()
        self._warned_at = -WARN_EVERY
        #: Messages left unchecked (ignored) so far, and since the last warning.
        self.refused = 0
        self.unreported = 0

    def take(self, channel: str) -> bool:
        """Whether a message of ``channel`` may be checked now (else: ignore it)."""
        now = time.monotonic()
        self._tokens = min(float(CHECKS_BURST), self._tokens + (now - self._stamp) * CHECKS_PER_SECOND)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.refused += 1
        self.unreported += 1
        if now - self._warned_at >= WARN_EVERY:
            logger.warning(
                "broker: ignoring %d feed messages (the last of channel %r) that the engine %s would "
                "have had to confirm: more than %g a second came (messages that the publish script "
                "did not send, or many gaps at once); the periodic check finds any event they stood for",
                self.unreported, channel, self.engine, CHECKS_PER_SECOND,
            )  # fmt: skip
            self._warned_at = now
            self.unreported = 0
        return False
