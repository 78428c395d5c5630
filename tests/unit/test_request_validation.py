"""Request and endpoint validation: lastEventId=error, channels checked when the endpoint is built,
a bad channels callable answered with a clear 500, readable defaults in help().

In-process (eventstream.testing.open_stream, both backends); the same under real servers in
tests/e2e/test_request_validation_servers.py.
"""

from __future__ import annotations

import inspect
import logging
import pydoc
from typing import Any

import anyio
import pytest

from eventstream import EventStream, MemoryHistory
from eventstream._serve._endpoint import BAD_CHANNELS
from eventstream.testing import open_stream
from eventstream.types import Scope

pytestmark = pytest.mark.anyio


# -- 9: ?lastEventId=error is refused like the header --------------------------


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("/?lastEventId=error", {}),
        ("/?x=1&lastEventId=error", {}),
        ("/", {"last-event-id": "error"}),
        ("/?lastEventId=7", {"last-event-id": "error"}),  # the header wins, as everywhere
    ],
)
async def test_last_event_id_error_gets_400(url: str, headers: dict[str, str]) -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream("a"), url, headers=headers) as response:
            assert response.status == 400
            assert "Last-Event-ID is 'error'" in (await response.read()).decode()
    assert stream.statistics().subscribers == 0


async def test_other_query_ids_still_stream() -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream("a"), "/?lastEventId=errors") as response:
            assert response.status == 200
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).event == "stream-reset"


# -- 15: channels are checked when the endpoint is built -----------------------


@pytest.mark.parametrize(
    ("spec", "error", "match"),
    [
        (None, TypeError, "channels must be a channel name, an iterable of names or a callable"),
        (5, TypeError, "not int"),
        (b"news", TypeError, "not bytes"),
        (["a", 1], TypeError, "a channel name must be a str, not int"),
        ([], ValueError, "No channels specified"),
        ("", ValueError, "No channels specified"),
        ("  ", ValueError, "No channels specified"),
        ([" ", ""], ValueError, "No channels specified"),
        ("a\nb", ValueError, "control character"),
        ("a,b", ValueError, "control character, ','"),
        ("room-{id};x", ValueError, "control character, ','"),
        ("x" * 257, ValueError, "the limit is 256"),
        ([f"c{i}" for i in range(33)], ValueError, "Too many channels: at most 32"),
    ],
)
def test_endpoints_that_could_never_stream_are_refused(spec: Any, error: type[Exception], match: str) -> None:
    stream = EventStream()
    with pytest.raises(error, match=match):
        stream(spec)


def test_limits_are_the_streams() -> None:
    stream = EventStream(max_channels=2, max_channel_name_length=5)
    stream(["a", "b"])
    stream("{id}-{long_parameter_name}")  # tokens stand for a valid name, whatever their name
    with pytest.raises(ValueError, match="at most 2"):
        stream(["a", "b", "c"])
    with pytest.raises(ValueError, match="limit is 5"):
        stream("abcdef")


@pytest.mark.parametrize("spec", ["a", " a ", ["a", "", "b"], ("x", "x"), "{id}", ["n", "u-{user}"]])
def test_valid_specs_are_accepted(spec: Any) -> None:
    EventStream()(spec)


async def test_run_refuses_what_is_not_channels() -> None:
    stream = EventStream()

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing may be read")

    async def send(message: Any) -> None:
        raise AssertionError("nothing may be sent")

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(TypeError, match="channels must be a channel name or an iterable of names, not None"):
        await stream.run(scope, receive, send, None)  # type: ignore[arg-type]


async def test_run_refuses_a_name_that_is_not_a_str_before_answering() -> None:
    stream = EventStream()
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("nothing may be read")

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    with pytest.raises(TypeError, match="a channel name must be a str, not int"):
        await stream.run(scope, receive, send, ["news", 1])  # type: ignore[list-item]
    assert sent == []  # a programming error of the app's: raised, not answered
    assert stream.subscriber_count() == 0


def returns_none(scope: Scope) -> None:
    return None


async def returns_ints(scope: Scope) -> list[int]:
    return [1, 2]


class ChannelsFromConfig:
    """A callable object: it has no ``__qualname__`` of its own, its repr names it."""

    def __call__(self, scope: Scope) -> bytes:
        return b"news"


@pytest.mark.parametrize(
    ("func", "shown"),
    [
        (returns_none, "returns_none returned None"),
        (returns_ints, "returns_ints returned [1, 2]"),
        (lambda scope: 42, "<lambda> returned 42"),
        (ChannelsFromConfig(), "ChannelsFromConfig object at 0x"),
    ],
)
async def test_a_bad_callable_result_is_a_clear_500(
    func: Any, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    BAD_CHANNELS._tokens = float(BAD_CHANNELS.burst)  # a fresh bucket (other tests log such lines)
    stream = EventStream()
    with caplog.at_level(logging.ERROR, logger="eventstream"), anyio.fail_after(5):
        async with open_stream(stream(func), "/api/events") as response:
            assert response.status == 500
            body = (await response.read()).decode()
    assert body == "Internal Server Error: the endpoint's channels callable failed"
    (record,) = [r for r in caplog.records if r.name == "eventstream"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert f"{__name__}." in message
    assert shown in message
    assert "expected a channel name or an iterable of names" in message
    assert "'/api/events'" in message
    assert stream.statistics().subscribers == 0


async def test_the_log_line_quotes_the_path(caplog: pytest.LogCaptureFixture) -> None:
    # The path comes from the client (servers decode %0d%0a into CR LF): quoted in
    # the log line, so it cannot forge lines.
    stream = EventStream()
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Any) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/a\r\nforged", "headers": []}
    with caplog.at_level(logging.ERROR, logger="eventstream"), anyio.fail_after(5):
        await stream(returns_none)(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 500
    (record,) = [r for r in caplog.records if r.name == "eventstream"]
    assert "'/a\\r\\nforged'" in record.getMessage()
    assert "\n" not in record.getMessage()
    assert "\r" not in record.getMessage()


# -- 16: readable defaults ------------------------------------------------------


def test_help_shows_readable_defaults() -> None:
    text = pydoc.render_doc(EventStream)  # what help(EventStream) shows
    assert "object object at" not in text
    assert "history: 'HistoryStore | None' = <MemoryHistory()>" in str(inspect.signature(EventStream))
    assert "retry: 'int | None' = <the stream's retry>" in str(inspect.signature(EventStream.__call__))
    assert "retry: 'int | None' = <the stream's retry>" in str(inspect.signature(EventStream.run))


def test_the_defaults_still_mean_what_they_say() -> None:
    stream = EventStream(retry=1500)
    assert isinstance(stream._history, MemoryHistory)
    assert stream("a").retry == 1500
    assert stream("a", retry=None).retry is None
    assert EventStream(history=None)._history is None


async def test_a_flood_of_requests_on_a_bad_callable_logs_a_few_short_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The client chooses how often the app's bad callable fails, and the path in each line.
    BAD_CHANNELS._tokens = float(BAD_CHANNELS.burst)
    BAD_CHANNELS.suppressed = 0
    endpoint = EventStream()(returns_none)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR, logger="eventstream"), anyio.fail_after(20):
        for _ in range(50):
            async with open_stream(endpoint, "/" + "A" * 60_000) as response:
                assert response.status == 500
    lines = [r.getMessage() for r in caplog.records if "channels callable" in r.getMessage()]
    assert len(lines) == BAD_CHANNELS.burst  # the rest were left out, and counted
    assert BAD_CHANNELS.suppressed == 50 - BAD_CHANNELS.burst
    assert max(len(line) for line in lines) < 1000
