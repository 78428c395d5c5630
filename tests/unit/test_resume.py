"""Event ids, history, Last-Event-ID resume, stream-reset and stream-error (in-process, both backends)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import anyio
import pytest

from eventstream import EventStream, HistoryEntry, MemoryHistory, ServerSentEvent
from eventstream.testing import StreamResponse, open_stream

pytestmark = pytest.mark.anyio


async def receive_data(response: StreamResponse, count: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while len(events) < count:
        event = await response.receive_event()
        if event.event not in ("stream-open", "keep-alive"):
            events.append(event)
    return events


async def first_event(response: StreamResponse) -> ServerSentEvent:
    """The first event after stream-open."""
    assert (await response.receive_event()).event == "stream-open"
    return await response.receive_event()


async def test_assigned_ids_are_monotonic_per_channel_and_own_ids_kept() -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream("a")) as a, open_stream(stream("b")) as b:
            await stream.wait_subscribers(1, "a")
            await stream.wait_subscribers(1, "b")
            for i in range(3):
                await stream.publish_event("a", {"data": i})
                await stream.publish_event("b", {"data": i})
            await stream.publish_event("a", {"data": 3, "id": "mine"})
            ids_a = [e.id for e in await receive_data(a, 4)]
            ids_b = [e.id for e in await receive_data(b, 3)]
    assert ids_a[3] == "mine"
    for ids in (ids_a[:3], ids_b):
        assert all(i is not None and re.fullmatch(r"[0-9a-f]{8}-\d+", i) for i in ids)
        seqs = [int(str(i).rsplit("-", 1)[1]) for i in ids]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 3


@pytest.mark.parametrize("via", ["header", "query"])
async def test_resume_single_channel(via: str) -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream("news")) as first:
            await stream.wait_subscribers(1, "news")
            for i in range(3):
                await stream.publish_event("news", {"data": i})
            seen = await receive_data(first, 3)
        for i in range(3, 6):
            await stream.publish_event("news", {"data": i})  # while disconnected
        last = str(seen[-1].id)
        url, headers = ("/", {"last-event-id": last}) if via == "header" else (f"/?lastEventId={last}", {})
        async with open_stream(stream("news"), url, headers=headers) as again:
            await stream.wait_subscribers(1, "news")
            await stream.publish_event("news", {"data": 6})
            resumed = await receive_data(again, 4)
    assert [e.json() for e in resumed] == [3, 4, 5, 6]


async def test_resume_with_the_callers_own_ids() -> None:
    stream = EventStream()
    for i in range(5):
        await stream.publish_event("c", {"data": i, "id": f"order-{i}"})
    with anyio.fail_after(5):
        async with open_stream(stream("c"), headers={"last-event-id": "order-2"}) as response:
            events = await receive_data(response, 2)
    assert [(e.id, e.json()) for e in events] == [("order-3", 3), ("order-4", 4)]


async def test_resume_several_channels_in_order_without_duplicates() -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream(["a", "b"])) as first:
            await stream.wait_subscribers(1, "a")
            await stream.publish_event("a", {"data": "a0"})
            await stream.publish_event("b", {"data": "b0"})
            seen = await receive_data(first, 2)
        position = str(seen[-1].id)
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{8}-\d+\.\d+", position)
        for i in range(1, 4):
            await stream.publish_event("b", {"data": f"b{i}"})
            await stream.publish_event("a", {"data": f"a{i}"})
            await stream.publish_event("other", {"data": "not ours"})
        async with open_stream(stream(["a", "b"]), headers={"last-event-id": position}) as again:
            events = await receive_data(again, 6)
    assert [e.json() for e in events] == ["b1", "a1", "b2", "a2", "b3", "a3"]


async def test_no_gap_no_duplicate_when_publishing_during_reconnects() -> None:
    total = 400
    # History holds every event, so the merge of replay and live events is what is tested.
    stream = EventStream(buffer_size=16, slow_consumer="block", history=MemoryHistory(max_events=total))
    received: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def publish() -> None:
                for i in range(total):
                    await stream.publish_event("steady", {"data": i})
                    if i % 7 == 0:
                        await anyio.lowlevel.checkpoint()

            last_id: str | None = None
            async with open_stream(stream("steady")) as response:
                await stream.wait_subscribers(1, "steady")
                tg.start_soon(publish)
                event = (await receive_data(response, 1))[0]
                received.append(event.json())
                last_id = event.id
            while len(received) < total:
                headers = {"last-event-id": str(last_id)}
                async with open_stream(stream("steady"), headers=headers) as response:
                    for event in await receive_data(response, min(5, total - len(received))):
                        received.append(event.json())
                        last_id = event.id
    assert received == list(range(total))


@pytest.mark.parametrize(
    "last_event_id",
    ["garbage", "0123abcd-5", "x" * 10000, "", "a-b-c.d", "deadbeef-1"],
)
async def test_unknown_position_gets_stream_reset_then_live_events(last_event_id: str) -> None:
    stream = EventStream()
    await stream.publish_event("r", {"data": "before"})
    with anyio.fail_after(5):
        async with open_stream(stream("r"), headers={"last-event-id": last_event_id}) as response:
            if last_event_id == "":
                # An empty Last-Event-ID is the browser's "no id": a fresh stream.
                await stream.wait_subscribers(1, "r")
                await stream.publish_event("r", {"data": "live"})
                assert (await first_event(response)).json() == "live"
                return
            reset = await first_event(response)
            assert reset.event == "stream-reset"
            await stream.wait_subscribers(1, "r")
            await stream.publish_event("r", {"data": "live"})
            assert (await response.receive_event()).json() == "live"


async def test_trimmed_history_gets_stream_reset_whose_id_resumes_later() -> None:
    stream = EventStream(history=MemoryHistory(max_events=3))
    with anyio.fail_after(5):
        async with open_stream(stream("t")) as response:
            await stream.wait_subscribers(1, "t")
            await stream.publish_event("t", {"data": 0})
            old = (await receive_data(response, 1))[0].id
        for i in range(1, 6):
            await stream.publish_event("t", {"data": i})  # 1 and 2 fall out of history
        async with open_stream(stream("t"), headers={"last-event-id": str(old)}) as response:
            reset = await first_event(response)
            assert reset.event == "stream-reset"
            assert reset.id is not None
        await stream.publish_event("t", {"data": 6})
        async with open_stream(stream("t"), headers={"last-event-id": reset.id}) as response:
            assert [e.json() for e in await receive_data(response, 1)] == [6]


async def test_without_history_a_resume_is_a_reset() -> None:
    stream = EventStream(history=None)
    await stream.publish_event("n", {"data": 1, "id": "known"})
    with anyio.fail_after(5):
        async with open_stream(stream("n"), headers={"last-event-id": "known"}) as response:
            assert (await first_event(response)).event == "stream-reset"


async def test_retry_per_endpoint() -> None:
    stream = EventStream(retry=1000)
    with anyio.fail_after(5):
        async with open_stream(stream("x")) as default, open_stream(stream("x", retry=250)) as custom:
            assert (await default.receive_event()).retry == 1000
            assert (await custom.receive_event()).retry == 250
    with pytest.raises(ValueError, match="retry"):
        stream("x", retry=-5)


class BrokenHistory(MemoryHistory):
    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        raise RuntimeError("the store is down")


async def test_server_error_ends_the_stream_with_stream_error(caplog: pytest.LogCaptureFixture) -> None:
    stream = EventStream(history=BrokenHistory())
    await stream.publish_event("e", {"data": 1, "id": "known"})
    with anyio.fail_after(5):
        async with open_stream(stream("e"), headers={"last-event-id": "known"}) as response:
            error = await first_event(response)
            assert (error.event, error.id) == ("stream-error", "error")
            assert await response.read()  # the response ends
        assert "the store is down" in caplog.text
        # The browser then reconnects with Last-Event-ID: error, which is refused.
        async with open_stream(stream("e"), headers={"last-event-id": "error"}) as refused:
            assert refused.status == 400
    assert stream.subscriber_count() == 0


@pytest.mark.parametrize("is_async", [False, True])
async def test_authorize_hook(is_async: bool) -> None:
    seen: list[list[str]] = []

    def decide(scope: object, channels: list[str]) -> bool:
        seen.append(channels)
        return "secret" not in channels

    async def decide_async(scope: object, channels: list[str]) -> bool:
        await anyio.lowlevel.checkpoint()
        return decide(scope, channels)

    authorize: Callable[..., object] = decide_async if is_async else decide
    stream = EventStream(authorize=authorize)  # type: ignore[arg-type]
    with anyio.fail_after(5):
        async with open_stream(stream(["public", "secret"])) as refused:
            assert refused.status == 403
            assert b"not authorized" in await refused.read()
        assert stream.subscriber_count() == 0
        async with open_stream(stream("public")) as allowed:
            assert allowed.status == 200
    assert seen == [["public", "secret"], ["public"]]


async def test_max_subscribers() -> None:
    stream = EventStream(max_subscribers=2)
    with anyio.fail_after(5):
        async with open_stream(stream("a")), open_stream(stream("b")):
            await stream.wait_subscribers(2)
            async with open_stream(stream("c")) as third:
                assert third.status == 503
                assert third.header("retry-after") == "5"
        async with open_stream(stream("c")) as later:
            assert later.status == 200


async def test_drop_oldest_keeps_the_stream_and_sends_stream_reset() -> None:
    stream = EventStream(buffer_size=4, slow_consumer="drop-oldest")
    with anyio.fail_after(5):
        async with open_stream(stream("d")) as response:
            await stream.wait_subscribers(1, "d")
            assert (await response.receive_event()).event == "stream-open"
            for i in range(200):  # never waits, though the client reads nothing
                await stream.publish_event("d", {"data": i})
            values: list[int] = []
            resets = 0
            while not values or values[-1] != 199:
                event = await response.receive_event()
                if event.event == "stream-reset":
                    resets += 1  # each gap is announced before the events after it
                else:
                    values.append(event.json())
            assert resets >= 1
            assert values == sorted(set(values))  # in order, no duplicate
            assert len(values) < 200  # some were dropped
            assert stream.subscriber_count("d") == 1
    stats = stream.statistics()
    assert stats.events_dropped > 0
    assert stats.subscribers_dropped == 0


async def test_block_policy_waits_without_evicting() -> None:
    stream = EventStream(buffer_size=2, send_timeout=0.01, slow_consumer="block")
    with anyio.fail_after(10):
        async with open_stream(stream("b")) as response, anyio.create_task_group() as tg:
            await stream.wait_subscribers(1, "b")

            async def publish() -> None:
                for i in range(50):
                    await stream.publish_event("b", {"data": i})

            tg.start_soon(publish)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.05)  # well past send_timeout: still subscribed, not evicted
            assert stream.subscriber_count("b") == 1
            assert [e.json() for e in await receive_data(response, 50)] == list(range(50))
    assert stream.statistics().subscribers_dropped == 0


def test_memory_history_limits() -> None:
    history = MemoryHistory(max_events=3, max_bytes=10_000, max_age=60)

    def entry(seq: int, prev: int, size: int = 10, at: float = 0.0) -> HistoryEntry:
        body = b"x" * size
        return HistoryEntry(
            "c", seq, prev, f"id{seq}", f"id{prev}", body + b"\n\n", len(body), time=at or 1e12
        )

    for seq in range(1, 6):
        history.append(entry(seq, seq - 1))
    assert history.since("c", 2) == [entry(3, 2), entry(4, 3), entry(5, 4)]
    assert history.since("c", 5) == []
    assert history.since("c", 1) is None  # 2 is gone: a gap
    assert history.find("c", "id4") == 4
    assert history.find("c", "id1") is None
    assert history.since("other", 0) == []  # never published: nothing to miss (c's trimming is c's)
    small = MemoryHistory(max_events=100, max_bytes=4 * (12 + 400))  # four entries
    for seq in range(1, 10):
        small.append(entry(seq, seq - 1, size=10))
    assert small.since("c", 5) is not None
    assert small.since("c", 4) is None  # trimmed by bytes
    with pytest.raises(ValueError, match="positive"):
        MemoryHistory(max_events=0)


def test_memory_history_ages_out_events_older_than_max_age() -> None:
    # Entries carry their publish time (time.monotonic()); the store reads the clock itself.
    history = MemoryHistory(max_events=100, max_bytes=100_000, max_age=60)
    now = time.monotonic()

    def entry(channel: str, seq: int, at: float) -> HistoryEntry:
        return HistoryEntry(channel, seq, seq - 1, f"id{seq}", f"id{seq - 1}", b"data: x\n\n", 7, time=at)

    history.append(entry("c", 1, now - 600))  # older than max_age
    history.append(entry("c", 2, now - 300))
    history.append(entry("c", 3, now))
    history.append(entry("quiet", 4, now - 600))
    assert history.since("c", 2) == [entry("c", 3, now)]
    assert history.since("c", 0) is None  # 1 and 2 have aged out: the client must reset
    assert history.last("c") == entry("c", 3, now)
    assert history.last("quiet") is None  # every event aged out: the channel is forgotten
    assert history.since("quiet", 3) is None  # and event 4 with it
    assert history.since("quiet", 4) == []  # (after it, nothing was missed)
    assert history.since("never", 0) == []  # nor on a channel never published (c's aging is c's)
    assert history.find("quiet", "id4") is None


def test_memory_history_bounds_what_it_keeps_over_every_channel(caplog: pytest.LogCaptureFixture) -> None:
    # One small event on each of 100,000 channels (one per visitor, say) kept 103 MB for five
    # minutes, bounded by nothing but age. The budget forgets the channels published least
    # recently (to within 64 publishes); a channel published often stays.
    each = 9 + 400  # an entry's bytes as the budget counts them
    history = MemoryHistory(max_events=10, max_bytes=10 * each, max_total_bytes=500 * (each + 600))
    start = time.monotonic() - 60

    def entry(channel: str, seq: int, prev: int) -> HistoryEntry:
        at = start + seq / 1000  # (published in turn, a millisecond apart)
        return HistoryEntry(channel, seq, prev, f"id{seq}", f"id{prev}", b"data: x\n\n", 7, time=at)

    seq = 0
    busy: list[int] = []
    with caplog.at_level("WARNING", logger="eventstream"):
        for n in range(10_000):  # (and 1,000 on "news": 11,000 ms)
            seq += 1
            history.append(entry(f"visitor-{n}", seq, 0))
            if n % 10 == 0:  # the busy channel, published every tenth event
                seq += 1
                history.append(entry("news", seq, busy[-1] if busy else 0))
                busy = [*busy[-9:], seq]
    kept = [n for n in range(10_000) if history.last(f"visitor-{n}") is not None]
    assert 400 < len(kept) < 500
    assert kept == list(range(10_000 - len(kept), 10_000))  # the newest ones
    assert [e.seq for e in history.since("news", busy[0] - 1) or []] == busy  # all of its ten
    # A client of a forgotten channel gets stream-reset, unless it had seen its last event.
    assert history.since("visitor-0", 0) is None
    assert history.since("visitor-0", 1) == []
    warnings = [r for r in caplog.records if "max_total_bytes" in r.getMessage()]
    assert len(warnings) == 1  # once, not per channel forgotten
    unbounded = MemoryHistory(max_total_bytes=None)
    for n in range(1_000):
        unbounded.append(entry(f"visitor-{n}", n + 1, 0))
    assert unbounded.last("visitor-0") is not None
    with pytest.raises(ValueError, match="positive"):
        MemoryHistory(max_total_bytes=0)
    small = MemoryHistory(max_bytes=10 * each, max_total_bytes=each)  # (less than max_bytes)
    for n in range(1, 4):
        small.append(entry("news", n, n - 1))
    assert [e.seq for e in small.since("news", 0) or []] == [1, 2, 3]  # the channel just published


def test_the_history_budget_keeps_busy_channels_made_long_ago() -> None:
    # Sixteen rooms made at the start and published all along, and a new visitor channel at each
    # step: only visitors are forgotten, the least recent first; every room keeps its events.
    each = 9 + 400
    history = MemoryHistory(max_events=4, max_bytes=4 * each, max_total_bytes=300 * (each + 600))
    start = time.monotonic() - 60
    seq = 0
    last: dict[str, list[int]] = {}

    def publish(channel: str) -> None:
        nonlocal seq
        seq += 1
        previous = last.get(channel, [0])[-1]
        history.append(
            HistoryEntry(
                channel,
                seq,
                previous,
                f"id{seq}",
                f"id{previous}",
                b"data: x\n\n",
                7,
                time=start + seq / 10_000,
            )
        )
        last[channel] = [*last.get(channel, [])[-3:], seq]

    rooms = [f"room-{n}" for n in range(16)]
    for room in rooms:
        publish(room)
    for step in range(20_000):
        publish(f"visitor-{step}")
        if step % 5 == 0:
            for room in rooms:
                publish(room)
    for room in rooms:
        assert [e.seq for e in history.since(room, last[room][0] - 1) or []] == last[room]
    kept = [n for n in range(20_000) if history.last(f"visitor-{n}") is not None]
    assert 0 < len(kept) < 300
    assert kept == list(range(20_000 - len(kept), 20_000))  # the most recent ones


def test_memory_history_remembers_the_newest_aged_out_channels_and_folds_the_oldest() -> None:
    # Past 65,536 channels whose whole history aged out, the oldest are no longer named: a
    # client of one is told to reset unless it is at or past the newest number they had.
    history = MemoryHistory(max_age=60)
    start = time.monotonic() - 1000
    count = 80_000
    for n in range(1, count + 1):  # published 10 ms apart (what ages out is swept as they come)
        history.append(HistoryEntry(f"c{n}", n, 0, f"id{n}", "id0", b"data: x\n\n", 7, time=start + n / 100))
    history.since("c1", 0)  # (looking at a channel ages it out)
    assert history.last(f"c{count}") is None  # every one aged out
    assert history.since(f"c{count - 1}", count - 2) is None  # named: it had event count - 1
    assert history.since(f"c{count - 1}", count - 1) == []
    folded = history.since("c1", 1)  # no longer named: only a position past every folded one holds
    assert folded is None
    assert history.since("c1", count) == []


async def test_a_client_of_a_channel_the_history_budget_forgot_gets_stream_reset() -> None:
    history = MemoryHistory(max_bytes=4096, max_total_bytes=4096)
    stream = EventStream(history=history, keep_alive_interval=None)
    with anyio.fail_after(10):
        async with open_stream(stream("a")) as first:
            await stream.wait_subscribers(1)
            await stream.publish_event("a", {"data": 1})
            [seen] = await receive_data(first, 1)
            await stream.publish_event("a", {"data": 2})
            assert [e.json() for e in await receive_data(first, 1)] == [2]
        for n in range(20):
            await stream.publish_event(f"other-{n}", {"data": n})  # past the budget: "a" goes
        async with open_stream(stream("a"), headers={"last-event-id": str(seen.id)}) as again:
            assert (await again.receive_event()).event == "stream-open"
            assert (await again.receive_event()).event == "stream-reset"
            await stream.publish_event("a", {"data": 3})
            assert [e.json() for e in await receive_data(again, 1)] == [3]


async def test_a_stream_on_a_quiet_channel_and_a_busy_one_resumes_after_trimming_elsewhere() -> None:
    # "b" is never published; "other" is trimmed meanwhile. A quiet channel's position was 0 for
    # ever, and "not held" once anything anywhere was forgotten: every resume was a reset, and
    # the event missed on "a", still in its history, was lost to the client.
    stream = EventStream(history=MemoryHistory(max_events=4))
    endpoint = stream(["a", "b"])
    with anyio.fail_after(10):
        async with open_stream(endpoint) as first:
            await stream.wait_subscribers(1)
            await stream.publish_event("a", {"data": 1})
            [seen] = await receive_data(first, 1)
        for n in range(6):
            await stream.publish_event("other", {"data": n})  # trims "other" only
        await stream.publish_event("a", {"data": 2})
        await stream.publish_event("a", {"data": 3})
        async with open_stream(endpoint, headers={"last-event-id": str(seen.id)}) as again:
            missed = await receive_data(again, 2)  # (fails on stream-reset)
            await stream.publish_event("b", {"data": 4})
            missed += await receive_data(again, 1)
    assert [e.json() for e in missed] == [2, 3, 4]


async def test_aclose_sends_the_shutdown_event_and_cuts_stuck_clients_after_the_grace() -> None:
    stream = EventStream(
        shutdown_event={"event": "bye"}, shutdown_grace=0.2, buffer_size=4, slow_consumer="block"
    )
    with anyio.fail_after(10):
        async with open_stream(stream("s")) as reader, open_stream(stream("stuck")) as stuck:
            await stream.wait_subscribers(1, "s")
            await stream.wait_subscribers(1, "stuck")
            await stream.publish_event("s", {"data": 0})
            assert [e.json() for e in await receive_data(reader, 1)] == [0]
            for i in range(12):  # the stuck client reads nothing: its buffers fill up
                with anyio.move_on_after(0.05):
                    await stream.publish_event("stuck", {"data": i})
            started = anyio.current_time()
            await stream.aclose()
            assert (await reader.receive_event()).event == "bye"
            await reader.read()  # then the response ends
            await stream.wait_subscribers(0)  # the stuck one too, after the grace
            assert anyio.current_time() - started < 2
            assert stuck.status == 200


async def test_a_malformed_or_foreign_position_of_several_channels_resets() -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream(["a", "b"])) as first:
            await stream.wait_subscribers(1, "a")
            await stream.publish_event("a", {"data": "a0"})
            await stream.publish_event("b", {"data": "b0"})
            position = str((await receive_data(first, 2))[-1].id)
        async with open_stream(stream(["a", "c"])) as other:
            await stream.wait_subscribers(1, "c")
            await stream.publish_event("c", {"data": "c0"})
            foreign = str((await receive_data(other, 1))[-1].id)  # a position on a and c
        prefix, _, numbers = position.rpartition("-")
        first_number = numbers.split(".")[0]
        for last_id in (
            f"{prefix}-{first_number}",  # one number for two channels
            f"{prefix}-{numbers}.7",  # three
            f"{prefix}-{first_number}.x",  # not a number
            foreign,  # another set of channels
        ):
            async with open_stream(stream(["a", "b"]), headers={"last-event-id": last_id}) as again:
                assert (await again.receive_event()).event == "stream-open"
                assert (await again.receive_event()).event == "stream-reset", last_id
        # The well-formed position still resumes.
        await stream.publish_event("b", {"data": "b1"})
        async with open_stream(stream(["a", "b"]), headers={"last-event-id": position}) as again:
            assert [e.json() for e in await receive_data(again, 1)] == ["b1"]
