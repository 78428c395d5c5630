"""Resume positions: the one reader of ids, on the direct path and through a GRIP proxy alike.

Non-ASCII ids under real servers (sent as UTF-8, as browsers do), ids with
other scripts' digits refused on every path, a client on several channels
resuming through Pushpin from the newest id it has, and two app processes
behind Pushpin resuming through their shared broker.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import anyio
import httpx
import pytest

from eventstream import NEED_DATA, EventStream, MemoryHistory, RedisBroker, ServerSentEvent, SSEDecoder
from eventstream._core import combined_prefix, new_entry, own_seq, resume_positions
from eventstream._redis._history import SharedHistory
from eventstream.testing import open_stream

from ..support.helpers import open_events
from ..support.marks import CLIENT_ON_ASYNCIO
from ..support.pushpin import Pushpin, require_pushpin, run_pushpin
from ..support.redis_engine import RedisEngine
from ..support.servers import Server, free_port, run_server
from ..unit.test_grip_hold import GRIP_URL, signed

_names = itertools.count()


def _entry(channel: str, seq: int, prev_seq: int, event_id: str) -> object:
    wire = f"data: {seq}\nid: {event_id}\n\n".encode()
    return new_entry(channel, seq, prev_seq, event_id, "p", wire, len(f"data: {seq}\n"), 1e18)


# -- the parser --------------------------------------------------------------------


def test_own_seq_takes_ascii_digits_only() -> None:
    assert own_seq("ab12-3", "ab12") == 3
    assert own_seq("ab12-007", "ab12") == 7
    for odd in ("ab12-٣", "ab12-²", "ab12-3\n", "ab12- 3", "ab12--3", "ab12-", "ab12-" + "9" * 19, "cd34-3"):
        assert own_seq(odd, "ab12") is None, odd


def test_resume_positions_of_every_kind_of_id() -> None:
    history = MemoryHistory()
    epoch = history.epoch
    history.append(_entry("a", 1, 0, f"{epoch}-1"))  # type: ignore[arg-type]
    history.append(_entry("b", 2, 0, "é-2"))  # type: ignore[arg-type]
    history.append(_entry("a", 3, 1, "é-3"))  # type: ignore[arg-type]
    pair = ["a", "b"]
    # An assigned id, a custom (non-ASCII) one, a combined one.
    assert resume_positions(history, epoch, ["a"], f"{epoch}-1") == {"a": 1}
    assert resume_positions(history, epoch, ["a"], "é-3") == {"a": 3}
    assert resume_positions(history, epoch, pair, "é-2") == {"a": 2, "b": 2}  # one counter: every channel
    combined = combined_prefix(epoch, pair)
    assert resume_positions(history, epoch, pair, f"{combined}3.2") == {"a": 3, "b": 2}
    # Unknown: other scripts' digits, another epoch, too long, unknown custom ids, no history.
    for odd in (f"{epoch}-٣", f"{epoch}-²", f"{combined}٣.2", f"{combined}3", "ff-1", "é-9", "x" * 5000):
        assert resume_positions(history, epoch, pair, odd) is None, odd
    assert resume_positions(None, epoch, ["a"], f"{epoch}-1") is None


def test_a_single_id_is_no_position_on_other_channels_when_numbering_is_per_channel() -> None:
    history = SharedHistory("e", max_events=10, max_bytes=10_000, max_age=60)
    history.append(_entry("a", 5, 4, "e-5"))  # type: ignore[arg-type]
    history.append(_entry("b", 5, 4, "e-5"))  # type: ignore[arg-type]
    assert resume_positions(history, "e", ["a"], "e-5") == {"a": 5}
    # e-5 of channel a says nothing of where the client is on b (b has its own e-5).
    assert resume_positions(history, "e", ["a", "b"], "e-5") is None


def test_memory_history_since_any_position_of_the_stream() -> None:
    history = MemoryHistory()
    for seq, channel, prev in ((1, "a", 0), (2, "b", 0), (3, "a", 1), (4, "b", 2), (5, "a", 3)):
        history.append(_entry(channel, seq, prev, f"x-{seq}"))  # type: ignore[arg-type]
    assert [e.seq for e in history.since("b", 3) or ()] == [4]  # 3 is a's: the client has b up to 2
    assert [e.seq for e in history.since("b", 1) or ()] == [2, 4]
    assert history.since("b", 4) == []
    assert history.since("b", 5) == []  # a's newest: nothing of b after it
    assert history.since("b", 6) is None  # no event has been numbered 6: forged
    assert history.since("quiet", 5) == []  # never published, nothing forgotten
    small = MemoryHistory(max_events=1)
    for seq, channel, prev in ((1, "a", 0), (2, "a", 1), (3, "b", 0)):
        small.append(_entry(channel, seq, prev, f"x-{seq}"))  # type: ignore[arg-type]
    assert small.since("a", 0) is None  # event 1 was forgotten
    assert small.since("quiet", 0) == []  # it was a's: a channel never published missed nothing
    assert small.since("quiet", 1) == []


# -- the same answer on both paths, in process ---------------------------------------


# -- real servers: ids are UTF-8 ----------------------------------------------------


async def _publish(client: httpx.AsyncClient, app: Server, channel: str, event: dict[str, object]) -> None:
    response = await client.post(
        f"{app.base_url}/publish", json={"channel": channel, "event": {"event": "message", **event}}
    )
    assert response.status_code == 200, response.text


async def _resume(
    client: httpx.AsyncClient, url: str, last_id: bytes | None, count: int
) -> list[ServerSentEvent]:
    # The first ``count`` events (keep-alives aside) of a stream resumed from ``last_id`` (header bytes).
    headers = {"last-event-id": last_id} if last_id is not None else {}
    async with open_events(client, url, headers=headers) as reader:
        assert reader.response.status_code == 200
        with anyio.fail_after(10):
            return [await reader.next_not_keep_alive() for _ in range(count)]


@pytest.fixture(scope="module", params=["uvicorn", "hypercorn-asyncio", "hypercorn-trio"])
def app_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    with run_server(request.param, env={"EVENTSTREAM_KEEP_ALIVE": "0.5"}, log_dir=log_dir) as server:
        yield server


@CLIENT_ON_ASYNCIO
@pytest.mark.anyio
@pytest.mark.server
async def test_non_ascii_ids_resume_under_real_servers(app_server: Server) -> None:
    channel = f"utf8-{next(_names)}"
    url = f"{app_server.base_url}/events/{channel}"
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(1, 4):
            await _publish(client, app_server, channel, {"data": n, "id": f"é-{n}"})
        # Last-Event-ID as a browser sends it (UTF-8), then the query parameter, raw and percent-encoded.
        resumed = await _resume(client, url, "é-1".encode(), 3)
        assert [(e.event, e.id, e.json()) for e in resumed[1:]] == [
            ("message", "é-2", 2),
            ("message", "é-3", 3),
        ]
        for query in ("lastEventId=%C3%A9-2", "lastEventId=é-2"):
            resumed = await _resume(client, f"{url}?{query}", None, 2)
            assert [(e.event, e.id) for e in resumed[1:]] == [("message", "é-3")]
        # Bytes that are not UTF-8 (here é in latin-1) name no position: stream-reset, never a crash.
        resumed = await _resume(client, url, "é-1".encode("latin-1"), 2)
        assert [e.event for e in resumed] == ["stream-open", "stream-reset"]
        await _publish(client, app_server, channel, {"data": 4, "id": "é-4"})
        resumed = await _resume(client, url, "é-3".encode(), 2)
        assert (resumed[1].id, resumed[1].json()) == ("é-4", 4)


# -- through real Pushpin -------------------------------------------------------------


@pytest.fixture(scope="module", params=["hypercorn-asyncio", "hypercorn-trio"])
def proxied(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[tuple[Pushpin, Server]]:
    """One app behind a private Pushpin (no reliable mode), which it publishes to."""
    require_pushpin()
    control = free_port()
    env = {
        "EVENTSTREAM_GRIP": f"http://127.0.0.1:{control}/?verify-iss=pushpin",
        "EVENTSTREAM_KEEP_ALIVE": "1",
    }
    with run_server(request.param, env=env, log_dir=log_dir) as app:
        with run_pushpin(app.port, control_port=control) as pushpin:
            pushpin.wait_holds("/events/ready")
            yield pushpin, app


@CLIENT_ON_ASYNCIO
@pytest.mark.anyio
@pytest.mark.server
async def test_other_scripts_digits_are_refused_alike_directly_and_through_pushpin(
    proxied: tuple[Pushpin, Server],
) -> None:
    pushpin, app = proxied
    channel = f"digits-{next(_names)}"
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, f"{app.base_url}/events/{channel}") as reader:
            assert (await reader.next()).event == "stream-open"
            for n in range(3):
                await _publish(client, app, channel, {"data": n})
            first = (await reader.next_not_keep_alive()).id
        assert first is not None
        epoch, _, seq = first.rpartition("-")
        arabic = "".join(chr(0x0660 + int(digit)) for digit in seq)  # Arabic-Indic digits
        for base in (pushpin.url, app.base_url):
            url = f"{base}/events/{channel}"
            resumed = await _resume(client, url, f"{epoch}-{seq}".encode(), 3)
            assert resumed[0].event == "stream-open"
            assert [(e.event, e.json()) for e in resumed[1:]] == [("message", 1), ("message", 2)]
            resumed = await _resume(client, url, f"{epoch}-{arabic}".encode(), 2)
            assert [e.event for e in resumed] == ["stream-open", "stream-reset"], base
            query = "lastEventId=" + quote(f"{epoch}-{arabic}")
            resumed = await _resume(client, f"{url}?{query}", None, 2)
            assert [e.event for e in resumed] == ["stream-open", "stream-reset"], base
            resumed = await _resume(client, url, "é-no-such-id".encode(), 2)
            assert [e.event for e in resumed] == ["stream-open", "stream-reset"], base


@CLIENT_ON_ASYNCIO
@pytest.mark.anyio
@pytest.mark.server
async def test_non_ascii_custom_ids_resume_through_pushpin(proxied: tuple[Pushpin, Server]) -> None:
    pushpin, app = proxied
    channel = f"utf8-{next(_names)}"
    async with httpx.AsyncClient(timeout=10) as client:
        for n in range(1, 4):
            await _publish(client, app, channel, {"data": n, "id": f"é-{n}"})
        resumed = await _resume(client, f"{pushpin.url}/events/{channel}", "é-1".encode(), 3)
        assert resumed[0].event == "stream-open"
        assert [(e.event, e.id) for e in resumed[1:]] == [("message", "é-2"), ("message", "é-3")]


@CLIENT_ON_ASYNCIO
@pytest.mark.anyio
@pytest.mark.server
async def test_several_channels_resume_through_pushpin_from_the_newest_id(
    proxied: tuple[Pushpin, Server],
) -> None:
    pushpin, app = proxied
    pair = f"pair-{next(_names)}"
    url = f"{pushpin.url}/pair/{pair}"
    async with httpx.AsyncClient(timeout=10) as client:
        async with open_events(client, url) as reader:
            assert (await reader.next()).event == "stream-open"
            for n, side in enumerate("abba"):
                await _publish(client, app, f"{pair}-{side}", {"data": n})
            received = [await reader.next_not_keep_alive() for _ in range(4)]
        assert [e.json() for e in received] == [0, 1, 2, 3]
        newest, second = received[-1].id, received[1].id
        assert newest is not None
        assert second is not None
        # Missed while away, on both channels.
        for n, side in zip(range(4, 7), "bab", strict=True):
            await _publish(client, app, f"{pair}-{side}", {"data": n})
        for last_id, expected in ((newest, [4, 5, 6]), (second, [2, 3, 4, 5, 6])):
            resumed = await _resume(client, url, last_id.encode(), 1 + len(expected))
            assert [e.event for e in resumed] == ["stream-open", *["message"] * len(expected)]
            assert [e.json() for e in resumed[1:]] == expected


# -- a shared broker numbers each channel on its own ---------------------------------


@pytest.mark.anyio
async def test_one_id_on_several_channels_through_the_proxy_with_a_shared_broker_resets(
    engine: RedisEngine, prefix: str
) -> None:
    publisher = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix))
    held = EventStream(broker=RedisBroker(engine.url, key_prefix=prefix), grip=GRIP_URL)
    async with publisher, held:
        for n in range(1, 6):
            for channel in ("a", "b"):
                await publisher.publish_event(channel, {"event": "message", "data": f"{channel}{n}"})
        third = f"{held._epoch}-3"  # the third event of a, and of b
        headers = [("last-event-id", third), *signed().items()]
        async with open_stream(held(["a", "b"]), "/", headers=headers) as response:
            events = _events(await response.read())
        # Which channel's third event the client has is unknown: a reset, not a guess.
        assert [e.event for e in events] == ["stream-open", "stream-reset"]
        async with open_stream(held("b"), "/", headers=headers) as response:
            events = _events(await response.read())
        assert [(e.event, e.json()) for e in events[1:]] == [("message", "b4"), ("message", "b5")]


def _events(body: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    decoder.feed(body)
    events = []
    while (event := decoder.next_event()) is not NEED_DATA:
        assert isinstance(event, ServerSentEvent)
        events.append(event)
    return events


# -- two app processes behind Pushpin --------------------------------------------------


@CLIENT_ON_ASYNCIO
@pytest.mark.anyio
@pytest.mark.server
@pytest.mark.parametrize("shared", [True, False], ids=["broker", "no-broker"])
async def test_two_processes_behind_pushpin_resume_or_reset_never_lose_silently(
    shared: bool, engine: RedisEngine, prefix: str, log_dir: Path
) -> None:
    """Pushpin asks process A; A and B both publish. With a broker the client resumes
    whichever published; without one, an id of B's is unknown to A: stream-reset."""
    require_pushpin()
    control = free_port()
    env = {"EVENTSTREAM_GRIP": f"http://127.0.0.1:{control}/?verify-iss=pushpin"}
    if shared:
        env |= {"EVENTSTREAM_BROKER": engine.url, "EVENTSTREAM_BROKER_PREFIX": prefix}
    channel = f"two-{next(_names)}"
    url_of = "{}/events/" + channel
    with (
        run_server("hypercorn-asyncio", env=env, log_dir=log_dir) as first,
        run_server("hypercorn-asyncio", env=env, log_dir=log_dir) as second,
        run_pushpin(first.port, control_port=control) as pushpin,
    ):
        pushpin.wait_holds("/events/ready")
        async with httpx.AsyncClient(timeout=10) as client:
            async with open_events(client, url_of.format(pushpin.url)) as reader:
                assert (await reader.next()).event == "stream-open"
                await _publish(client, first, channel, {"data": "A1"})
                await _publish(client, second, channel, {"data": "B1"})
                got = [await reader.next_not_keep_alive() for _ in range(2)]
            assert [e.json() for e in got] == ["A1", "B1"]
            from_a, from_b = (e.id for e in got)
            assert from_a is not None
            assert from_b is not None
            await _publish(client, second, channel, {"data": "B2"})  # missed while away
            if shared:
                for last_id, expected in ((from_a, ["B1", "B2"]), (from_b, ["B2"])):
                    resumed = await _resume(
                        client, url_of.format(pushpin.url), last_id.encode(), 1 + len(expected)
                    )
                    assert [e.event for e in resumed] == ["stream-open", *["message"] * len(expected)]
                    assert [e.json() for e in resumed[1:]] == expected
            else:
                resumed = await _resume(client, url_of.format(pushpin.url), from_b.encode(), 2)
                assert [e.event for e in resumed] == ["stream-open", "stream-reset"]


@pytest.mark.anyio
async def test_several_channels_one_never_published_resume_without_reset() -> None:
    stream = EventStream()
    endpoint = stream(["busy", "quiet"])
    async with open_stream(endpoint, "/") as response:
        assert (await response.receive_event()).event == "stream-open"
        await stream.publish_event("busy", {"event": "message", "data": 1})
        last = (await response.receive_event()).id
    assert last is not None
    await stream.publish_event("busy", {"event": "message", "data": 2})
    async with open_stream(endpoint, "/", headers={"last-event-id": last}) as response:
        events = [await response.receive_event() for _ in range(2)]
    assert [(e.event, e.json()) for e in events[1:]] == [("message", 2)]
