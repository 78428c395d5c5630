"""Which channels' feeds this process takes in: one pub/sub subscription per channel it follows.

A process subscribes to a channel's feed before it first reads the channel's
history (so every event after that read comes through the feed, and the
events before it are in what it read), and unsubscribes once the channel has
had no local subscriber for ``linger`` seconds (so a channel whose only
client reconnects, or flaps, costs no subscribe and no read). A process with
no subscribers takes in no feed messages.

Subscribing and unsubscribing go one request at a time, in order, on the
feed's client, so a channel dropped and followed again right after is
subscribed in the end. A channel counts as subscribed once the engine
confirmed it, and stops counting the moment it is dropped (before the engine
confirms that): a connection that asks for it meanwhile subscribes again,
after the unsubscribe.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING

import anyio

from .._base import BrokerError
from ._connect import glide_module

if TYPE_CHECKING:
    from glide import GlideClient

__all__ = ["FeedInterest"]

logger = logging.getLogger("eventstream")


class FeedInterest:
    """The feed client's subscriptions: the pub/sub channel of each channel followed.

    Args:
        feed_prefix: The start of every feed channel (the channel's name follows).
        engine: The engine's description (for errors).
        request_timeout: Seconds a subscribe or unsubscribe request may take.
    """

    __slots__ = ("_client", "_engine", "_lock", "_prefix", "_timeout_ms", "requests", "subscribed")

    def __init__(self, *, feed_prefix: str, engine: str, request_timeout: float) -> None:
        self._prefix = feed_prefix
        self._engine = engine
        self._timeout_ms = max(1, round(request_timeout * 1000))
        self._client: GlideClient | None = None
        #: Serialises the requests: a channel's subscribe and unsubscribe reach the engine in order.
        self._lock = anyio.Lock(fast_acquire=True)
        #: Channels whose feed the engine confirmed and that were not dropped since.
        self.subscribed: set[str] = set()
        #: Subscribe and unsubscribe requests sent so far (each for one or many channels).
        self.requests = 0

    def bind(self, client: GlideClient | None) -> None:
        """Send the requests through ``client`` (the feed's), or through none (stopped)."""
        self._client = client

    async def follow(self, channels: Collection[str]) -> None:
        """Subscribe to the feed of each of ``channels`` not subscribed yet; return once the engine confirmed.

        Channels asked for at once go in one request.

        Raises:
            BrokerError: the engine did not confirm within the request timeout, or the
                broker is not running (the channels stay unsubscribed).

        Cancellation: the request may or may not have been sent; the channels
        count as unsubscribed (a later call subscribes them again).
        """
        if all(channel in self.subscribed for channel in channels):
            return
        async with self._lock:
            new = {channel for channel in channels if channel not in self.subscribed}
            if not new:
                return
            client = self._client
            if client is None:
                raise BrokerError(self._engine, "not connected")
            names = {self._prefix + channel for channel in new}
            glide = glide_module()
            self.requests += 1
            try:
                await client.subscribe(names, timeout_ms=self._timeout_ms)
            except glide.GlideError as exc:
                # glide would keep trying in the background: take the request back
                # (without waiting: the engine did not answer the first).
                with contextlib.suppress(glide.GlideError):
                    await client.unsubscribe_lazy(names)
                reason = f"cannot subscribe to the feed: {type(exc).__name__}: {exc}"
                raise BrokerError(self._engine, reason) from exc
            self.subscribed |= new

    def drop(self, channels: Collection[str]) -> bool:
        """Stop counting ``channels`` as subscribed (call :meth:`unsubscribe` with them next).

        Returns whether any of them was subscribed.
        """
        subscribed = self.subscribed
        dropped = False
        for channel in channels:
            if channel in subscribed:
                subscribed.discard(channel)
                dropped = True
        return dropped

    async def unsubscribe(self, channels: Collection[str]) -> None:
        """Unsubscribe from the feed of ``channels`` (dropped with :meth:`drop` before).

        Channels followed again meanwhile are left subscribed. A failure is
        logged: a feed message of a channel not followed is ignored.

        Cancellation: the request may or may not have been sent.
        """
        async with self._lock:
            client = self._client
            gone = {self._prefix + channel for channel in channels if channel not in self.subscribed}
            if client is None or not gone:
                return
            self.requests += 1
            glide = glide_module()
            try:
                await client.unsubscribe(gone, timeout_ms=self._timeout_ms)
            except glide.GlideError as exc:
                logger.warning(
                    "broker: cannot unsubscribe from the feed of %d channels on the engine %s (%s): "
                    "their messages are ignored",
                    len(gone), self._engine, exc,
                )  # fmt: skip
