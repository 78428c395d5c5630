"""A ticket ledger in the broker's engine: a ticket is single-use across every process."""

from __future__ import annotations

import math

from .._base import BrokerError
from .._redis import RedisBroker
from .._redis._connect import glide_module

__all__ = ["RedisTicketLedger"]


class RedisTicketLedger:
    """A :class:`~eventstream.auth.TicketLedger` in a running :class:`~eventstream.RedisBroker`'s engine.

    Each used ticket is a key under the broker's ``key_prefix``, set with
    ``SET key 1 NX PXAT expiry``: the first process to use a ticket sets it,
    every later use (in any process on that engine and prefix) is refused,
    and the engine forgets it when the ticket expires.

    Raises:
        TypeError: ``broker`` is not a :class:`~eventstream.RedisBroker`.
    """

    def __init__(self, broker: RedisBroker) -> None:
        if not isinstance(broker, RedisBroker):
            raise TypeError(f"broker must be a RedisBroker, not {type(broker).__name__}")
        self.broker = broker

    async def use(self, nonce: str, expires_at: float) -> bool:
        """Record ticket ``nonce`` as used until ``expires_at``: ``True`` the first time in any process.

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
        expiry = glide.ExpirySet(glide.ExpiryType.UNIX_MILLSEC, math.ceil(expires_at * 1000))
        try:
            answer = await client.set(
                key, "1", conditional_set=glide.ConditionalChange.ONLY_IF_DOES_NOT_EXIST, expiry=expiry
            )
        except glide.GlideError as exc:
            raise BrokerError(self.broker.description, f"recording a used ticket: {exc}") from None
        return answer == "OK"
