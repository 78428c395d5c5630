"""The broker interface: where published events are numbered, kept and fanned out.

An :class:`~eventstream.EventStream` always publishes through a broker. The
default one is in-process (``_local.py``): it numbers events, keeps
them in the stream's :class:`~eventstream.HistoryStore` and hands them to the
local hub, for one process and no engine. A shared broker (such as
:class:`~eventstream.RedisBroker`) moves that to an engine, so that several
processes serve the same channels:

* :meth:`Broker.publish` returns once the broker has numbered and kept the
  event; a shared engine delivers it to local subscribers through the same
  feed as to remote ones;
* :meth:`Broker.dispatch` is what the stream calls: the same, plus a
  callback as soon as the event has its id (GRIP queues it there, so
  proxies get events in numbering order);
* :attr:`Broker.history` is the synchronous view connections replay from;
* :meth:`Broker.prepare` makes that view current for a connection's
  channels before the connection subscribes;
* a shared broker runs (its connections and feed) inside ``async with``;
  the in-process one needs no entering.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from .._observe._broker import BrokerStatistics
from .._sse import ServerSentEvent, encode, with_id
from ._position import assigned_id, origin_id
from ._presence import PresenceMember, PresenceTable
from ._store import HistoryEntry, HistoryStore

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Broker", "Numbered", "PublishedEvent", "unkept_entry"]

#: Called by :meth:`Broker.dispatch` with the event's id, its channel's previous
#: id (GRIP's ``prev-id``) and its bytes as a one-channel connection sends them.
Numbered = Callable[[str, str, bytes], None]


@dataclass(frozen=True)
class PublishedEvent:
    """What the engine assigned to a published event."""

    #: Its id (its own, or ``{epoch}-{n}``).
    id: str
    #: The id of the channel's previous event (``{epoch}-0`` for the first): GRIP's ``prev-id``.
    prev_id: str


class Broker:
    """The interface of the engine behind one or more event streams.

    Subclasses implement every method but :meth:`dispatch` and
    :meth:`closing_entry`, which have defaults built on the others. Entering
    the broker connects it and, when a hub was bound with :meth:`bind`,
    starts delivering the engine's events to that hub; leaving it stops both.
    """

    #: Whether, under ``slow_consumer="block"``, a subscriber that stops reading
    #: stalls only its own channel. A broker whose feed delivers every channel in
    #: one task cannot promise it: a stream refuses that policy with it.
    blocks_per_channel: bool = True

    @property
    def epoch(self) -> str:
        """The engine's epoch: the prefix of the ids it assigns (valid once entered)."""
        raise NotImplementedError

    @property
    def history(self) -> HistoryStore | None:
        """The synchronous view of the history that connections replay from (``None``: none kept).

        Raises:
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError

    @property
    def description(self) -> str:
        """Where the engine is, without credentials (for messages)."""
        raise NotImplementedError

    def bind(self, hub: Hub) -> None:
        """Deliver the engine's events to ``hub`` while the broker runs (before entering it)."""
        raise NotImplementedError

    def bind_presence(self, table: PresenceTable) -> None:
        """Keep ``table``'s identities in the engine for other processes (before entering it).

        This default keeps nothing (a broker for this process alone).
        """

    async def publish(self, channel: str, event: ServerSentEvent) -> PublishedEvent:
        """Have the engine number, keep and fan out ``event``; return its id and the previous one.

        Raises:
            BrokerError: the engine refused the event, or could not be reached
                within the broker's publish timeout.
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError

    def dispatch(
        self, channel: str, event: ServerSentEvent, numbered: Numbered | None = None
    ) -> Awaitable[object]:
        """Publish ``event`` as :meth:`publish` does; call ``numbered`` once it has its id.

        ``numbered`` (synchronous, called once) gets the event's id, the
        previous id of its channel and its bytes, before the call waits for
        anything else (local subscribers with full buffers): an
        :class:`~eventstream.EventStream` queues GRIP items there, so that
        proxies get a channel's events in the order they were numbered. This
        default calls it when :meth:`publish` returns.

        It returns what to await; a broker may raise before returning it.

        Raises:
            BrokerError, RuntimeError: as :meth:`publish`.

        Cancellation: as :meth:`publish`; ``numbered`` is not called for an
        event that did not get an id.
        """
        if numbered is None:
            return self.publish(channel, event)
        return self._publish_then_report(channel, event, numbered)

    async def _publish_then_report(self, channel: str, event: ServerSentEvent, numbered: Numbered) -> None:
        published = await self.publish(channel, event)
        numbered(published.id, published.prev_id, with_id(event._body, published.id))

    def closing_entry(self, event: ServerSentEvent) -> HistoryEntry:
        """The entry every open stream gets last when the event stream closes (its ``shutdown_event``).

        It is neither kept nor sent to other processes, and is written
        without an id line unless the event has its own id (see
        :func:`unkept_entry`), so clients resume from the last event they got.
        """
        return unkept_entry(event, self.epoch, 1)

    async def prepare(self, channels: Sequence[str], *, resuming: bool = True) -> None:
        """Bring :attr:`history` up to date for ``channels`` (before a connection subscribes).

        ``resuming`` is false for a connection that starts from now (no
        ``Last-Event-ID``, no proxy): a broker may then skip catching up on
        the channels it already follows (their feed brings what is newer).

        Raises:
            BrokerError: the engine could not be reached and the local view
                cannot serve these channels.
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError

    def statistics(self) -> BrokerStatistics | None:
        """This broker's feed counters; this default (a broker with no feed) has none."""
        return None

    async def ping(self) -> None:
        """Ask the engine for an answer (a readiness check); this default has no engine to ask.

        Raises:
            BrokerError: the engine did not answer, or answered an error.
            RuntimeError: the broker is not running.
        """

    # -- counts and presence across processes ------------------------------

    async def subscriber_count_all(self, channel: str | None, local: int) -> int:
        """The subscribers of ``channel`` (of every channel: ``None``) in every process on the engine.

        ``local`` is this process's own count, as the hub has it now: a broker
        adds the other processes' counts to it (each process keeps its own in
        the engine, and one that died drops out within a bounded time).

        Raises:
            NotImplementedError: this broker cannot count across processes (this
                default: a broker that has no answer must not give this process's
                count as everyone's).
            BrokerError: the engine could not be reached.
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot count subscribers across processes")

    async def presence(self, channel: str, local: list[PresenceMember]) -> list[PresenceMember]:
        """Who is subscribed to ``channel`` in every process on the engine, by identity.

        ``local`` is this process's part (from its :class:`PresenceTable`); a
        broker merges the other processes' parts (kept in the engine with an
        expiry that a heartbeat renews, so a dead process leaves within a bounded time).

        Raises:
            NotImplementedError: this broker cannot tell presence across processes.
            BrokerError: the engine could not be reached.
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot tell presence across processes")

    async def __aenter__(self) -> Broker:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError


def unkept_entry(event: ServerSentEvent, epoch: str, seq: int) -> HistoryEntry:
    """``event`` numbered ``seq`` on no channel (``""``), for every open stream and no history.

    Unless the event has an id of its own, it is written without an id line:
    a client then keeps the id of the last event it got, and resumes from
    there when it reconnects (to any process).
    """
    return HistoryEntry(
        channel="",
        seq=seq,
        prev_seq=0,
        prev_id=origin_id(epoch),
        id=event.id if event.id is not None else assigned_id(epoch, seq),
        wire=encode(event),  # its own id line, if any
        body_length=len(event._body),
        time=time.monotonic(),
    )
