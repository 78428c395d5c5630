"""A ticket ledger in the broker's engine: a ticket is single-use across every process."""

from __future__ import annotations

import math

from .._base import BrokerError, check_seconds
from .._redis import RedisBroker
from .._redis._connect import glide_module

__all__ = ["RedisTicketLedger"]


class RedisTicketLedger:
    """A :class:`~eventstream.auth.TicketLedger` in a running :class:`~eventstream.RedisBroker`'s engine.

    Each used ticket is a key under the broker's ``key_prefix``, set with
    ``SET key 1 NX PXAT expiry+clock_skew``: the first process to use a
    ticket sets it, every later use (in any process on that engine and
    prefix) is refused, and the engine forgets it ``clock_skew`` seconds
    after the ticket expires. The engine's clock decides when the key goes,
    each process's own clock whether a ticket has expired: a process whose
    clock is behind the engine's still takes the ticket for valid after the
    expiry, so the key outlives it by the most the clocks may differ
    (60 s by default); a larger difference makes a used ticket usable again
    in the slow process for the excess.

    Raises:
        TypeError: ``broker`` is not a :class:`~eventstream.RedisBroker`.
        ValueError: ``clock_skew`` is negative or not a finite number.
    """

    def __init__(self, broker: RedisBroker, *, clock_skew: float = 60.0) -> None:
        if not isinstance(broker, RedisBroker):
            raise TypeError(f"broker must be a RedisBroker, not {type(broker).__name__}")
        check_seconds("clock_skew", clock_skew, allow_zero=True)
        self.broker = broker
        #: Seconds a used ticket is kept past its expiry: the most the clocks may differ.
        self.clock_skew: float = float(clock_skew)

    async def use(self, nonce: str, expires_at: float) -> bool:
        """Record ticket ``nonce`` as used, till ``clock_skew`` past ``expires_at``: ``True`` the first time.

        The first time in any process on the engine and prefix.

        Raises:
            RuntimeError: the broker is not running (enter its stream first).
            BrokerError: the engine refused the request or did not answer in time
                (the endpoint answers ``503``).

        Cancellation: the ticket may or may not be recorded (then it is refused later).
        """
        client = self.broker._parts.client
        if client is None:
            raise RuntimeError("the broker is not running: enter its EventStream (async with) first")
        glide = glide_module()
        key = self.broker._options.layout.ticket(nonce)
        forget_at = math.ceil((expires_at + self.clock_skew) * 1000)  # Unix ms, by the engine's clock
        expiry = glide.ExpirySet(glide.ExpiryType.UNIX_MILLSEC, forget_at)
        try:
            answer = await client.set(
                key, "1", conditional_set=glide.ConditionalChange.ONLY_IF_DOES_NOT_EXIST, expiry=expiry
            )
        except glide.GlideError as exc:
            raise BrokerError(self.broker.description, f"recording a used ticket: {exc}") from None
        return answer == "OK"
