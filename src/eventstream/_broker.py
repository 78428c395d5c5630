"""The broker interface: where published events are numbered, kept and fanned out.

Without a broker, an :class:`~eventstream.EventStream` numbers events
itself, keeps them in its :class:`~eventstream.HistoryStore` and hands them
to its local hub (one process, no engine). A broker moves that to a shared
engine, so that several processes serve the same channels:

* :meth:`Broker.publish` returns once the engine has numbered and kept the
  event; it reaches local subscribers through the same feed as remote ones;
* :attr:`Broker.history` is the synchronous view connections replay from;
* :meth:`Broker.prepare` makes that view current for a connection's
  channels before the connection subscribes;
* the broker runs (its connections and feed) inside ``async with``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from ._history import HistoryStore
from ._sse import ServerSentEvent

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["Broker", "PublishedEvent"]


@dataclass(frozen=True)
class PublishedEvent:
    """What the engine assigned to a published event."""

    #: Its id (its own, or ``{epoch}-{n}``).
    id: str
    #: The id of the channel's previous event (``{epoch}-0`` for the first): GRIP's ``prev-id``.
    prev_id: str


class Broker:
    """The interface of a shared engine behind one or more event streams.

    Subclasses implement every method. Entering the broker connects it and,
    when a hub was bound with :meth:`bind`, starts delivering the engine's
    events to that hub; leaving it stops both.
    """

    @property
    def epoch(self) -> str:
        """The engine's epoch: the prefix of the ids it assigns (valid once entered)."""
        raise NotImplementedError

    @property
    def history(self) -> HistoryStore:
        """The synchronous view of the engine's history that connections replay from.

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

    async def publish(self, channel: str, event: ServerSentEvent) -> PublishedEvent:
        """Have the engine number, keep and fan out ``event``; return its id and the previous one.

        Raises:
            BrokerError: the engine refused the event, or could not be reached
                within the broker's publish timeout.
            RuntimeError: the broker is not running.
        """
        raise NotImplementedError

    async def prepare(self, channels: Sequence[str]) -> None:
        """Bring :attr:`history` up to date for ``channels`` (before a connection subscribes).

        Raises:
            BrokerError: the engine could not be reached and the local view
                cannot serve these channels.
        """
        raise NotImplementedError

    async def __aenter__(self) -> Broker:
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        raise NotImplementedError
