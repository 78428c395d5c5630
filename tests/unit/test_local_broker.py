"""The in-process broker: numbering, the prev-id chain, history, and the order of its callbacks."""

from __future__ import annotations

import dataclasses
import gc
import json
import re

import anyio
import httpx
import pytest

from eventstream import (
    EventStream,
    GripPublisher,
    HistoryEntry,
    HistoryStore,
    MemoryHistory,
    Publisher,
    ServerSentEvent,
)
from eventstream._core import Broker, Hub, LocalBroker, SlowConsumerPolicy, new_entry

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


def _bound(
    history: HistoryStore | None, buffer_size: int = 256, policy: SlowConsumerPolicy = "disconnect"
) -> tuple[LocalBroker, Hub]:
    hub = Hub(buffer_size=buffer_size, send_timeout=5.0, policy=policy)
    broker = LocalBroker(history)
    broker.bind(hub)
    return broker, hub


async def test_ids_count_every_channel_and_prev_ids_chain_each_channel() -> None:
    history = MemoryHistory()
    broker, _ = _bound(history)
    epoch = broker.epoch
    assert epoch == history.epoch
    seen: list[tuple[str, str, bytes]] = []

    def numbered(event_id: str, prev_id: str, wire: bytes) -> None:
        seen.append((event_id, prev_id, wire))

    for channel, event in [
        ("a", ServerSentEvent(data="1")),
        ("b", ServerSentEvent(data="2")),
        ("a", ServerSentEvent(data="3", id="own")),
        ("a", ServerSentEvent(data="4")),
        ("b", ServerSentEvent(data="5")),
    ]:
        await broker.dispatch(channel, event, numbered)
    assert [(event_id, prev_id) for event_id, prev_id, _ in seen] == [
        (f"{epoch}-1", f"{epoch}-0"),  # a's first: the channel's origin
        (f"{epoch}-2", f"{epoch}-0"),  # b's first
        ("own", f"{epoch}-1"),  # an event's own id is kept, and chained
        (f"{epoch}-4", "own"),
        (f"{epoch}-5", f"{epoch}-2"),
    ]
    assert seen[0][2] == b'data: "1"\nid: ' + f"{epoch}-1".encode() + b"\n\n"
    # Kept in order, each entry linked to its channel's previous one.
    entries = history.since("a", 0)
    assert entries is not None
    assert [(e.seq, e.prev_seq, e.id, e.wire) for e in entries] == [
        (1, 0, f"{epoch}-1", seen[0][2]),
        (3, 1, "own", seen[2][2]),
        (4, 3, f"{epoch}-4", seen[3][2]),
    ]
    assert history.since("a", 3) == entries[2:]
    last_b = history.last("b")
    assert last_b is not None
    assert (last_b.seq, last_b.prev_seq) == (5, 2)


async def test_publish_delivers_to_the_bound_hub_and_returns_the_ids() -> None:
    broker, hub = _bound(MemoryHistory())
    subscriber = hub.subscribe(["news"])
    first = await broker.publish("news", ServerSentEvent(data="hi"))
    second = await broker.publish("news", ServerSentEvent(data="again"))
    assert (first.id, first.prev_id) == (f"{broker.epoch}-1", f"{broker.epoch}-0")
    assert (second.id, second.prev_id) == (f"{broker.epoch}-2", first.id)
    assert [entry.id for entry in subscriber.take()] == [first.id, second.id]
    assert hub.statistics().events_published == 2


async def test_without_history_nothing_is_kept_and_the_epoch_is_random() -> None:
    broker, hub = _bound(None)
    other = LocalBroker(None)
    assert broker.history is None
    assert broker.description == "this process"
    assert re.fullmatch(r"[0-9a-f]{8}", broker.epoch)
    assert broker.epoch != other.epoch
    subscriber = hub.subscribe(["c"])
    ids = []
    for _ in range(3):
        ids.append((await broker.publish("c", ServerSentEvent(data="x"))).id)
    assert ids == [f"{broker.epoch}-{n}" for n in (1, 2, 3)]
    assert len(subscriber.take()) == 3


async def test_the_closing_entry_takes_the_next_number_and_is_kept_nowhere() -> None:
    history = MemoryHistory()
    broker, _ = _bound(history)
    await broker.publish("c", ServerSentEvent(data="x"))
    final = broker.closing_entry(ServerSentEvent(event="bye"))
    assert (final.channel, final.seq, final.id) == ("", 2, f"{broker.epoch}-2")
    assert final.wire == b"event: bye\ndata: \n\n"  # no id line: clients keep their last event id
    own = broker.closing_entry(ServerSentEvent(event="bye", id="the-end"))
    assert own.wire == b"event: bye\ndata: \nid: the-end\n\n"
    assert history.last("") is None
    after = await broker.publish("c", ServerSentEvent(data="y"))
    assert after.id == f"{broker.epoch}-4"  # the numbers are not reused
    assert after.prev_id == f"{broker.epoch}-1"  # nor does the chain of c see it


async def test_dispatch_needs_a_hub() -> None:
    broker = LocalBroker(MemoryHistory())
    with pytest.raises(RuntimeError, match="no hub"):
        await broker.dispatch("c", ServerSentEvent(data="x"))
    assert broker.history is not None
    assert broker.history.last("c") is None


async def test_callbacks_run_in_numbering_order_before_deliveries_wait_for_full_subscribers() -> None:
    # A full subscriber makes every delivery wait ("block": as long as it
    # takes). The callbacks (where EventStream queues GRIP items) must all
    # have run, in numbering order, before any of those deliveries returns.
    broker, hub = _bound(MemoryHistory(), buffer_size=1, policy="block")
    subscriber = hub.subscribe(["c"])
    await broker.publish("c", ServerSentEvent(data="fills the buffer"))
    reported: list[tuple[str, str]] = []
    delivered: list[int] = []

    async def publisher(index: int) -> None:
        def numbered(event_id: str, prev_id: str, wire: bytes) -> None:
            reported.append((event_id, prev_id))

        await broker.dispatch("c", ServerSentEvent(data=str(index)), numbered)
        delivered.append(index)

    async def all_reported() -> bool:
        return len(reported) == 8

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for index in range(8):
                tg.start_soon(publisher, index)
            await wait_until(all_reported)
            assert delivered == []  # every publisher is still waiting for the full subscriber
            epoch = broker.epoch
            assert [event_id for event_id, _ in reported] == [f"{epoch}-{n}" for n in range(2, 10)]
            assert [prev_id for _, prev_id in reported] == [f"{epoch}-{n}" for n in range(1, 9)]

            async def read_until_all_delivered() -> bool:  # the subscriber reads: publishers go on
                subscriber.take()
                return len(delivered) == 8

            await wait_until(read_until_all_delivered)
    history = broker.history
    assert history is not None
    entries = history.since("c", 0)
    assert entries is not None
    assert [entry.id for entry in entries] == [f"{broker.epoch}-{n}" for n in range(1, 10)]


async def test_a_cancelled_delivery_keeps_the_event_numbered_kept_and_reported() -> None:
    broker, hub = _bound(MemoryHistory(), buffer_size=1, policy="block")
    subscriber = hub.subscribe(["c"])
    await broker.publish("c", ServerSentEvent(data="fills the buffer"))
    reported: list[str] = []
    with anyio.move_on_after(0.1) as scope:
        await broker.dispatch(
            "c", ServerSentEvent(data="waits"), lambda event_id, *_: reported.append(event_id)
        )
    assert scope.cancelled_caught
    assert reported == [f"{broker.epoch}-2"]
    assert [entry.id for entry in subscriber.take()] == [f"{broker.epoch}-1", f"{broker.epoch}-2"]
    history = broker.history
    assert history is not None
    last = history.last("c")
    assert last is not None
    assert last.id == f"{broker.epoch}-2"


async def test_an_event_stream_without_broker_publishes_through_the_local_one() -> None:
    history = MemoryHistory()
    stream = EventStream(history=history)
    assert isinstance(stream._broker, LocalBroker)
    assert isinstance(stream._broker, Broker)
    assert stream._broker.history is history
    assert stream._epoch == history.epoch
    await stream.publish_event("c", {"data": "x"})
    last = history.last("c")
    assert last is not None
    assert last.id == f"{history.epoch}-1"


async def test_grip_items_follow_the_numbering_of_concurrent_publishers_held_by_a_full_subscriber() -> None:
    # Through EventStream: reliable GRIP items carry id and prev-id; the proxy
    # (here an httpx transport that records what it is sent) must get them in
    # chain order even though every publish waits for a full local subscriber.
    posted: list[dict[str, str]] = []

    def proxy(request: httpx.Request) -> httpx.Response:
        posted.extend(json.loads(request.content)["items"])
        return httpx.Response(200, text="Published\n")

    grip = GripPublisher("http://proxy:5561/", transport=httpx.MockTransport(proxy))
    stream = EventStream(grip=grip, grip_reliable=True, buffer_size=1, slow_consumer="block")
    subscriber = stream._hub.subscribe(["c"])
    finished: list[int] = []

    async def publisher(index: int) -> None:
        await stream.publish_event("c", {"data": str(index)})
        finished.append(index)

    async def all_posted() -> bool:
        return len(posted) == 9

    with anyio.fail_after(10):
        async with stream, anyio.create_task_group() as tg:
            await stream.publish_event("c", {"data": "fills the buffer"})
            for index in range(8):
                tg.start_soon(publisher, index)
            await wait_until(all_posted)  # every item went out while the deliveries wait
            assert finished == []

            async def read_until_all_finished() -> bool:
                subscriber.take()
                return len(finished) == 8

            await wait_until(read_until_all_finished)
    epoch = stream._epoch
    assert [(item["id"], item["prev-id"]) for item in posted] == [
        (f"{epoch}-{n}", f"{epoch}-{n - 1}") for n in range(1, 10)
    ]
    assert all(item["channel"] == "events-c" for item in posted)


class _LastOnly(HistoryStore):
    """A store that implements the interface but not ``newest``: the base class answers it."""

    def __init__(self) -> None:
        self.epoch = "plug"
        self.entries: dict[str, list[HistoryEntry]] = {}

    def append(self, entry: HistoryEntry) -> None:
        self.entries.setdefault(entry.channel, []).append(entry)

    def last(self, channel: str) -> HistoryEntry | None:
        kept = self.entries.get(channel)
        return kept[-1] if kept else None

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        return None

    def find(self, channel: str, event_id: str) -> int | None:
        return None


async def test_a_store_without_newest_of_its_own_still_chains_prev_ids() -> None:
    store = _LastOnly()
    broker, _ = _bound(store)
    ids: list[tuple[str, str]] = []
    for data in ("1", "2"):
        await broker.dispatch("c", ServerSentEvent(data=data), lambda i, p, w: ids.append((i, p)))
    assert ids == [("plug-1", "plug-0"), ("plug-2", "plug-1")]
    assert store.newest("c") == (2, "plug-2")
    assert store.newest("other") is None


def test_memory_history_keeps_entries_the_garbage_collector_does_not_track() -> None:
    history = MemoryHistory(max_events=1000, max_bytes=10**7)
    broker, _ = _bound(history)

    async def publish_many() -> None:
        for n in range(500):
            await broker.dispatch("busy", ServerSentEvent(data=str(n)))

    anyio.run(publish_many)
    gc.collect()
    before = len(gc.get_objects())
    anyio.run(publish_many)
    gc.collect()
    # 500 more events kept: they add no tracked object (an entry object each would add 500).
    assert len(gc.get_objects()) - before < 50
    kept = history.since("busy", 0)
    assert kept is not None
    assert len(kept) == 1000
    assert [entry.seq for entry in kept] == list(range(1, 1001))
    assert history.newest("busy") == (1000, kept[-1].id)
    assert history.last("busy") == kept[-1]
    assert history.find("busy", kept[10].id) == 11


def test_entries_made_on_the_publish_path_are_plain_frozen_history_entries() -> None:
    fields = ("c", 7, 3, "e-7", "e-3", b"data: x\nid: e-7\n\n", 8, 12.5)
    made, built = new_entry(*fields), HistoryEntry(*fields)
    assert type(made) is HistoryEntry
    assert made == built
    assert hash(made) == hash(built)
    assert repr(made) == repr(built)
    assert (made.body, made.size) == (built.body, built.size)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.seq = 8  # type: ignore[misc]


async def test_an_event_heavier_than_the_history_keeps_is_published_and_not_kept() -> None:
    history = MemoryHistory(max_bytes=500)
    broker, _ = _bound(history)
    ids: list[str] = []
    await broker.dispatch("big", ServerSentEvent(data="x" * 1000), lambda i, p, w: ids.append(i))
    assert history.last("big") is None
    assert history.newest("big") is None
    assert history.since("big", 0) is None
    assert history.find("big", ids[0]) is None
    # The next event links to the channel's origin (the heavy one is not known), and is kept.
    await broker.dispatch("big", ServerSentEvent(data="y"), lambda i, p, w: ids.append(p))
    assert ids[1] == f"{broker.epoch}-0"
    assert history.newest("big") is not None


async def test_a_publisher_entered_with_async_with_refuses_publish_event_sync() -> None:
    history = MemoryHistory()
    broker, _ = _bound(history)  # an in-process broker stands for the engine
    publisher = Publisher(broker=broker)
    async with publisher:
        published = await publisher.publish_event("c", {"data": "async"})
        # From a worker thread (no event loop there): refused, since the async use owns it.
        with pytest.raises(RuntimeError, match="entered with async with: use await publish_event"):
            await anyio.to_thread.run_sync(publisher.publish_event_sync, "c", {"data": "sync"})
    last = history.last("c")
    assert last is not None
    assert last.id == published  # the refused call published nothing
    publisher.close()
