"""StreamRequest: a request read once from the ASGI scope, and the value's own checks."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream import GripPublisher
from eventstream._serve._channels import BadRequest, ChannelResolver
from eventstream._serve._request import StreamRequest, parse_request
from eventstream.types import Scope

pytestmark = pytest.mark.anyio


def scope_of(
    *, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
) -> Scope:
    return {
        "type": "http",
        "method": method,
        "path": "/events",
        "raw_path": b"/events",
        "query_string": query,
        "headers": headers or [],
    }


async def parse(scope: Scope, channels: Any = ("a",), **options: Any) -> StreamRequest:
    settings: dict[str, Any] = {
        "grip": None,
        "grip_prefix": "events-",
        "grip_reliable": False,
        "max_channels": 4,
        "max_channel_name_length": 16,
        **options,
    }
    return await parse_request(scope, channels, **settings)


async def test_a_plain_get_is_read_into_the_value() -> None:
    request = await parse(scope_of(), [" b ", "a", "b"])
    assert request == StreamRequest("GET", ("b", "a"), None, None)
    assert not request.head
    assert not request.trusted_next_link


async def test_head_and_the_last_event_id_from_header_or_query() -> None:
    from_header = await parse(
        scope_of(method="HEAD", headers=[(b"last-event-id", b"e-3")], query=b"lastEventId=e-9")
    )
    assert from_header.head
    assert from_header.last_event_id == "e-3"  # the header wins over the query
    assert (await parse(scope_of(query=b"lastEventId=e-9"))).last_event_id == "e-9"
    assert (await parse(scope_of(headers=[(b"last-event-id", b"")]))).last_event_id is None


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ([(b"last-event-id", "é-1".encode())], b"", "é-1"),  # as browsers send it
        ([], "lastEventId=é-1".encode(), "é-1"),  # raw UTF-8 in the query
        ([], b"lastEventId=%C3%A9-1", "é-1"),
        # Not UTF-8: lone surrogates, which no valid id has, so the id matches nothing.
        ([(b"last-event-id", b"\xe9-1")], b"", "\udce9-1"),
        ([], b"lastEventId=\xe9-1", "\udce9-1"),
        ([], b"lastEventId=%E9-1", "\udce9-1"),
    ],
)
async def test_the_last_event_id_is_read_as_utf8(
    headers: list[tuple[bytes, bytes]], query: bytes, expected: str
) -> None:
    assert (await parse(scope_of(headers=headers, query=query))).last_event_id == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"channel=a&channel=b", None),  # (no key can be it: not walked)
        (b"channel=a&last%45ventId=e-4", "e-4"),  # its name percent-encoded
        (b"channel=%61&lastEventIds=e-5", None),  # another key that starts with its name
        (b"channel=a&lastEventId=e-6&lastEventId=e-7", "e-6"),  # the first one
    ],
)
async def test_the_last_event_id_in_the_query_is_found_however_the_key_is_spelled(
    query: bytes, expected: str | None
) -> None:
    assert (await parse(scope_of(query=query))).last_event_id == expected


async def test_channels_of_a_resolver_are_resolved_for_the_request() -> None:
    resolver = ChannelResolver("room-{id}", max_channels=4, max_length=16)
    scope = {**scope_of(), "path_params": {"id": "7"}}
    assert (await parse(scope, resolver)).channels == ("room-7",)


@pytest.mark.parametrize(
    ("scope", "channels", "status"),
    [
        (scope_of(method="POST"), ("a",), 405),
        (scope_of(headers=[(b"accept", b"text/html")]), ("a",), 406),
        (scope_of(query=b"lastEventId=error"), ("a",), 400),
        (scope_of(), ("a", "b", "c", "d", "e"), 400),
        (scope_of(), ("x" * 17,), 400),
    ],
)
async def test_bad_requests_raise_with_their_status(scope: Scope, channels: Any, status: int) -> None:
    with pytest.raises(BadRequest) as caught:
        await parse(scope, channels)
    assert caught.value.status == status


async def test_requests_through_a_proxy_carry_the_grip_verdict() -> None:
    grip = GripPublisher({"control_uri": "http://127.0.0.1:1", "verify_key": "secret"})
    with pytest.raises(BadRequest) as caught:
        await parse(scope_of(headers=[(b"grip-sig", b"forged")]), grip=grip)
    assert caught.value.status == 403
    direct = await parse(scope_of(), grip=grip)
    assert direct.grip is None


def test_the_value_refuses_contradictions() -> None:
    with pytest.raises(ValueError, match="method"):
        StreamRequest("POST", ("a",), None, None)
    with pytest.raises(ValueError, match="channel"):
        StreamRequest("GET", (), None, None)
    for position in ("", "error"):
        with pytest.raises(ValueError, match="not a position"):
            StreamRequest("GET", ("a",), position, None)
