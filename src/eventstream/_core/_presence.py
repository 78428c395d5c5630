"""Who is subscribed, in this process: the identities of open streams per channel (``presence=True``).

An open stream is present under the identity its ``authorize`` answer gave
(:attr:`~eventstream.auth.Grant.identity`); a stream without one is counted,
not named. :class:`PresenceTable` is this process's part; a broker answers
for every process (:meth:`Broker.presence`).

Join and leave events: when an identity's first stream on a present channel
opens in this process, a ``join`` event is published on the channel's
companion channel, :func:`presence_channel` (``presence:{channel}``); when its
last stream there ends, a ``leave`` event. Channels that start with
``presence:`` are reserved for them (see :class:`PresenceTable`).
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, cast

__all__ = [
    "PRESENCE_PREFIX",
    "PresenceMember",
    "PresenceTable",
    "member_value",
    "parse_member_value",
    "presence_channel",
    "presence_event",
    "presence_members",
    "presence_selection",
]

#: The start of every companion channel's name: ``presence:{channel}`` carries
#: the ``join`` and ``leave`` events of ``channel``.
PRESENCE_PREFIX = "presence:"

#: Publishes join or leave events: ``(kind, [(channel, identity, info)])``.
Announcer = Callable[[str, list[tuple[str, str, Mapping[str, Any] | None]]], Awaitable[None]]


def presence_channel(channel: str) -> str:
    """The companion channel that carries ``channel``'s ``join`` and ``leave`` events."""
    return PRESENCE_PREFIX + channel


def presence_selection(presence: object) -> tuple[frozenset[str], tuple[str, ...]] | None:
    """The channels ``presence`` (an ``EventStream`` argument) keeps: (names, prefixes), or ``None``: all.

    ``True`` keeps every channel (but the companions); a collection of names,
    and of prefixes ending with ``*`` (``room-*``), keeps those.

    Raises:
        TypeError: ``presence`` is a str, or holds something that is not a str.
        ValueError: an entry is empty, only ``*``, has a ``*`` before its end,
            or starts with ``presence:`` (the companion channels have no presence).
    """
    if presence is True:
        return None
    if isinstance(presence, str | bytes) or not isinstance(presence, Collection):
        raise TypeError(f"presence must be a bool or a collection of channel names, not {presence!r}")
    names: set[str] = set()
    prefixes: list[str] = []
    for entry in presence:
        if not isinstance(entry, str):
            raise TypeError(f"a presence channel must be a str, not {type(entry).__name__}")
        body = entry.removesuffix("*")
        if not body or "*" in body:
            raise ValueError(f"presence channel {entry!r}: a name, or a prefix ending with a single '*'")
        if entry.startswith(PRESENCE_PREFIX):
            raise ValueError(
                f"presence channel {entry!r}: channels that start with {PRESENCE_PREFIX!r} "
                "carry join and leave events and have no presence of their own"
            )
        if entry.endswith("*"):
            prefixes.append(body)
        else:
            names.add(entry)
    return frozenset(names), tuple(prefixes)


class PresenceMember(NamedTuple):
    """One identity subscribed to a channel, and how many streams it has open on it.

    A named tuple (a query may answer with 10,000 of them: see
    :func:`presence_members` for how they are made).
    """

    #: The :attr:`~eventstream.auth.Grant.identity` of its streams.
    identity: str
    #: Its streams open on the channel (summed over the processes, with a broker).
    connections: int
    #: What its ``join`` event said: the :attr:`~eventstream.auth.Grant.info` of its first
    #: stream on the channel (in one of the processes where it is present), or ``None``.
    info: Mapping[str, Any] | None = None


class PresenceTable:
    """The identities subscribed to each channel in this process, with their stream counts.

    ``selection`` (from :func:`presence_selection`) says which channels are
    kept: ``None``, all but the companion channels (``presence:...``).
    """

    __slots__ = ("_channels", "_info", "_names", "_prefixes", "announcer")

    def __init__(self, selection: tuple[frozenset[str], tuple[str, ...]] | None = None) -> None:
        self._channels: dict[str, dict[str, int]] = {}
        #: The info of each present identity that has some, per channel: as given, and as JSON.
        self._info: dict[str, dict[str, tuple[Mapping[str, Any], str]]] = {}
        self._names: frozenset[str] | None = selection[0] if selection is not None else None  # None: all
        self._prefixes: tuple[str, ...] = selection[1] if selection is not None else ()
        #: What publishes the events of :meth:`expired` and :meth:`rejoined`: ``(kind, [(channel,
        #: identity, info)])`` (set by the stream that owns the table).
        self.announcer: Announcer | None = None

    def keeps(self, channel: str) -> bool:
        """Whether the presence of ``channel`` is kept (and announced on its companion channel)."""
        if channel.startswith(PRESENCE_PREFIX):
            return False
        if self._names is None:
            return True
        return channel in self._names or channel.startswith(self._prefixes)

    def join(
        self, channels: Sequence[str], identity: str, info: Mapping[str, Any] | None = None
    ) -> list[str]:
        """A stream of ``identity`` on ``channels`` opened: the channels it is new on, in this process.

        ``info`` (a valid :attr:`Grant.info`) is kept where it is new, as its ``join`` event says it.
        """
        joined = []
        for channel in channels:
            if not self.keeps(channel):
                continue
            members = self._channels.setdefault(channel, {})
            count = members.get(identity, 0)
            members[identity] = count + 1
            if not count:
                joined.append(channel)
        if joined and info is not None:
            kept = (info, json.dumps(dict(info), separators=(",", ":")))
            for channel in joined:
                self._info.setdefault(channel, {})[identity] = kept
        return joined

    def leave(self, channels: Sequence[str], identity: str) -> list[str]:
        """A stream that :meth:`join` counted ended: the channels it has no stream left on, here."""
        left = []
        for channel in channels:
            members = self._channels.get(channel)
            if members is None or identity not in members:
                continue
            if members[identity] <= 1:
                del members[identity]
                left.append(channel)
                if not members:
                    del self._channels[channel]
                infos = self._info.get(channel)
                if infos is not None and infos.pop(identity, None) is not None and not infos:
                    del self._info[channel]
            else:
                members[identity] -= 1
        return left

    async def expired(self, pairs: list[tuple[str, str]]) -> None:
        """The (channel, identity) pairs of a process that died: their ``leave`` events are published.

        A shared broker calls it from the beat that found the process dead (one
        beat of one process does, once). Errors are logged by the announcer, not raised.
        """
        if self.announcer is not None:
            await self.announcer(
                "leave", [(channel, who, None) for channel, who in pairs if self.keeps(channel)]
            )

    async def rejoined(self) -> None:
        """This process was taken for dead (a stall) and its members' leaves went out: their joins again.

        Errors are logged by the announcer, not raised.
        """
        if self.announcer is not None:
            members: list[tuple[str, str, Mapping[str, Any] | None]] = []
            for channel, present in self._channels.items():
                infos = self._info.get(channel, {})
                members += ((channel, who, infos[who][0] if who in infos else None) for who in present)
            await self.announcer("join", members)

    def snapshot(self) -> dict[str, dict[str, int | str]]:
        """What a broker's heartbeat sends: each channel's identities with their stream counts, or,
        for those with info, the value the engine keeps (:func:`member_value`)."""
        snapshot: dict[str, dict[str, int | str]] = {
            channel: dict(members) for channel, members in self._channels.items()
        }  # (copied whole, in C: it runs every beat)
        for channel, infos in self._info.items():
            present = snapshot[channel]
            for identity, (_info, encoded) in infos.items():
                present[identity] = member_value(self._channels[channel][identity], encoded)
        return snapshot

    def members(self, channel: str) -> list[PresenceMember]:
        """Who is subscribed to ``channel``, by identity."""
        members = self._channels.get(channel, {})
        infos = self._info.get(channel, {})
        return presence_members(
            (identity, count, infos[identity][0] if identity in infos else None)
            for identity, count in sorted(members.items())
        )


#: A :class:`PresenceMember` from its fields' tuple, made in C (``NamedTuple._make`` is a
#: Python function: a call per member, 40 % of a 10,000-member query here).
_MEMBER = cast(
    "Callable[[tuple[str, int, Any]], PresenceMember]", functools.partial(tuple.__new__, PresenceMember)
)


def presence_members(fields: Iterable[tuple[str, int, Mapping[str, Any] | None]]) -> list[PresenceMember]:
    """The members of a presence answer, from their ``(identity, connections, info)``, in order.

    Made with the garbage collector paused (and as it was again after, even on an
    error). A named tuple, unlike a plain one, stays under the collector's watch
    for as long as it lives; made with the collector running, the 10,000 members
    of one answer set off a pass every 700 of them, and the passes that came
    while the answer was being built moved the members made so far into the
    oldest generation, so that every other query or two paid for a full
    collection of the whole process (15-60 ms here; ``docs/performance.md``,
    "Full garbage collections"). Built at once, they meet one pass (set off by the
    first allocation after), a young one nine times in ten, which moves them to
    the middle generation: an answer the caller is done with before that
    generation's next pass never reaches the oldest (the tenth time, the pass is
    of the middle generation, and they go to the oldest at once). (``gc.disable()`` is process-wide: for a few
    milliseconds at most, other threads' collections wait; one that disables
    the collector meanwhile finds it enabled again after.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return list(map(_MEMBER, fields))
    finally:
        if was_enabled:
            gc.enable()


def member_value(count: int, info: str | None) -> str:
    """A present identity as the engine keeps it: its stream count, then a space and its info's JSON."""
    return str(count) if info is None else f"{count} {info}"


def parse_member_value(value: str) -> tuple[int, Mapping[str, Any] | None]:
    """What :func:`member_value` made (from another process, through the engine): count and info.

    Raises:
        ValueError: the count is not a positive number in ASCII digits (info that is not a JSON
            object, or nests too deep to decode, is taken as none).
    """
    count, _, info = value.partition(" ")
    if not (count.isascii() and count.isdigit()) or count == "0" * len(count):  # (int() takes -5, 1_000)
        raise ValueError(f"not a count of streams: {count!r}")
    if not info:
        return int(count), None
    try:
        decoded = json.loads(info)
    except (ValueError, RecursionError):  # (not what a process wrote: Grant.info is 512 bytes at most)
        decoded = None
    return int(count), decoded if isinstance(decoded, dict) else None


def presence_event(kind: str, channel: str, identity: str, info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``join`` or ``leave`` event of ``identity`` on ``channel`` (published on its companion)."""
    data: dict[str, Any] = {"channel": channel, "identity": identity}
    if kind == "join" and info is not None:
        data["info"] = dict(info)
    return {"event": kind, "data": data}
