"""eventstream.cors.CORS: preflights, headers on streams and other responses, origin patterns."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from eventstream import EventStream
from eventstream.cors import CORS
from eventstream.testing import open_stream
from eventstream.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

PAGE = "https://app.example.com"


async def publish_route(scope: Scope, receive: Receive, send: Send) -> None:
    """A stand-in for an app's publish route: 202, or whatever header it was asked to set."""
    headers = [(b"content-type", b"text/plain")]
    if scope.get("query_string") == b"own-cors":
        headers.append((b"access-control-allow-origin", b"https://own.example.com"))
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": b"Published\n"})


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.example.com")


def preflight(origin: str, method: str = "POST", headers: str = "content-type") -> dict[str, str]:
    return {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": headers,
    }


async def test_an_allowed_origins_preflight_is_answered_and_the_app_is_not_called() -> None:
    called = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope["method"])
        await publish_route(scope, receive, send)

    cors = CORS(app, allow_origins=[PAGE], allow_credentials=True)
    async with client(cors) as http:
        answer = await http.options(
            "/api/publish", headers=preflight(PAGE, headers="Content-Type, Authorization")
        )
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == PAGE
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert answer.headers["access-control-allow-methods"] == "GET, HEAD, POST"
        assert "Authorization" in answer.headers["access-control-allow-headers"]
        assert answer.headers["access-control-max-age"] == "600"
        assert answer.headers["vary"] == "Origin"
        for refused in (
            preflight("https://evil.example.net"),
            preflight(PAGE, method="DELETE"),
            preflight(PAGE, headers="x-secret"),
            preflight("null"),
        ):
            answer = await http.options("/api/publish", headers=refused)
            assert answer.status_code == 403, refused
            assert "access-control-allow-origin" not in answer.headers
        assert called == []
        # The actual request: the app answers, with the headers for an allowed origin only.
        answer = await http.post("/api/publish", headers={"origin": PAGE}, content=b"{}")
        assert answer.status_code == 202
        assert answer.headers["access-control-allow-origin"] == PAGE
        assert answer.headers["vary"] == "Origin"
        answer = await http.post(
            "/api/publish", headers={"origin": "https://evil.example.net"}, content=b"{}"
        )
        assert answer.status_code == 202  # the browser enforces CORS: the page cannot read it
        assert "access-control-allow-origin" not in answer.headers
        assert answer.headers["vary"] == "Origin"
        # An OPTIONS request that is not a preflight is the app's.
        assert (await http.options("/api/publish")).status_code == 202
    assert called == ["POST", "POST", "OPTIONS"]


async def test_a_stream_gets_the_headers_and_cookies_reach_the_authorizer() -> None:
    seen: list[str | None] = []

    def authorize(scope: Scope, channels: list[str]) -> bool:
        cookies = [value.decode() for key, value in scope["headers"] if key == b"cookie"]
        seen.append(cookies[0] if cookies else None)
        return bool(cookies)

    stream = EventStream(authorize=authorize)
    cors = CORS(stream("news"), allow_origins=["https://*.example.com"], allow_credentials=True)
    headers = {"origin": "https://chat.eu.example.com", "cookie": "session=1"}
    async with open_stream(cors, "/news", headers=headers) as response:
        assert response.status == 200
        assert response.header("access-control-allow-origin") == "https://chat.eu.example.com"
        assert response.header("access-control-allow-credentials") == "true"
        assert response.header("content-type") == "text/event-stream"
        assert (await response.receive_event()).event == "stream-open"
    async with open_stream(cors, "/news", headers={"origin": "https://chat.example.com"}) as response:
        assert (
            response.status == 403
        )  # no cookie: the endpoint's answer, with CORS headers so the page sees it
        assert response.header("access-control-allow-origin") == "https://chat.example.com"
    assert seen == ["session=1", None]


def test_origin_patterns() -> None:
    cors = CORS(publish_route, allow_origins=["https://*.example.com", "http://127.0.0.1:8000", PAGE])
    for origin in ("https://a.example.com", "https://a.b.example.com", "HTTPS://A.EXAMPLE.COM", PAGE):
        assert cors.allows(origin), origin
    assert cors.allows("http://127.0.0.1:8000")
    for origin in (
        "https://example.com",  # the wildcard needs a subdomain
        "http://a.example.com",  # another scheme
        "https://a.example.com:8443",  # another port
        "https://evil-example.com",
        "https://a.example.com.evil.net",
        "https://.example.com",
        "https://a..example.com",
        "https://a.example.com/",
        "http://127.0.0.1:8001",
        "null",
        "",
        "https://a_b.example.com",
    ):
        assert not cors.allows(origin), origin


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError, match="cannot go with allow_credentials"):
        CORS(publish_route, allow_origins=["*"], allow_credentials=True)
    for origin in ("null", "app.example.com", "https://app.example.com/path", "ftp://x.com", "https://*"):
        with pytest.raises(ValueError, match="is not an origin"):
            CORS(publish_route, allow_origins=[origin])
    with pytest.raises(TypeError, match="not a str"):
        CORS(publish_route, allow_origins=PAGE)
    with pytest.raises(ValueError, match="not a method or header name"):
        CORS(publish_route, allow_origins=[PAGE], allow_headers=["x\r\ny"])
    with pytest.raises(ValueError, match="max_age"):
        CORS(publish_route, allow_origins=[PAGE], max_age=-1)


async def test_any_origin_without_credentials_and_a_framework_that_set_its_own_header() -> None:
    cors = CORS(publish_route, allow_origins=["*"], expose_headers=["X-Count"])
    async with client(cors) as http:
        answer = await http.post("/p", headers={"origin": "https://anyone.test"})
        assert answer.headers["access-control-allow-origin"] == "*"
        assert answer.headers["access-control-expose-headers"] == "X-Count"
        assert "vary" not in answer.headers
        assert "access-control-allow-credentials" not in answer.headers
        answer = await http.options("/p", headers=preflight("https://anyone.test"))
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == "*"
        # A response that has its own Access-Control-Allow-Origin is left as it is.
        answer = await http.post("/p?own-cors", headers={"origin": "https://anyone.test"})
        assert answer.headers.get_list("access-control-allow-origin") == ["https://own.example.com"]
