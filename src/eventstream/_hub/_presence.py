"""Who is subscribed, in this process: the identities of open streams per channel (``presence=True``).

An open stream is present under the identity its ``authorize`` answer gave
(:attr:`~eventstream.auth.Grant.identity`); a stream without one is counted,
not named. :class:`PresenceTable` is this process's part; a broker answers
for every process (:meth:`Broker.presence`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PresenceMember", "PresenceTable"]


@dataclass(frozen=True, slots=True)
class PresenceMember:
    """One identity subscribed to a channel, and how many streams it has open on it."""

    identity: str
    connections: int


class PresenceTable:
    """The identities subscribed to each channel in this process, with their stream counts."""

    __slots__ = ("_channels",)

    def __init__(self) -> None:
        self._channels: dict[str, dict[str, int]] = {}

    def join(self, channels: Sequence[str], identity: str) -> None:
        """A stream of ``identity`` on ``channels`` opened."""
        for channel in channels:
            members = self._channels.setdefault(channel, {})
            members[identity] = members.get(identity, 0) + 1

    def leave(self, channels: Sequence[str], identity: str) -> None:
        """A stream that :meth:`join` counted ended."""
        for channel in channels:
            members = self._channels.get(channel)
            if members is None or identity not in members:
                continue
            if members[identity] <= 1:
                del members[identity]
                if not members:
                    del self._channels[channel]
            else:
                members[identity] -= 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy of every channel's identities and stream counts (what a broker's heartbeat sends)."""
        return {channel: dict(members) for channel, members in self._channels.items()}

    def members(self, channel: str) -> list[PresenceMember]:
        """Who is subscribed to ``channel``, by identity."""
        members = self._channels.get(channel, {})
        return [PresenceMember(identity, count) for identity, count in sorted(members.items())]
