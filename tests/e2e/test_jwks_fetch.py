"""JWTAuthorizer(jwks_url=...) against hostile JWKS endpoints: real HTTP servers on 127.0.0.1
written here (one that never answers, one that sends 50 MB, garbage, one that rotates keys).
A fetch is bounded in time and size, an unknown kid fetches again at a bounded rate, and a
request whose keys cannot be had gets 503."""

from __future__ import annotations

import gzip
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import eventstream._auth._jwks
from eventstream import EventStream
from eventstream._observe import RateLimitedLog
from eventstream.auth import JWKSFetcher, JWTAuthorizer, KeysUnavailable
from eventstream.testing import open_stream

from ..support.helpers import wait_until
from ..support.tokens import AUDIENCE, ISSUER, claims

pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.SocketStream, "Endpoint"], Awaitable[None]]
FIFTY_MB = 50 * 1024 * 1024


@dataclass
class Endpoint:
    """A JWKS endpoint's state: what it serves, and what it saw."""

    url: str = ""
    document: dict[str, object] = field(default_factory=dict)
    requests: int = 0
    sent: int = 0  # body bytes written


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def jwk(key: ec.EllipticCurvePrivateKey, kid: str) -> dict[str, object]:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": "ES256", "use": "sig"}


def token(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    return jwt.encode(claims(), key, algorithm="ES256", headers={"kid": kid})


async def _read_head(stream: anyio.abc.SocketStream) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        head += await stream.receive()
    return head


async def serve_document(stream: anyio.abc.SocketStream, endpoint: Endpoint) -> None:
    body = json.dumps(endpoint.document).encode()
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    await stream.send(head.encode() + body)
    endpoint.sent += len(body)


async def never_answer(stream: anyio.abc.SocketStream, endpoint: Endpoint) -> None:
    await anyio.sleep_forever()


async def fifty_mb_chunked(stream: anyio.abc.SocketStream, endpoint: Endpoint) -> None:
    await stream.send(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n")
    chunk = b"[" * 65536
    while endpoint.sent < FIFTY_MB:
        await stream.send(chunk)
        endpoint.sent += len(chunk)


async def fifty_mb_declared(stream: anyio.abc.SocketStream, endpoint: Endpoint) -> None:
    await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % FIFTY_MB)
    chunk = b"{" * 65536
    while endpoint.sent < FIFTY_MB:
        await stream.send(chunk)
        endpoint.sent += len(chunk)


def with_alg(key: ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict[str, object]:
    """A public key that names ``alg``: ``none``, or one PyJWT cannot build a key for."""
    return {**jwk(key, kid), "alg": alg}


def replying(status: str, body: bytes, extra: str = "") -> Handler:
    async def reply(stream: anyio.abc.SocketStream, endpoint: Endpoint) -> None:
        head = f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
        await stream.send(head.encode() + body)
        endpoint.sent += len(body)

    return reply


@asynccontextmanager
async def jwks_endpoint(
    handler: Handler, document: dict[str, object] | None = None
) -> AsyncIterator[Endpoint]:
    endpoint = Endpoint(document=document or {})
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    endpoint.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def connection(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await _read_head(stream)
                endpoint.requests += 1
                await handler(stream, endpoint)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError):
                pass  # the client hung up: what hostile servers see

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, connection)
        try:
            yield endpoint
        finally:
            tg.cancel_scope.cancel()


def authorizer(url: str, **limits: float) -> JWTAuthorizer:
    fetcher = JWKSFetcher(url, allow_http=True, **limits)  # type: ignore[arg-type]
    return JWTAuthorizer(jwks_url=fetcher, issuer=ISSUER, audience=AUDIENCE, channels=["user-{sub}"])


async def status(stream: EventStream, bearer: str) -> tuple[int, str | None]:
    headers = {"authorization": f"Bearer {bearer}"}
    async with open_stream(stream("user-alice"), "/user-alice", headers=headers) as response:
        return response.status, response.header("retry-after")


async def test_an_endpoint_that_never_answers_costs_one_timeout_per_interval() -> None:
    key = ec_key()
    async with jwks_endpoint(never_answer) as endpoint:
        auth = authorizer(endpoint.url, timeout=0.5, min_refresh_interval=60)
        stream = EventStream(authorize=auth, keep_alive_interval=None)
        with anyio.fail_after(5):
            assert await status(stream, token(key, "k1")) == (503, "5")
        with anyio.fail_after(1):  # the next ones do not wait for it again
            for _ in range(50):
                assert (await status(stream, token(key, f"k{uuid.uuid4()}")))[0] == 503
        assert auth.jwks_fetcher is not None
        assert auth.jwks_fetcher.fetches == 1
        assert endpoint.requests == 1


@pytest.mark.parametrize("handler", [fifty_mb_chunked, fifty_mb_declared])
async def test_a_50_mb_body_is_refused_while_read(handler: Handler) -> None:
    async with jwks_endpoint(handler) as endpoint:
        fetcher = JWKSFetcher(endpoint.url, allow_http=True, timeout=10, max_size=1 << 20)
        with anyio.fail_after(10), pytest.raises(KeysUnavailable):
            await fetcher.document()
        # It stopped reading at 1 MiB: the server could write what the sockets' buffers hold, no more.
        await wait_until(lambda: _true(endpoint.sent < FIFTY_MB), timeout=5)
        assert endpoint.sent < 16 * 1024 * 1024, endpoint.sent


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize(
    "handler",
    [
        replying("200 OK", b"\x00\xff not json {"),
        replying("200 OK", b"[1, 2, 3]"),
        replying("200 OK", b'{"keys": []}'),
        replying(
            "200 OK", b'{"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}'
        ),
        replying("200 OK", b"[" * 100_000 + b"]" * 100_000),  # deep nesting
        replying("200 OK", json.dumps({"keys": [with_alg(ec_key(), "k0", "none")]}).encode()),
        replying("500 Internal Server Error", b'{"keys": []}'),
        replying("302 Found", b"", "location: http://127.0.0.1:1/jwks.json\r\n"),
        replying("200 OK", gzip.compress(b'{"keys": []}'), "content-encoding: gzip\r\n"),
    ],
    ids=["binary", "array", "no-keys", "symmetric", "deep", "alg-none", "500", "redirect", "gzip"],
)
async def test_garbage_gets_503_and_bounded_log_lines(
    handler: Handler, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        eventstream._auth._jwks, "_FAILURES", RateLimitedLog()
    )  # a full burst, not the last test's
    key = ec_key()
    async with jwks_endpoint(handler) as endpoint:
        auth = authorizer(endpoint.url, timeout=2, min_refresh_interval=0.01)
        stream = EventStream(authorize=auth, keep_alive_interval=None)
        started = anyio.current_time()
        with caplog.at_level(logging.WARNING, logger="eventstream"), anyio.fail_after(20):
            for i in range(30):
                assert await status(stream, token(key, f"k{i}")) == (503, "5")
                await anyio.sleep(0.011)  # past min_refresh_interval: each request fetches again
        assert endpoint.requests >= 2
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        elapsed = anyio.current_time() - started
        assert 1 <= len(warnings) <= 10 + 1 + elapsed / 6  # rate-limited: a burst of 10, then one per 6 s
        assert "could not be fetched" in warnings[0].getMessage()


async def test_rotated_keys_are_fetched_for_a_new_kid_at_a_bounded_rate() -> None:
    first, second = ec_key(), ec_key()
    async with jwks_endpoint(serve_document, {"keys": [jwk(first, "k1")]}) as endpoint:
        auth = authorizer(endpoint.url, timeout=2, min_refresh_interval=0.3, ttl=3600)
        stream = EventStream(authorize=auth, keep_alive_interval=None)
        fetcher = auth.jwks_fetcher
        assert fetcher is not None
        with anyio.fail_after(20):
            assert await status(stream, token(first, "k1")) == (200, None)
            # A flood of unknown kids: refused, and at most one fetch per min_refresh_interval.
            started = anyio.current_time()
            for _ in range(300):
                assert (await status(stream, token(first, f"k{uuid.uuid4()}")))[0] == 401
            elapsed = anyio.current_time() - started
            assert fetcher.fetches <= 2 + elapsed / 0.3
            # The issuer rotates: the old key goes, a new one comes.
            endpoint.document = {"keys": [jwk(second, "k2")]}

            async def new_key_accepted() -> bool:
                return (await status(stream, token(second, "k2")))[0] == 200

            await wait_until(new_key_accepted, timeout=5)
            assert (await status(stream, token(first, "k1")))[0] == 401
            # The endpoint breaks: the keys fetched last stay in use.
            endpoint.document = {"keys": "garbage"}
            fetches = fetcher.fetches

            async def fetched_again() -> bool:
                await status(stream, token(second, f"k{uuid.uuid4()}"))
                return fetcher.fetches > fetches

            await wait_until(fetched_again, timeout=5)
            assert await status(stream, token(second, "k2")) == (200, None)


@pytest.mark.parametrize("alg", ["none", "HS256", "XX"])
async def test_a_key_with_an_unusable_alg_keeps_the_keys_fetched_before(
    alg: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A document that lists a key beside the good one with ``alg: none`` (PyJWT raises
    NotImplementedError for it), HMAC or an unknown name is a failed fetch, logged; not a 500."""
    monkeypatch.setattr(eventstream._auth._jwks, "_FAILURES", RateLimitedLog())
    good = ec_key()
    async with jwks_endpoint(serve_document, {"keys": [jwk(good, "k1")]}) as endpoint:
        auth = authorizer(endpoint.url, timeout=2, min_refresh_interval=0.01)
        stream = EventStream(authorize=auth, keep_alive_interval=None)
        fetcher = auth.jwks_fetcher
        assert fetcher is not None
        with caplog.at_level(logging.WARNING, logger="eventstream"), anyio.fail_after(20):
            assert await status(stream, token(good, "k1")) == (200, None)
            endpoint.document = {"keys": [jwk(good, "k1"), with_alg(ec_key(), "k2", alg)]}
            fetches = fetcher.fetches

            async def fetched_again() -> bool:
                await status(stream, token(good, f"k{uuid.uuid4()}"))  # an unknown kid fetches again
                return fetcher.fetches > fetches

            await wait_until(fetched_again, timeout=5)
            assert await status(stream, token(good, "k1")) == (200, None)
        assert any("could not be fetched" in record.getMessage() for record in caplog.records)


def test_the_url_must_be_https_unless_allowed() -> None:
    with pytest.raises(ValueError, match="https"):
        JWKSFetcher("http://login.example.com/jwks.json")
    with pytest.raises(ValueError, match="https"):
        JWTAuthorizer(jwks_url="ftp://login.example.com/jwks.json")
    with pytest.raises(ValueError, match="no host"):
        JWKSFetcher("https:///jwks.json")
    assert JWKSFetcher("http://127.0.0.1:1/jwks.json", allow_http=True).url.startswith("http://")
    with pytest.raises(ValueError, match="exactly one"):
        JWTAuthorizer(jwks_url="https://login.example.com/jwks.json", secret="x" * 32)
    with pytest.raises(ValueError, match="HS256"):
        JWTAuthorizer(jwks_url="https://login.example.com/jwks.json", algorithms=["HS256"])
    for name in ("ttl", "min_refresh_interval", "timeout"):
        with pytest.raises(ValueError, match=name):
            JWKSFetcher("https://login.example.com/jwks.json", **{name: 0})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size"):
        JWKSFetcher("https://login.example.com/jwks.json", max_size=0)
