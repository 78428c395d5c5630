"""Channels followed without local subscribers: no longer followed once idle for ``linger``.

A channel (followed, or only subscribed to after a failed first read) that
has had no local subscriber, and no connection being prepared for it, for
``linger`` seconds is no longer followed: its copy is dropped and its feed
unsubscribed (a connection that asks for it again subscribes and reads it
from the engine). The periodic check asks for this (:meth:`IdleChannels.forget`);
the idle channels are dropped :data:`FORGET_AT_ONCE` at a time, with a pass of
the event loop in between: thousands of them do not hold up the feed.

Only the channels that may have become idle since the last check are looked
at, not every channel followed (under a flood of new channels a process
follows a hundred thousand, and copying their names alone held the loop for
milliseconds): those whose last local subscriber left (the hub notes them),
whose connections' preparation ended, that a request of reads subscribed to
(its connection may have gone meanwhile), or that were read again
(:meth:`IdleChannels.maybe_idle`). A channel becomes idle only in one of
these ways: it is followed only through a preparation, or read again. Every
:data:`LOOK_AT_ALL_EVERY` checks, every channel followed is looked at as well
(without moving the time it was first seen idle): a way missed would hold a
channel for nobody that long at most, not for ever.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import anyio
import anyio.lowlevel

if TYPE_CHECKING:
    from .._core import Hub
    from ._history import SharedHistory
    from ._interest import FeedInterest

__all__ = ["FORGET_AT_ONCE", "LOOK_AT_ALL_EVERY", "Followed", "IdleChannels"]

#: Idle channels forgotten between two passes of the event loop.
FORGET_AT_ONCE = 512
#: Channels looked at between two passes of the event loop.
_SCAN_AT_ONCE = 1024
#: Checks between two looks at every channel followed.
LOOK_AT_ALL_EVERY = 60


class Followed(Protocol):
    """What :meth:`IdleChannels.forget` reads and changes of the follower (``_follow.py``)."""

    hub: Hub
    interest: FeedInterest
    history: SharedHistory
    loaded: dict[str, None]


class IdleChannels:
    """When each channel followed without local subscribers was first seen so."""

    __slots__ = ("_checks", "_maybe", "_since", "linger")

    def __init__(self, linger: float) -> None:
        self.linger = linger
        #: Idle channels, oldest first (insertion order: a channel idle again goes last).
        self._since: dict[str, float] = {}
        #: Channels that may have become idle since the last look (besides the hub's). (A dict
        #: of None: one of strings only is left out of the garbage collector's passes.)
        self._maybe: dict[str, None] = {}
        self._checks = 0

    def maybe_idle(self, names: Iterable[str]) -> None:
        """Look at ``names`` at the next check: their preparation ended, a request of reads
        subscribed to them, or they were read again."""
        self._maybe.update(dict.fromkeys(names))

    async def forget(self, follower: Followed, preparing: dict[str, int]) -> None:
        """Stop following the channels idle for ``linger`` (``preparing``: channels of connections
        being prepared, which are not idle)."""
        hub, interest, since = follower.hub, follower.interest, self._since
        now = anyio.current_time()
        maybe, self._maybe = self._maybe, {}
        maybe.update(hub.take_vacated())
        # Note the channels idle from now (a channel that gained a subscriber meanwhile
        # is dropped from the list: when it is idle again, the hub says so), by chunks
        # with a pass of the event loop in between.
        self._checks += 1
        names = list(maybe)
        if not self._checks % LOOK_AT_ALL_EVERY:  # (copies, made at C speed)
            names += [*follower.loaded, *interest.subscribed]
        for start in range(0, len(names), _SCAN_AT_ONCE):
            if start:
                await anyio.lowlevel.checkpoint()
            for index, name in enumerate(names[start : start + _SCAN_AT_ONCE], start):
                if hub.subscribed(name) or name in preparing:
                    since.pop(name, None)
                elif name in follower.loaded or name in interest.subscribed:
                    if index < len(maybe):  # idle from now (busy, or not followed, before)
                        since.pop(name, None)
                        since[name] = now
                    elif name not in since:  # (found by the look at every channel)
                        since[name] = now
                else:
                    since.pop(name, None)
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
                since.pop(name, None)
                if name in preparing or hub.subscribed(name):
                    continue  # (busy again: idle again later, the hub or its preparation says so)
                dropped.append(name)
                if name in follower.loaded:
                    del follower.loaded[name]
                    follower.history.forget(name)
            if interest.drop(dropped):
                await interest.unsubscribe(dropped)
