"""Channels followed without local subscribers: no longer followed once idle for ``linger``.

A channel (followed, or only subscribed to after a failed first read) that
has had no local subscriber, and no connection being prepared for it, for
``linger`` seconds is no longer followed: its copy is dropped and its feed
unsubscribed (a connection that asks for it again subscribes and reads it
from the engine). The periodic check asks for this (:meth:`IdleChannels.forget`);
the idle channels are dropped :data:`FORGET_AT_ONCE` at a time, with a pass of
the event loop in between: thousands of them do not hold up the feed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from .._hub import Hub
    from ._history import SharedHistory
    from ._interest import FeedInterest

__all__ = ["FORGET_AT_ONCE", "Followed", "IdleChannels"]

#: Idle channels forgotten between two passes of the event loop.
FORGET_AT_ONCE = 512
#: Channels looked at between two passes of the event loop.
_SCAN_AT_ONCE = 4096


class Followed(Protocol):
    """What :meth:`IdleChannels.forget` reads and changes of the follower (``_follow.py``)."""

    hub: Hub
    interest: FeedInterest
    history: SharedHistory
    loaded: dict[str, None]


class IdleChannels:
    """When each channel followed without local subscribers was first seen so."""

    __slots__ = ("_since", "linger")

    def __init__(self, linger: float) -> None:
        self.linger = linger
        self._since: dict[str, float] = {}

    async def forget(self, follower: Followed, preparing: dict[str, int]) -> None:
        """Stop following the channels idle for ``linger`` (``preparing``: channels of connections
        being prepared, which are not idle)."""
        hub, interest, since = follower.hub, follower.interest, self._since
        now = anyio.current_time()
        # Note when each followed channel was first seen idle (a channel seen with
        # a subscriber or being prepared is not idle), by chunks with a pass of the
        # event loop in between: a long list does not hold up the feed.
        # (Copies of the keys, made at C speed: the dicts change during the passes.)
        subscribed, loaded = list(interest.subscribed), list(follower.loaded)
        for names, also_subscribed in ((subscribed, False), (loaded, True)):
            for start in range(0, len(names), _SCAN_AT_ONCE):
                await anyio.lowlevel.checkpoint()
                for name in names[start : start + _SCAN_AT_ONCE]:
                    if also_subscribed and name in interest.subscribed:
                        continue  # (seen among the subscribed)
                    if hub.subscribed(name) or name in preparing:
                        since.pop(name, None)
                    elif name not in since:
                        since[name] = now
        # Oldest first: stop at the first not due. (Only this pass changes `since`,
        # so its iteration goes on across the passes of the event loop.)
        due: list[str] = []
        for count, (name, first) in enumerate(since.items(), 1):
            if now - first < self.linger:
                break
            due.append(name)
            if not count % _SCAN_AT_ONCE:
                await anyio.lowlevel.checkpoint()
        for start in range(0, len(due), FORGET_AT_ONCE):
            if start:
                await anyio.lowlevel.checkpoint()  # (a channel may have gained a subscriber since)
            dropped = []
            for name in due[start : start + FORGET_AT_ONCE]:
                if name in preparing or hub.subscribed(name):
                    continue
                dropped.append(name)
                since.pop(name, None)
                if name in follower.loaded:
                    del follower.loaded[name]
                    follower.history.forget(name)
            if interest.drop(dropped):
                await interest.unsubscribe(dropped)
