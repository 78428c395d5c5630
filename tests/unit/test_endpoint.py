"""How the endpoint answers requests it cannot stream (in-process, both backends)."""

from __future__ import annotations

import logging

import anyio
import pytest

from eventstream import EventStream
from eventstream._serve._http import accepts_event_stream
from eventstream.testing import open_stream

pytestmark = pytest.mark.anyio

LONG = "x" * 300


@pytest.mark.parametrize(
    ("spec", "method", "headers", "status", "reason"),
    [
        ("a", "POST", {}, 405, "Method not allowed"),
        ("a", "PUT", {}, 405, "Method not allowed"),
        ("a", "GET", {"accept": "application/json"}, 406, "Not acceptable"),
        ("a", "GET", {"accept": "text/event-stream;q=0, */*"}, 406, "Not acceptable"),
        ("a", "GET", {"accept": "text/html, text/plain"}, 406, "Not acceptable"),
        ("a", "GET", {"last-event-id": "error"}, 400, "Last-Event-ID"),
        ([" ", ""], "GET", {}, 400, "No channels"),
        ([], "GET", {}, 400, "No channels"),
        ([LONG], "GET", {}, 400, "limit is 256"),
        ([f"c{i}" for i in range(33)], "GET", {}, 400, "Too many channels"),
        (["a,b"], "GET", {}, 400, "Invalid channel"),
        (["a\x01"], "GET", {}, 400, "Invalid channel"),
        ("{id}", "GET", {}, 400, "No route parameter 'id'"),
    ],
)
async def test_refused_requests(
    spec: str | list[str], method: str, headers: dict[str, str], status: int, reason: str
) -> None:
    stream = EventStream()
    # Names a static spec could never stream are refused when the endpoint is built
    # (tests/unit/test_request_validation.py); names computed per request get 400.
    endpoint = stream(spec) if isinstance(spec, str) else stream(lambda scope: spec)
    with anyio.fail_after(5):
        async with open_stream(endpoint, method=method, headers=headers) as response:
            assert response.status == status
            assert response.header("content-type") == "text/plain; charset=utf-8"
            body = await response.read()
            assert reason in body.decode()
            if status == 405:
                assert response.header("allow") == "GET, HEAD"
    assert stream.subscriber_count() == 0


@pytest.mark.parametrize(
    "accept",
    [None, "", "text/event-stream", "*/*", "text/*", "text/event-stream;q=0.1", "text/html, */*;q=0.5",
     "TEXT/EVENT-STREAM", "text/event-stream; charset=utf-8", "*/*;q=0, text/event-stream", "*/*;q=bogus"],
)  # fmt: skip
def test_accepted(accept: str | None) -> None:
    assert accepts_event_stream(accept)


@pytest.mark.parametrize(
    "accept", ["application/json", "text/*;q=0", "*/*;q=0", "text/event-stream;q=0.0, */*"]
)
def test_not_accepted(accept: str) -> None:
    assert not accepts_event_stream(accept)


async def test_head_answers_headers_only() -> None:
    stream = EventStream()
    with anyio.fail_after(5):
        async with open_stream(stream("a"), method="HEAD") as response:
            assert response.status == 200
            assert response.header("content-type") == "text/event-stream"
            assert await response.read() == b""
    assert stream.statistics().subscribers == 0


async def test_websocket_is_closed() -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await EventStream()("a")({"type": "websocket"}, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1003}]


async def test_a_broker_never_started_is_a_503_to_retry_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    # The app forgot 'async with stream' (or its lifespan): the broker cannot serve the
    # request's history; the client is told to come back, and nothing is subscribed.
    stream = EventStream(broker="redis://127.0.0.1:1/0")
    with anyio.fail_after(10), caplog.at_level(logging.WARNING, logger="eventstream"):
        async with open_stream(stream("a")) as response:
            assert response.status == 503
            assert response.header("retry-after") == "5"
            assert response.header("content-type") == "text/plain; charset=utf-8"
            body = (await response.read()).decode()
    assert body.startswith("Service unavailable: the event broker cannot be reached")
    assert "enter the stream (async with) first" in body
    assert stream.subscriber_count() == 0
    # The operator sees it too (a broker that stops answering refuses every new stream).
    [record] = [r for r in caplog.records if "answered 503" in r.getMessage()]
    assert record.getMessage().startswith("event stream of a answered 503: ")
    assert record.channels == ("a",)  # type: ignore[attr-defined]
