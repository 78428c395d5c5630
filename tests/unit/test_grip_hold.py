"""GRIP reliable mode, in process: the next link, Grip-Last and what a next-link request may subscribe to.

The same attacks run against real Pushpin in tests/e2e/test_grip_security.py.
"""

from __future__ import annotations

import re
import time
from typing import Any

import jwt
import pytest

from eventstream import EventStream, GripPublisher
from eventstream._grip._hold import GripRequest, has_dot_segments, hold_headers, next_link, parse_grip_last
from eventstream._serve import _http
from eventstream._serve._request import parse_request
from eventstream.testing import open_stream

KEY = "a-long-enough-signing-key-0123456789"
GRIP_URL = f"http://proxy:5561/?verify-iss=pushpin&verify-key={KEY}"


def signed() -> dict[str, str]:
    token = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, KEY, algorithm="HS256")
    return {"grip-sig": token}


def scope(path: str = "/", query: bytes = b"", raw_path: bytes | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"type": "http", "path": path, "query_string": query, "headers": [], **extra}
    if raw_path is not None:
        result["raw_path"] = raw_path
    return result


def grip_request(headers: list[tuple[bytes, bytes]], *, signed: bool) -> GripRequest:
    """What the request parser makes of a next-link request (``?grip-next-link=1``) with ``headers``."""
    request = scope("/", b"grip-next-link=1", headers=headers)
    return GripRequest.parse(_http.text_header(request, b"grip-last"), marked=True, query=b"", signed=signed)


# --- the next link --------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (b"", "?grip-next-link=1"),
        (b"a=1&b=two", "?a=1&b=two&grip-next-link=1"),
        (b"tags=a,b;c", "?tags=a%2Cb%3Bc&grip-next-link=1"),
        (b"x=<https://evil/>;rel=next", "?x=%3Chttps%3A%2F%2Fevil%2F%3E%3Brel=next&grip-next-link=1"),
        (b"x=%0d%0aGrip-Channel:%20admin", "?x=%0d%0aGrip-Channel%3A%20admin&grip-next-link=1"),
        (b"x=\r\nGrip-Channel: admin", "?x=%0D%0AGrip-Channel%3A%20admin&grip-next-link=1"),
        (b"x=100%&y=%zz", "?x=100%25&y=%25zz&grip-next-link=1"),
        (b"q=caf\xc3\xa9+au+lait", "?q=caf%C3%A9+au+lait&grip-next-link=1"),
        (b"grip-next-link=1&a=1", "?a=1&grip-next-link=1"),
        (b"grip%2Dnext%2Dlink=evil&&a", "?a&grip-next-link=1"),
    ],
)
def test_next_link_is_a_percent_encoded_query_only_reference(query: bytes, expected: str) -> None:
    link = next_link(query)
    assert link == expected
    assert re.fullmatch(r"\?[A-Za-z0-9\-._~&=+%]*", link)


@pytest.mark.parametrize(
    ("path", "raw_path"),
    [
        ("//127.0.0.1:9/events/x", b"//127.0.0.1:9/events/x"),  # would be a network-path reference
        ("/a\r\nGrip-Channel: admin", None),  # no raw_path: the decoded path has CR/LF
        ("/deep/pub-a/../secret-x", b"/deep/pub-a/../secret-x"),
        ("/x", b"https://evil.example/x"),
    ],
)
@pytest.mark.anyio
async def test_next_link_never_carries_the_path(path: str, raw_path: bytes | None) -> None:
    # The request is parsed once; the next link is made from what the parsed value kept.
    headers = [(b"grip-sig", signed()["grip-sig"].encode())]
    request = await parse_request(
        scope(path, b"a=1", raw_path=raw_path, method="GET", headers=headers),
        ["x"],
        grip=GripPublisher(GRIP_URL),
        grip_prefix="events-",
        grip_reliable=False,
        max_channels=4,
        max_channel_name_length=64,
    )
    assert request.grip is not None
    assert request.grip.signed
    link = next_link(request.grip.query)
    assert link == "?a=1&grip-next-link=1"
    header = dict(hold_headers([("events-x", "e-0")], None, None, link))[b"grip-link"]
    assert header == b"<?a=1&grip-next-link=1>; rel=next"


@pytest.mark.parametrize(
    ("raw_path", "dotted"),
    [
        (b"/deep/pub-a/../secret-x", True),
        (b"/deep/./x", True),
        (b"/deep/pub-a/%2E%2E/secret-x", True),
        (b"/deep/pub-a/%2e./secret-x", True),
        (b"/api/lobby/..", True),
        (b"/deep/.well/x", False),
        (b"/deep/a..b/x", False),
        (b"/deep/pub-a%2F..%2Fsecret-x", False),  # one segment, not a dot segment for the proxy
        (b"//host/x", False),
    ],
)
def test_dot_segments(raw_path: bytes, dotted: bool) -> None:
    assert has_dot_segments(raw_path) is dotted
    assert has_dot_segments(_http.raw_path(scope(raw_path.decode(), raw_path=raw_path))) is dotted
    # From the decoded path when raw_path is missing.
    assert has_dot_segments(_http.raw_path(scope(raw_path.decode()))) is dotted


def test_parse_grip_last() -> None:
    assert parse_grip_last('events-a; last-id=7,events-b; last-id="9"') == {"events-a": "7", "events-b": "9"}
    assert parse_grip_last("events-a;last-id=7, junk, ;last-id=3, events-c; other=1") == {"events-a": "7"}
    assert parse_grip_last(None) == {}


def test_grip_request_trusts_grip_last_only_when_signed() -> None:
    headers = [(b"grip-last", b"events-a; last-id=1"), (b"grip-last", b"other-b; last-id=2")]
    request = grip_request(headers, signed=True)
    assert request.trusted_next_link
    assert request.held_channels("events-") == ["a"]
    unsigned = grip_request(headers, signed=False)
    assert unsigned.next_link
    assert not unsigned.trusted_next_link
    # The marker alone (a client can put it in its URL) does not make a next-link request.
    assert not grip_request([], signed=True).next_link


def test_grip_last_is_read_as_utf8() -> None:
    # Pushpin echoes the channel names and ids of Grip-Channel, which are sent as UTF-8.
    headers = [(b"grip-last", "events-café; last-id=é-1".encode())]
    request = grip_request(headers, signed=True)
    assert request.grip_last == {"events-café": "é-1"}
    # A name that is not UTF-8 is skipped; an id that is not UTF-8 is kept, and matches nothing.
    headers = [(b"grip-last", b"events-\xff; last-id=1, events-b; last-id=\xe9-1")]
    request = grip_request(headers, signed=True)
    assert request.held_channels("events-") == ["b"]
    assert request.grip_last["events-b"] == "\udce9-1"


# --- what a next-link request may subscribe to ------------------------------


def endpoint_for_paths(stream: EventStream) -> Any:
    """Channel from the path after /deep/, as a router with a {rest:path} parameter gives it."""
    return stream(lambda scope: [scope["path"].removeprefix("/deep/")])


@pytest.mark.anyio
async def test_a_next_link_request_gets_the_channels_of_grip_last_not_of_its_path() -> None:
    allowed: list[list[str]] = []

    def authorize(scope: object, channels: list[str]) -> bool:
        allowed.append(channels)
        return all(channel.startswith("pub-") for channel in channels)

    stream = EventStream(grip=GRIP_URL, grip_reliable=True, authorize=authorize)
    app = endpoint_for_paths(stream)
    origin = f"{stream._epoch}-0"
    # What Pushpin sends for the next link of a hold on "pub-a/../secret-x", after it
    # normalised the dot segments of the path: /deep/secret-x, Grip-Last of the hold.
    headers = [*signed().items(), ("grip-last", f"events-pub-a/../secret-x; last-id={origin}")]
    async with open_stream(app, "/deep/secret-x?grip-next-link=1", headers=headers) as response:
        assert response.status == 200
        assert response.header("grip-channel") == f"events-pub-a/../secret-x; prev-id={origin}"
    # Grip-Last names channels of other apps (other prefixes) and ours: only ours are held.
    headers = [
        *signed().items(),
        ("grip-last", f"other-secret-x; last-id={origin}"),
        ("grip-last", f"events-pub-b; last-id={origin}"),
    ]
    async with open_stream(app, "/deep/secret-x?grip-next-link=1", headers=headers) as response:
        assert response.status == 200
        assert response.header("grip-channel") == f"events-pub-b; prev-id={origin}"
    headers = [*signed().items(), ("grip-last", f"other-secret-x; last-id={origin}")]
    async with open_stream(app, "/deep/secret-x?grip-next-link=1", headers=headers) as response:
        assert response.status == 400
        assert b"No channels" in await response.read()
    assert allowed == []  # the proxy's signed word needs no authorization
    # A client through the proxy asking for the same path is authorized as usual.
    async with open_stream(app, "/deep/secret-x", headers=signed()) as response:
        assert response.status == 403
    assert allowed == [["secret-x"]]


@pytest.mark.anyio
async def test_an_unsigned_next_link_request_is_authorized_on_its_path() -> None:
    # A proxy without verify key: Grip-Sig is not checked, so Grip-Last is not trusted.
    stream = EventStream(
        grip="http://proxy:5561/", grip_reliable=True, authorize=lambda scope, names: names == ["pub-a"]
    )
    app = endpoint_for_paths(stream)
    last = [("grip-sig", "anything"), ("grip-last", "events-pub-a; last-id=x")]
    async with open_stream(app, "/deep/secret-x?grip-next-link=1", headers=last) as response:
        assert response.status == 403
    async with open_stream(app, "/deep/pub-a?grip-next-link=1", headers=last) as response:
        assert response.status == 200
        assert response.header("grip-channel") == f"events-pub-a; prev-id={stream._epoch}-0"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "path", ["/deep/pub-a/../secret-x", "/deep/pub-a/%2E%2E/secret-x", "/api/lobby/../admin"]
)
async def test_dot_segment_paths_are_refused_through_the_proxy_in_reliable_mode(path: str) -> None:
    stream = EventStream(grip=GRIP_URL, grip_reliable=True, authorize=lambda scope, names: True)
    app = endpoint_for_paths(stream)
    async with open_stream(app, path, headers=signed()) as response:
        assert response.status == 400
        assert response.header("grip-hold") is None
        assert b"'..'" in await response.read()
    # Direct, or through the proxy without reliable mode (no next link), the path is the app's business.
    async with open_stream(app, path) as response:
        assert response.status == 200
    plain = EventStream(grip=GRIP_URL)
    async with open_stream(endpoint_for_paths(plain), path, headers=signed()) as response:
        assert response.status == 200
        assert response.header("grip-link") is None


@pytest.mark.anyio
async def test_the_hold_links_to_the_query_only() -> None:
    stream = EventStream(grip=GRIP_URL, grip_reliable=True)
    app = stream("x")
    async with open_stream(app, "//127.0.0.1:9/x?tags=a,b;c", headers=signed()) as response:
        assert response.status == 200
        assert response.header("grip-link") == "<?tags=a%2Cb%3Bc&grip-next-link=1>; rel=next"


# --- odd Last-Event-IDs through the proxy ------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["superscript", "query-superscript", "5000-digits", "arabic-digits", "huge"])
async def test_odd_last_event_ids_through_the_proxy_are_unknown_ids(kind: str) -> None:
    stream = EventStream(grip=GRIP_URL, grip_reliable=True)
    async with stream:
        epoch = stream._epoch
        url, headers = "/", dict(signed())
        if kind == "superscript":
            headers["last-event-id"] = f"{epoch}-²"
        elif kind == "query-superscript":
            url = f"/?lastEventId={epoch}-%C2%B2"
        elif kind == "5000-digits":
            headers["last-event-id"] = f"{epoch}-{'9' * 5000}"
        elif kind == "arabic-digits":
            url = f"/?lastEventId={epoch}-%D9%A3"  # '٣': a digit to str.isdigit() and int()
        else:
            headers["last-event-id"] = "x" * 100_000
        async with open_stream(stream("c"), url, headers=headers.items()) as response:
            assert response.status == 200
            assert (await response.receive_event()).event == "stream-open"
            assert (await response.receive_event()).event == "stream-reset"
        # The same ids in the proxy's Grip-Last of a next-link request.
        odd = headers.get("last-event-id", f"{epoch}-²")
        last = [*signed().items(), ("grip-last", f"events-c; last-id={odd}")]
        async with open_stream(stream("c"), "/?grip-next-link=1", headers=last) as response:
            assert response.status == 200
            assert await response.read() == b"event: stream-reset\ndata: \n\n"


@pytest.mark.parametrize("link", ["/a?x=1,2", "?a=<b>", "?a=1\r\nX: y", '?a="', "?a b", "", "?é"])
def test_hold_headers_refuse_a_link_that_is_not_percent_encoded(link: str) -> None:
    with pytest.raises(ValueError, match="percent-encoded"):
        hold_headers([("events-x", "e-0")], None, None, link)
