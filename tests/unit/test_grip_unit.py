"""GRIP without a proxy: URL parsing, signatures, hold headers, and the publisher over httpx.MockTransport."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import time
from typing import Any

import anyio
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from eventstream import EventStream, GripPublisher, GripPublishError, ServerSentEvent, parse_grip_uri
from eventstream._grip._config import GripProxy, SigCheck, check_grip_sig
from eventstream._grip._hold import hold_headers
from eventstream.testing import open_stream

# --- parse_grip_uri -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:29100/realm/abc/?iss=realm&key=base64:c2VjcmV0IGtleQ==&foo=bar+baz",
            {"control_uri": "http://127.0.0.1:29100/realm/abc?foo=bar%2Bbaz", "control_iss": "realm",
             "key": b"secret key"},
        ),
        (
            "http://user:pass@127.0.0.1:5561?verify-iss=pushpin&verify-key=changeme",
            {"control_uri": "http://127.0.0.1:5561", "user": "user", "pass": "pass",
             "verify_iss": "pushpin", "verify_key": "changeme"},
        ),
        ("http://localhost:5561/", {"control_uri": "http://localhost:5561"}),
        ("http://localhost:5561//", {"control_uri": "http://localhost:5561/"}),
        ("https://example.com/path", {"control_uri": "https://example.com/path"}),
        ("http://localhost:5561/?key=&iss=", {"control_uri": "http://localhost:5561"}),
        ("http://localhost/?key=a+b%2Bc", {"control_uri": "http://localhost", "key": "a+b+c"}),
        (
            "https://api.fastly.com/service/SRV123?key=TOKEN&verify-iss=fastly:SRV123"
            "&verify-key=base64:c2VjcmV0",
            {"control_uri": "https://api.fastly.com/service/SRV123", "key": "TOKEN",
             "verify_iss": "fastly:SRV123", "verify_key": b"secret"},
        ),
        ("http://[::1]:5561/", {"control_uri": "http://[::1]:5561"}),
    ],
)  # fmt: skip
def test_parse_grip_uri(url: str, expected: dict[str, Any]) -> None:
    assert parse_grip_uri(url) == expected


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("localhost:5561", "http:// or https://"),
        ("ftp://host/", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://host:notaport/", "malformed GRIP URL"),
        ("http://host/?key=base64:@@@", "not valid base64"),
    ],
)
def test_malformed_grip_uri(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_grip_uri(url)
    with pytest.raises(ValueError, match=match):
        EventStream(grip=url)  # at construction, not at the first publish


BAD_PEM = "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"key": "k"}, "needs 'control_uri'"),
        ({"control_uri": "http://h", "bogus": 1}, "unknown GRIP config keys: bogus"),
        ([], "empty list"),
        ({"control_uri": "http://h", "verify_key": BAD_PEM}, "not a public key"),
    ],
)  # fmt: skip
def test_invalid_grip_configs(config: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EventStream(grip=config)


def test_publish_url_and_mapping_config() -> None:
    proxy = GripProxy.from_config({"control_uri": "http://h:1/realm/", "control_iss": "realm", "key": b"k"})
    assert proxy.publish_url == "http://h:1/realm/publish/"
    assert GripProxy.from_config("http://h:1").publish_url == "http://h:1/publish/"


# --- Grip-Sig -------------------------------------------------------------


def sign(claims: dict[str, Any], key: Any, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def future() -> int:
    return int(time.time()) + 3600


def test_short_hmac_key_validates_without_warning() -> None:
    # pytest runs with warnings as errors: a leaked InsecureKeyLengthWarning would fail here.
    proxy = GripProxy.from_config("http://h/?verify-iss=pushpin&verify-key=changeme")
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = sign({"iss": "pushpin", "exp": future()}, "changeme")
    assert check_grip_sig(token, [proxy]) is SigCheck.SIGNED


@pytest.mark.parametrize(
    ("claims", "key", "expected"),
    [
        ({"iss": "pushpin", "exp": "future"}, "a-long-enough-signing-key-0123456789", SigCheck.SIGNED),
        ({"iss": "pushpin", "exp": "past"}, "a-long-enough-signing-key-0123456789", SigCheck.FORBIDDEN),
        ({"iss": "pushpin"}, "a-long-enough-signing-key-0123456789", SigCheck.FORBIDDEN),
        ({"iss": "someone", "exp": "future"}, "a-long-enough-signing-key-0123456789", SigCheck.FORBIDDEN),
        ({"iss": "pushpin", "exp": "future"}, "the-wrong-signing-key-0123456789abcdef", SigCheck.FORBIDDEN),
    ],
)
def test_hmac_grip_sig(claims: dict[str, Any], key: str, expected: SigCheck) -> None:
    proxy = GripProxy.from_config(
        "http://h/?verify-iss=pushpin&verify-key=a-long-enough-signing-key-0123456789"
    )
    claims = {**claims}
    if "exp" in claims:
        claims["exp"] = future() if claims["exp"] == "future" else int(time.time()) - 10
    assert check_grip_sig(sign(claims, key), [proxy]) is expected


def test_grip_sig_rules() -> None:
    signed = GripProxy.from_config("http://a/?verify-key=a-long-enough-signing-key-0123456789")
    unsigned = GripProxy.from_config("http://b/")
    assert check_grip_sig(None, [signed]) is SigCheck.DIRECT
    assert check_grip_sig("anything", []) is SigCheck.DIRECT
    # A proxy without verify key: any Grip-Sig is trusted (the proxy strips client ones).
    assert check_grip_sig("forged", [unsigned]) is SigCheck.PROXIED
    assert check_grip_sig("forged", [signed, unsigned]) is SigCheck.PROXIED
    assert check_grip_sig("forged", [signed]) is SigCheck.FORBIDDEN
    # The algorithm is pinned: an unsigned ("none") token never passes.
    assert check_grip_sig(jwt.encode({"exp": future()}, "", algorithm="none"), [signed]) is SigCheck.FORBIDDEN
    # With iss and a shared publish key, the key verifies too.
    shared = GripProxy.from_config("http://c/?iss=realm&key=a-long-enough-signing-key-0123456789")
    assert check_grip_sig(sign({"exp": future()}, "a-long-enough-signing-key-0123456789"), [shared]) is (
        SigCheck.SIGNED
    )


@pytest.mark.parametrize("kind", ["ec-pem", "rsa-pem", "ec-jwk"])
def test_public_key_grip_sig(kind: str) -> None:
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind.startswith("rsa")
        else ec.generate_private_key(ec.SECP256R1())
    )
    algorithm = "RS256" if kind.startswith("rsa") else "ES256"
    if kind.endswith("pem"):
        verify_key: str = (
            private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
    else:
        verify_key = json.dumps(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    proxy = GripProxy.from_config(
        {"control_uri": "http://h", "verify_iss": "fastly:1", "verify_key": verify_key}
    )
    good = sign({"iss": "fastly:1", "exp": future()}, private, algorithm)
    assert check_grip_sig(good, [proxy]) is SigCheck.SIGNED
    # An HS256 token keyed with the public key's text must not pass (algorithm confusion).
    assert check_grip_sig(
        hs256_by_hand({"iss": "fastly:1", "exp": future()}, verify_key.encode()), [proxy]
    ) is (SigCheck.FORBIDDEN)
    # Nor one signed by another private key.
    other: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind.startswith("rsa")
        else ec.generate_private_key(ec.SECP256R1())
    )
    assert check_grip_sig(sign({"iss": "fastly:1", "exp": future()}, other, algorithm), [proxy]) is (
        SigCheck.FORBIDDEN
    )


def hs256_by_hand(claims: dict[str, Any], secret: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


# --- hold headers -----------------------------------------------------------


def test_hold_headers_keep_alive_cstring() -> None:
    headers = dict(hold_headers(["events-a", "events-b"], b"event: keep-alive\ndata: \n\n", 20))
    assert headers[b"grip-hold"] == b"stream"
    assert headers[b"grip-channel"] == b"events-a, events-b"
    assert headers[b"grip-keep-alive"] == b"event: keep-alive\\ndata: \\n\\n; format=cstring; timeout=20"


@pytest.mark.parametrize("data", [b": ping; with semicolon\n\n", b"data: \t tab\n\n", b" lead\n\n"])
def test_hold_headers_keep_alive_base64_when_cstring_is_unsafe(data: bytes) -> None:
    value = dict(hold_headers(["c"], data, 2.4))[b"grip-keep-alive"].decode()
    encoded, fmt, timeout = value.split("; ")
    assert fmt == "format=base64"
    assert timeout == "timeout=2"
    assert base64.b64decode(encoded) == data


def test_hold_headers_without_keep_alive() -> None:
    assert b"grip-keep-alive" not in dict(hold_headers(["c"], b"x", None))


# --- the publisher ----------------------------------------------------------


class Recorder:
    """A fake proxy control API: records requests and answers from a script."""

    def __init__(self, answers: list[int | Exception] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answers = answers or []
        self.gate: anyio.Event | None = None

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        text = "Published" if answer == 200 else "Invalid format: no formats specified"
        return httpx.Response(answer, text=text)

    def items(self) -> list[dict[str, Any]]:
        return [item for r in self.requests for item in json.loads(r.content)["items"]]


def publisher(recorder: Recorder, url: str = "http://proxy:5561", **options: Any) -> GripPublisher:
    options.setdefault("backoff", 0.001)
    options.setdefault("max_backoff", 0.002)
    return GripPublisher(url, transport=httpx.MockTransport(recorder), **options)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "check"),
    [
        ("http://proxy:5561/?iss=realm&key=a-long-enough-signing-key-0123456789", "jwt"),
        ("http://proxy:5561/?iss=realm&key=changeme", "jwt-short"),
        ("http://proxy:5561/?key=literal-token", "literal"),
        ("http://alice:s3cret@proxy:5561/", "basic"),
        ("http://proxy:5561/", "none"),
    ],
)
async def test_publish_auth_headers(url: str, check: str) -> None:
    recorder = Recorder()
    async with publisher(recorder, url) as grip:
        await grip.publish("events-a", b"data: 1\n\n")
    (request,) = recorder.requests
    assert request.url == "http://proxy:5561/publish/"
    assert request.headers["content-type"] == "application/json"
    auth = request.headers.get("authorization")
    if check.startswith("jwt"):
        assert auth is not None
        key = "changeme" if check == "jwt-short" else "a-long-enough-signing-key-0123456789"
        with pytest.warns(jwt.InsecureKeyLengthWarning) if check == "jwt-short" else contextlib.nullcontext():
            claims = jwt.decode(auth.removeprefix("Bearer "), key, algorithms=["HS256"], issuer="realm")
        assert 0 < claims["exp"] - time.time() <= 600
    elif check == "literal":
        assert auth == "Bearer literal-token"
    elif check == "basic":
        assert auth == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    else:
        assert auth is None
    (item,) = json.loads(request.content)["items"]
    assert item == {
        "channel": "events-a",
        "id": item["id"],  # unique per item, so the proxy drops a retried copy
        "formats": {"http-stream": {"content": "data: 1\n\n"}},
    }
    assert re.fullmatch(r"[0-9a-f]{12}-1", item["id"])


@pytest.mark.anyio
async def test_events_queued_during_a_request_go_out_in_one_batch() -> None:
    recorder = Recorder()
    recorder.gate = anyio.Event()
    async with publisher(recorder) as grip, anyio.create_task_group() as tg:
        tg.start_soon(grip.publish, "events-a", b"data: 0\n\n")
        with anyio.fail_after(5):
            while not recorder.requests:
                await anyio.wait_all_tasks_blocked()
        # Published one after the other while the first request is in flight:
        pending = [
            grip.submit("events-a" if i % 2 else "events-b", f"data: {i}\n\n".encode()) for i in range(1, 11)
        ]
        await anyio.wait_all_tasks_blocked()
        recorder.gate.set()
        for items in pending:
            await grip.wait_published(items)
    assert [len(json.loads(r.content)["items"]) for r in recorder.requests] == [1, 10]
    contents = [item["formats"]["http-stream"]["content"] for item in recorder.items()]
    assert contents == [f"data: {i}\n\n" for i in range(11)]
    (stats,) = grip.statistics()
    assert (stats.items_published, stats.requests, stats.retries, stats.failures) == (11, 2, 0, 0)


@pytest.mark.anyio
async def test_batching_off_sends_one_item_per_request() -> None:
    recorder = Recorder()
    async with publisher(recorder, max_batch=1) as grip, anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(grip.publish, "events-a", f"data: {i}\n\n".encode())
    assert [len(json.loads(r.content)["items"]) for r in recorder.requests] == [1] * 5


@pytest.mark.anyio
async def test_5xx_and_connection_errors_are_retried() -> None:
    recorder = Recorder([503, httpx.ConnectError("refused"), 200])
    async with publisher(recorder, retries=3) as grip:
        await grip.publish("events-a", b"data: 1\n\n")
    (stats,) = grip.statistics()
    assert (stats.items_published, stats.requests, stats.retries, stats.failures) == (1, 3, 2, 0)


@pytest.mark.anyio
async def test_retry_budget_exhausted_raises_with_proxy_and_reason() -> None:
    recorder = Recorder([httpx.ConnectError("All connection attempts failed")] * 3)
    async with publisher(recorder, retries=2) as grip:
        with pytest.raises(GripPublishError) as caught:
            await grip.publish("events-a", b"data: 1\n\n")
    error = caught.value
    assert error.proxy == "http://proxy:5561"
    assert error.status is None
    assert error.attempts == 3
    assert "All connection attempts failed" in str(error)
    assert "could not be reached" in str(error)
    assert not error.maybe_published  # nothing was sent
    assert len(recorder.requests) == 3


@pytest.mark.anyio
async def test_a_request_without_answer_may_have_been_published() -> None:
    recorder = Recorder([httpx.ConnectError("refused"), httpx.ReadTimeout("timed out"), 503])
    async with publisher(recorder, retries=2) as grip:
        with pytest.raises(GripPublishError) as caught:
            await grip.publish("events-a", b"data: 1\n\n")
    error = caught.value
    assert error.maybe_published  # the second request may have reached the proxy
    assert error.status == 503
    assert "answered 503 after 3 attempts (it may have published the event)" in str(error)
    # Every attempt carried the same item, with the same id.
    assert len({item["id"] for item in recorder.items()}) == 1


@pytest.mark.anyio
async def test_4xx_is_not_retried() -> None:
    recorder = Recorder([400])
    async with publisher(recorder, retries=5) as grip:
        with pytest.raises(GripPublishError, match="answered 400: Invalid format") as caught:
            await grip.publish("events-a", b"data: 1\n\n")
    assert caught.value.status == 400
    assert not caught.value.maybe_published
    assert len(recorder.requests) == 1
    assert grip.statistics()[0].failures == 1


@pytest.mark.anyio
async def test_failing_proxy_does_not_stop_the_others_or_local_subscribers() -> None:
    good, bad = Recorder(), Recorder([500] * 10)

    async def route(request: httpx.Request) -> httpx.Response:
        return await (good if request.url.host == "good" else bad)(request)

    grip = GripPublisher(
        ["http://bad:1", "http://good:1"], transport=httpx.MockTransport(route), retries=1, backoff=0.001,
        max_backoff=0.001,
    )  # fmt: skip
    stream = EventStream(grip=grip)
    async with stream:
        with anyio.fail_after(10):
            async with open_stream(stream("a")) as response:
                await stream.wait_subscribers(1, "a")
                with pytest.raises(GripPublishError, match="http://bad:1 answered 500") as caught:
                    await stream.publish_event("a", ServerSentEvent(event="message", data=1))
                assert len(caught.value.errors) == 1
                await response.receive_event()
                assert (await response.receive_event()).json() == 1
    assert [item["channel"] for item in good.items()] == ["events-a"]
    stats = stream.statistics().grip
    assert [(s.control_uri, s.items_published, s.failures) for s in stats] == [
        ("http://bad:1", 0, 1),
        ("http://good:1", 1, 0),
    ]


@pytest.mark.anyio
async def test_publishing_needs_the_stream_entered() -> None:
    stream = EventStream(grip="http://proxy:5561")
    with pytest.raises(RuntimeError, match="async with"):
        await stream.publish_event("a", {"data": 1, "id": "lost?"})
    assert stream.statistics().events_published == 0
    # Nothing was kept either: a client resuming from that id is told to reset.
    async with open_stream(stream("a"), headers={"last-event-id": "lost?"}) as response:
        assert (await response.receive_event()).event == "stream-open"
        assert (await response.receive_event()).event == "stream-reset"


@pytest.mark.anyio
async def test_proxied_request_gets_hold_instructions_and_forged_sig_403() -> None:
    key = "a-long-enough-signing-key-0123456789"
    stream = EventStream(
        grip=f"http://proxy:5561/?verify-iss=pushpin&verify-key={key}", keep_alive_interval=15
    )
    good = sign({"iss": "pushpin", "exp": future()}, key)
    async with open_stream(stream(["a", "b"]), headers={"grip-sig": good}) as response:
        assert response.status == 200
        assert response.header("grip-hold") == "stream"
        assert response.header("grip-channel") == "events-a, events-b"
        assert (
            response.header("grip-keep-alive")
            == "event: keep-alive\\ndata: \\n\\n; format=cstring; timeout=15"
        )
        assert response.header("content-type") == "text/event-stream"
        assert await response.read() == b"event: stream-open\ndata: \n\n"
    assert stream.subscriber_count() == 0
    for forged in ("forged", sign({"iss": "pushpin", "exp": int(time.time()) - 5}, key)):
        async with open_stream(stream("a"), headers={"grip-sig": forged}) as response:
            assert response.status == 403
            assert "Grip-Sig" in (await response.read()).decode()
    # Without Grip-Sig the same app streams directly.
    async with open_stream(stream("a")) as response:
        assert response.header("grip-hold") is None
        assert (await response.receive_event()).event == "stream-open"


@pytest.mark.anyio
async def test_channel_writer_and_publisher_publish_to_proxies() -> None:
    recorder = Recorder()
    stream = EventStream(grip=publisher(recorder), grip_prefix="app-")
    async with stream:
        async with stream.channel_writer("w") as writer:
            await writer.send(ServerSentEvent(event="tick", data=1, id="t1"))
        await stream.get_channel_publisher("p").publish_event({"text": "plain", "id": "p1"})
    assert [(item["channel"], item["formats"]["http-stream"]["content"]) for item in recorder.items()] == [
        ("app-w", "event: tick\ndata: 1\nid: t1\n\n"),
        ("app-p", "data: plain\nid: p1\n\n"),
    ]


@pytest.mark.anyio
async def test_authorize_applies_to_proxied_requests_but_not_to_signed_next_links() -> None:
    key = "a-long-enough-signing-key-0123456789"
    calls: list[list[str]] = []

    def authorize(scope: object, channels: list[str]) -> bool:
        calls.append(channels)
        return False

    stream = EventStream(
        grip=f"http://proxy:5561/?verify-iss=pushpin&verify-key={key}",
        grip_reliable=True,
        authorize=authorize,
    )
    signed = {"grip-sig": sign({"iss": "pushpin", "exp": future()}, key)}
    async with open_stream(stream("a"), headers=signed) as refused:
        assert refused.status == 403
        assert refused.header("grip-hold") is None
    # The proxy's own next-link request carries no client headers: its signature vouches for it.
    last = {**signed, "grip-last": f"events-a; last-id={stream._epoch}-0"}
    async with open_stream(stream("a"), "/?grip-next-link=1", headers=last) as next_link:
        assert next_link.status == 200
        assert next_link.header("grip-hold") == "stream"
        assert await next_link.read() == b""  # no stream-open: the stream is already open
    # A client's request through the proxy can name the next link, but cannot carry
    # Grip-Last (the proxy strips Grip-* headers): it is authorized like any request.
    async with open_stream(stream("a"), "/?grip-next-link=1", headers=signed) as crafted:
        assert crafted.status == 403
    # Without a valid signature it is refused for the signature already.
    async with open_stream(stream("a"), "/?grip-next-link=1", headers={"grip-sig": "forged"}) as forged:
        assert forged.status == 403
    assert calls == [["a"], ["a"]]
