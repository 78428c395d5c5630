"""The base classes a broker or a history store is written from: what a subclass must implement
raises NotImplementedError until it does, and what it inherits works from what it implements."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream import Broker, HistoryEntry, HistoryStore, ServerSentEvent
from eventstream._core import Hub, PublishedEvent

pytestmark = pytest.mark.anyio


class Nothing(Broker):
    """A broker that implements nothing yet."""


async def test_a_broker_must_implement_its_engine_side() -> None:
    broker = Nothing()
    assert broker.blocks_per_channel  # the default promise: a stalled subscriber stalls its channel only
    for name in ("epoch", "history", "description"):
        with pytest.raises(NotImplementedError):
            getattr(broker, name)
    with pytest.raises(NotImplementedError):
        broker.bind(Hub(buffer_size=8, send_timeout=1.0))
    with pytest.raises(NotImplementedError):
        await broker.publish("c", ServerSentEvent(data=1))
    with pytest.raises(NotImplementedError):
        await broker.prepare(["c"])
    with pytest.raises(NotImplementedError):
        await broker.__aenter__()
    with pytest.raises(NotImplementedError):
        await broker.__aexit__(None, None, None)


class Numbering(Broker):
    """Implements publish() and epoch only: dispatch() and closing_entry() come from the base."""

    def __init__(self) -> None:
        self.published: list[tuple[str, ServerSentEvent]] = []

    @property
    def epoch(self) -> str:
        return "ep0ch"

    async def publish(self, channel: str, event: ServerSentEvent) -> PublishedEvent:
        self.published.append((channel, event))
        n = len(self.published)
        return PublishedEvent(id=f"ep0ch-{n}", prev_id=f"ep0ch-{n - 1}")


async def test_dispatch_reports_the_number_publish_gave() -> None:
    broker = Numbering()
    reported: list[tuple[Any, ...]] = []
    await broker.dispatch("c", ServerSentEvent(data=1))  # nothing to report to
    await broker.dispatch("c", ServerSentEvent(event="m", data=2), lambda *args: reported.append(args))
    assert [channel for channel, _ in broker.published] == ["c", "c"]
    assert reported == [("ep0ch-2", "ep0ch-1", b"event: m\ndata: 2\nid: ep0ch-2\n\n")]
    closing = broker.closing_entry(ServerSentEvent(event="shutdown"))
    assert closing.id.startswith("ep0ch")


class OnlyLast(HistoryStore):
    """A store that answers last() only."""

    epoch = "ep0ch"

    def __init__(self, entry: HistoryEntry | None) -> None:
        self.entry = entry

    def last(self, channel: str) -> HistoryEntry | None:
        return self.entry


def test_a_history_store_answers_newest_from_last_and_must_implement_the_rest() -> None:
    assert OnlyLast(None).newest("c") is None
    entry = HistoryEntry("c", 7, 3, "ep0ch-7", "ep0ch-3", b"data: 1\nid: ep0ch-7\n\n", 8, 12.5)
    assert OnlyLast(entry).newest("c") == (7, "ep0ch-7")
    store = OnlyLast(entry)
    with pytest.raises(NotImplementedError):
        store.append(entry)
    with pytest.raises(NotImplementedError):
        store.since("c", 0)
    with pytest.raises(NotImplementedError):
        store.find("c", "ep0ch-7")
    with pytest.raises(NotImplementedError):
        HistoryStore.last(store, "c")
