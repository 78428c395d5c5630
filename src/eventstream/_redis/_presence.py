"""Counts and presence across processes, on the engine: each process's part, renewed by a heartbeat.

Each process (each running :class:`~eventstream.RedisBroker` with a hub) has a
random id and keeps its part under ``{prefix}|pr:`` (see the scripts'
``HEARTBEAT``): its subscriber count per channel in one hash, the identities
present on each channel (with their stream counts and info) in one hash per
channel, and its time in the sorted set ``{prefix}|pr:live``. Every
``heartbeat_interval`` it sends what changed since its last beat (nothing
but its time when nothing did): the engine's work per interval grows with
the processes, not with their subscribers.

A process whose last beat is older than ``heartbeat_expiry`` (engine time)
is left out of every answer, and its keys are deleted by the next beat of
any process on the prefix: one killed (``kill -9``) leaves the answers at
most ``heartbeat_expiry`` seconds after it died. The beat that deletes them
gets the (channel, identity) pairs the dead one held (at most 1,024) and
publishes their ``leave`` events (:meth:`PresenceTable.expired`), once. One that leaves cleanly
deletes its part at once. A process whose part the engine lost (restarted
empty, or deleted as dead after a stall) writes all of it again; after a stall
(the beat that deleted it left a mark, ``{base}b:{pid}``, for a minute) it also
publishes its members' ``join`` events again (:meth:`PresenceTable.rejoined`).

Answers add this process's own part, as its hub has it now, to the other
live processes' parts as of their last beat (at most ``heartbeat_interval``
old), in one script call.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import TYPE_CHECKING, Any

import anyio

from .._base import BrokerError
from .._core import PresenceMember, PresenceTable, parse_member_value, presence_members
from ._connect import glide_module
from ._presence_scripts import COUNT_ALL, HEARTBEAT, PRESENCE

if TYPE_CHECKING:
    from glide import GlideClient

    from .._core import Hub

__all__ = ["PresenceKeeper"]

logger = logging.getLogger("eventstream")

#: The field of a process's count hash that holds all of its subscribers (no channel is named '').
_ALL = ""


class PresenceKeeper:
    """This process's part of the counts and presence in the engine, and the queries of everyone's.

    Args:
        base: The start of every key of counts and presence (``{prefix}|pr:``; on a
            cluster, under one hash tag, so each script stays in one slot).
        engine: Where the engine is (for messages).
        interval: Seconds between beats.
        expiry: Seconds after its last beat when a process is taken for dead.
        request_timeout: Seconds one call may take before it fails with :class:`BrokerError`.
    """

    def __init__(
        self, *, base: str, engine: str, interval: float, expiry: float, request_timeout: float
    ) -> None:
        self._base = base
        self._live = f"{self._base}live"
        self._engine = engine
        self._interval = interval
        self._expiry_ms = str(round(expiry * 1000))
        self._timeout = request_timeout + 0.5
        #: This process, in the engine's keys.
        self.process_id = os.urandom(8).hex()
        glide = glide_module()
        self._heartbeat = glide.Script(HEARTBEAT)
        self._count_all = glide.Script(COUNT_ALL)
        self._presence = glide.Script(PRESENCE)
        # What the engine holds of this process, as of the last beat it answered.
        self._counts: dict[str, int] = {}
        self._members: dict[str, dict[str, int | str]] = {}
        self._registered = False

    async def _call(self, client: GlideClient | None, script: Any, args: list[str]) -> Any:
        if client is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        glide = glide_module()
        with anyio.move_on_after(self._timeout):
            try:
                return await client.invoke_script(script, keys=[self._live], args=args)
            except glide.GlideError as exc:
                raise BrokerError(self._engine, f"{type(exc).__name__}: {exc}") from exc
        raise BrokerError(self._engine, f"no answer within {self._timeout:g} s")

    # -- this process's part ---------------------------------------------------

    async def run(self, client: GlideClient, hub: Hub, table: PresenceTable | None) -> None:
        """Beat every interval until cancelled (a failed beat is logged and sent again at the next)."""
        while True:
            try:
                await self.beat(client, hub, table)
            except BrokerError as exc:
                logger.warning("broker: cannot renew this process's counts and presence: %s", exc)
            except Exception:  # (not the engine's answer: a bug; the process serves on, and beats again)
                logger.exception("broker: the heartbeat of counts and presence failed")
            await anyio.sleep(self._interval)

    async def beat(self, client: GlideClient, hub: Hub, table: PresenceTable | None) -> None:
        """Send what changed since the last beat (all of it, the first time or when the engine lost it).

        Raises:
            BrokerError: the engine did not answer, or answered an error (the
                next beat sends the same changes again: each sets a value).
        """
        stats = hub.statistics()
        counts = {_ALL: stats.subscribers, **stats.channels}
        members = table.snapshot() if table is not None else {}
        buried = False
        if self._registered:
            args = self._diff(counts, members)
            answer = await self._call(client, self._heartbeat, args)
            await self._bury(answer, table)
            if answer[0] == 1:
                self._counts, self._members = counts, members
                return
            buried = answer[0] == 2
        # First beat, or the engine no longer holds this process: all of it again.
        answer = await self._call(client, self._heartbeat, self._full(counts, members))
        self._counts, self._members = counts, members
        self._registered = True
        await self._bury(answer, table)
        if buried and table is not None:  # taken for dead (a stall): its members' leaves went out
            logger.warning(
                "broker: this process was taken for dead (no heartbeat for heartbeat_expiry): "
                "its members' leave events went out; their join events go out again"
            )
            await table.rejoined()

    async def _bury(self, answer: list[Any], table: PresenceTable | None) -> None:
        # The members of the dead processes this beat deleted: their leave events.
        if table is not None and len(answer) > 1:
            pairs: list[tuple[str, str]] = []
            for i in range(1, len(answer) - 1, 2):
                try:
                    pairs.append((bytes(answer[i]).decode(), bytes(answer[i + 1]).decode()))
                except UnicodeDecodeError:  # not what a process of this library wrote: no event
                    continue
            await table.expired(pairs)

    def _header(self, mode: str, pairs: list[str]) -> list[str]:
        return [self._base, self._expiry_ms, self.process_id, mode, str(len(pairs) // 2), *pairs]

    def _full(self, counts: dict[str, int], members: dict[str, dict[str, int | str]]) -> list[str]:
        args = self._header(
            "full", [part for channel, n in counts.items() if n for part in (channel, str(n))]
        )
        for channel, present in members.items():
            for identity, value in present.items():
                args += (channel, identity, str(value))
        return args

    def _diff(self, counts: dict[str, int], members: dict[str, dict[str, int | str]]) -> list[str]:
        pairs: list[str] = []
        old_counts = self._counts
        if counts != old_counts:
            pairs += (
                part
                for channel, n in counts.items()
                if old_counts.get(channel) != n
                for part in (channel, str(n))
            )
            pairs += (part for channel in old_counts if channel not in counts for part in (channel, "0"))
        args = self._header("diff", pairs)
        old_members = self._members
        if members != old_members:
            for channel, present in members.items():
                old = old_members.get(channel, {})
                if present == old:
                    continue
                for identity, value in present.items():
                    if old.get(identity) != value:
                        args += (channel, identity, str(value))
                args += (
                    part for identity in old if identity not in present for part in (channel, identity, "0")
                )
            for channel, old in old_members.items():
                if channel not in members:
                    args += (part for identity in old for part in (channel, identity, "0"))
        return args

    async def leave(self, client: GlideClient) -> None:
        """Delete this process's part (when the broker stops); a failure is logged (it expires)."""
        with anyio.CancelScope(shield=True):
            try:
                await self._call(client, self._heartbeat, self._header("leave", []))
            except BrokerError as exc:
                logger.warning("broker: cannot remove this process's counts and presence: %s", exc)

    # -- everyone's --------------------------------------------------------------

    async def count_all(self, client: GlideClient | None, channel: str | None, local: int) -> int:
        """``local`` plus the other live processes' subscribers of ``channel`` (``None``: of all).

        Raises:
            BrokerError: the engine did not answer within the request timeout, or answered an error.
            RuntimeError: the broker is not running.
        """
        args = [self._base, self._expiry_ms, self.process_id, channel if channel is not None else _ALL]
        return local + int(await self._call(client, self._count_all, args))

    async def presence(
        self, client: GlideClient | None, channel: str, local: list[PresenceMember]
    ) -> list[PresenceMember]:
        """``local`` merged with the other live processes' identities on ``channel``, sorted.

        An identity present in several processes has the info of this process's
        stream, or else of one of theirs (the first the engine lists).

        Raises:
            BrokerError, RuntimeError: as :meth:`count_all`.
        """
        args = [self._base, self._expiry_ms, self.process_id, channel]
        found = await self._call(client, self._presence, args)
        counts = {member.identity: member.connections for member in local}
        infos = {member.identity: member.info for member in local if member.info is not None}
        plain = _bare_counts(found)
        if plain is not None:  # most members: identity and count only (no loop in Python)
            names, numbers = plain
            merged = None if counts else dict(zip(names, numbers, strict=True))
            if merged is not None and len(merged) == len(names):  # (none here, each in one process)
                counts = merged
            else:
                for identity, count in zip(names, numbers, strict=True):
                    counts[identity] = counts.get(identity, 0) + count
        else:
            for i in range(0, len(found), 2):
                value = bytes(found[i + 1])
                try:
                    identity = bytes(found[i]).decode()
                    count, info = parse_member_value(value.decode())
                except ValueError:  # (UnicodeDecodeError too) not what a process of this version wrote
                    continue
                if info is not None:
                    infos.setdefault(identity, info)
                counts[identity] = counts.get(identity, 0) + count
        # Sorted by key, with no (key, value) tuple per member for the garbage collector to count.
        ordered = sorted(counts)
        found_info = map(infos.get, ordered) if infos else itertools.repeat(None)
        fields = zip(ordered, map(counts.__getitem__, ordered), found_info, strict=False)  # (repeat: endless)
        return presence_members(fields)


def _bare_counts(found: list[Any]) -> tuple[list[str], list[int]] | None:
    # The identities and counts of a presence query's answer (identity, value, identity,
    # value...) when every identity is UTF-8 and every value a count alone (ASCII digits,
    # no leading 0, no info), read without a Python loop; None otherwise (read one by one).
    identities, values = found[0::2], found[1::2]
    if len(identities) != len(values):
        return None
    try:
        if values and not (all(map(bytes.isdigit, values)) and min(values)[0] != 48):  # (48: "0")
            return None
        return list(map(bytes.decode, identities)), list(map(int, values))
    except (TypeError, UnicodeDecodeError):  # (not bytes; not UTF-8)
        return None
