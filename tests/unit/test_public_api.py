"""The public surface: what ``eventstream`` exports, and that it type-checks from a user's side.

mypy --strict runs over this file in the ``typing`` session.
"""

from __future__ import annotations

import eventstream
import eventstream.client
from eventstream import (
    EventStream,
    GripPublisher,
    HistoryStore,
    MemoryHistory,
    ServerSentEvent,
    get_event_stream_singleton,
)
from eventstream.client import EventSource, EventSourceError
from eventstream.testing import open_stream
from eventstream.types import Receive, Scope, Send

EXPECTED = {
    "BrokerStatistics",
    "NEED_DATA",
    "Broker",
    "BrokerError",
    "ChannelPublisher",
    "ChannelWriter",
    "EventStream",
    "EventStreamEndpoint",
    "EventStreamError",
    "EventStreamStatistics",
    "GripProxyStatistics",
    "GripPublishError",
    "GripPublisher",
    "HealthEndpoint",
    "HistoryEntry",
    "HistoryStore",
    "MemoryHistory",
    "Publisher",
    "Readiness",
    "RedisBroker",
    "SSEDecoder",
    "SubscribeLimits",
    "PresenceMember",
    "ServerSentEvent",
    "SubscriberLag",
    "encode",
    "get_event_stream_singleton",
    "parse_grip_uri",
}


def test_all_is_the_public_surface() -> None:
    assert set(eventstream.__all__) == EXPECTED
    for name in eventstream.__all__:
        assert getattr(eventstream, name).__module__.startswith("eventstream")
    public_modules = {name for name in vars(eventstream) if not name.startswith("_") and name not in EXPECTED}
    modules = {"auth", "client", "cors", "testing", "types", "prometheus", "otel", "annotations"}
    assert public_modules <= modules


def test_the_client_module_surface() -> None:
    assert set(eventstream.client.__all__) == {"EventSource", "EventSourceError", "ServerSentEvent"}
    for name in eventstream.client.__all__:
        assert getattr(eventstream.client, name).__module__.startswith("eventstream")
    assert eventstream.client.ServerSentEvent is ServerSentEvent


def test_public_classes_have_no_private_bases() -> None:
    # The reference (autodoc, without inherited members) shows what a class defines
    # itself and its public bases: a private base's methods would be left out.
    for module in (eventstream, eventstream.client):
        for name in module.__all__:
            value = getattr(module, name)
            if not isinstance(value, type):
                continue
            for base in value.__mro__[1:]:
                private = base.__module__.startswith("eventstream") and base.__name__ not in module.__all__
                assert not private, f"{name} has the private base {base.__module__}.{base.__qualname__}"


def test_the_auth_module_surface() -> None:
    import eventstream.auth

    assert set(eventstream.auth.__all__) == {
        "ChannelPattern",
        "Grant",
        "JWKSFetcher",
        "JWTAuthorizer",
        "KeysUnavailable",
        "MemoryTicketLedger",
        "RedisTicketLedger",
        "TicketLedger",
        "TokenVerifier",
        "Unauthorized",
    }
    for name in eventstream.auth.__all__:
        # Grant and Unauthorized sit at the bottom (types.py and the request path take them there).
        module = getattr(eventstream.auth, name).__module__
        assert module.startswith(("eventstream._auth", "eventstream._base"))


def test_the_cors_module_surface() -> None:
    import eventstream.cors

    assert eventstream.cors.__all__ == ["CORS"]
    assert eventstream.cors.CORS.__module__ == "eventstream._auth._cors"


def test_private_modules_stay_private() -> None:
    for name in eventstream.__all__:
        assert not name.startswith("_")


# What follows is type-checked, not run: a user's code using the API.


async def _user_code(scope: Scope, receive: Receive, send: Send) -> None:
    stream: EventStream = get_event_stream_singleton("typed", buffer_size=64)
    store: HistoryStore = MemoryHistory(max_events=10)
    other = EventStream(history=store, grip=GripPublisher("http://127.0.0.1:5561"), slow_consumer="block")
    app = stream("{id}", retry=1000)
    await app(scope, receive, send)
    await stream.run(scope, receive, send, ["a", "b"])
    await stream.publish_event("a", ServerSentEvent(event="message", data={"n": 1}))
    await stream.publish_event("a", {"event": "message", "data": [1, 2]})
    async with stream.channel_writer("a") as writer:
        await writer.send(ServerSentEvent(text="plain"))
    async with other, open_stream(app, "/x", path_params={"id": "x"}) as response:
        event: ServerSentEvent = await response.receive_event()
        assert event.payload is not None
    stats = stream.statistics()
    assert stats.subscribers >= 0


async def _client_code() -> None:
    async with EventSource("http://127.0.0.1/events", headers={"a": "b"}, last_event_id="1") as source:
        async for event in source:
            received: ServerSentEvent = event
            assert received.text is not None
            last: str = source.last_event_id
            assert last
        try:
            await source.__anext__()
        except EventSourceError as exc:
            status: int = exc.status_code
            assert status
