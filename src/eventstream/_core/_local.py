"""The in-process broker: numbering, history and delivery to this process's hub.

What an :class:`~eventstream.EventStream` uses without ``broker=``. A publish
takes the next sequence number (one counter for every channel, so it is
monotonic per channel), gets its id (its own, or ``{epoch}-{seq}``) and the
id of its channel's previous event (GRIP's ``prev-id``), is encoded once with
its id line, kept in the :class:`~eventstream.HistoryStore` and then put in
the buffer of every subscriber of the bound hub. Numbering and keeping take
no await, so publish order, sequence order and history order agree, and a
connection that subscribes sees every event either in its replay or live.

It starts no task and holds no connection: it works without being entered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from .._sse import ServerSentEvent, with_id
from ._broker import Broker, Numbered, PublishedEvent, unkept_entry
from ._position import assigned_id, origin_id
from ._presence import PresenceMember
from ._store import HistoryEntry, HistoryStore, new_entry

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["LocalBroker"]


class LocalBroker(Broker):
    """Numbers events, keeps them in ``history`` and delivers them to the hub given to :meth:`bind`.

    Args:
        history: Where events are kept for clients that resume (its
            ``epoch`` is read once, here), or ``None`` to keep none (the
            epoch is then random).
    """

    def __init__(self, history: HistoryStore | None) -> None:
        self._history = history
        self._epoch = history.epoch if history is not None else os.urandom(4).hex()
        # The "previous id" of a channel's first event, so that even a stream
        # held before anything was published knows where it stands (GRIP prev-id).
        self._origin_id = origin_id(self._epoch)
        self._seq = 0
        self._hub: Hub | None = None

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def history(self) -> HistoryStore | None:
        return self._history

    @property
    def description(self) -> str:
        return "this process"

    def bind(self, hub: Hub) -> None:
        self._hub = hub

    def dispatch(
        self, channel: str, event: ServerSentEvent, numbered: Numbered | None = None
    ) -> Awaitable[None]:
        """Number and keep ``event``, call ``numbered``, and return the delivery to await.

        Everything but the delivery happens before this returns, with no
        await: concurrent publishers number, keep and report their events
        in the order they call it, whatever their deliveries then wait for.
        The delivery returns as :meth:`Hub.publish` does (once every
        subscriber holds the event, or was left behind).

        Raises:
            RuntimeError: no hub was bound.
            Exception: what the history store or ``numbered`` raises (the
                event is then not delivered).

        Cancellation: the awaited delivery leaves the event queued for the
        subscribers it was offered to; numbering and keeping are done.
        """
        hub = self._hub
        if hub is None:
            raise RuntimeError("the in-process broker has no hub: bind one first")
        # The hot path of every publish: numbering inline, no call of its own.
        self._seq += 1
        seq = self._seq
        event_id = event.id if event.id is not None else assigned_id(self._epoch, seq)
        history = self._history
        newest = history.newest(channel) if history is not None else None
        body = event._body
        entry = new_entry(
            channel,
            seq,
            newest[0] if newest is not None else 0,
            event_id,
            newest[1] if newest is not None else self._origin_id,
            with_id(body, event_id),
            len(body),
            time.monotonic(),
        )
        if history is not None:
            history.append(entry)
        if numbered is not None:
            numbered(event_id, entry.prev_id, entry.wire)
        return hub.publish(channel, entry)

    async def publish(self, channel: str, event: ServerSentEvent) -> PublishedEvent:
        """Number, keep and deliver ``event``; return its id and the previous one.

        Raises:
            RuntimeError: no hub was bound.
        """
        ids: list[str] = []
        await self.dispatch(channel, event, lambda event_id, prev_id, wire: ids.extend((event_id, prev_id)))
        return PublishedEvent(*ids)

    def closing_entry(self, event: ServerSentEvent) -> HistoryEntry:
        """The stream's last event: numbered after everything published, kept nowhere."""
        self._seq += 1
        return unkept_entry(event, self._epoch, self._seq)

    async def prepare(self, channels: Sequence[str], *, resuming: bool = True) -> None:
        """Nothing to do: the history is this process's own (and it does not yield)."""

    async def subscriber_count_all(self, channel: str | None, local: int) -> int:
        """``local``: this broker serves this process alone."""
        return local

    async def presence(self, channel: str, local: list[PresenceMember]) -> list[PresenceMember]:
        """``local``: this broker serves this process alone."""
        return local

    async def __aenter__(self) -> LocalBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pass
