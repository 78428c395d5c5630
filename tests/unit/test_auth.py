"""eventstream.auth: tokens, grants and tickets, each attack a test; in-process streams for the answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import anyio
import jwt
import pytest

from eventstream import EventStream
from eventstream.auth import (
    ChannelPattern,
    Grant,
    JWTAuthorizer,
    MemoryTicketLedger,
    TokenVerifier,
    Unauthorized,
)
from eventstream.testing import open_stream

from ..support.tokens import (
    AUDIENCE,
    ISSUER,
    OTHER_SECRET,
    SECRET,
    TICKET_SECRET,
    claims,
    hs256,
    rs256,
    rsa_private_key,
    rsa_public_pem,
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT signed by hand (HS256 over any bytes as the key, or unsigned when ``key`` is None)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if key is None:
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def authorizer(**options: Any) -> JWTAuthorizer:
    defaults: dict[str, Any] = {
        "secret": SECRET,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "channels": ["user-{sub}"],
        "ticket_secret": TICKET_SECRET,
    }
    return JWTAuthorizer(**{**defaults, **options})


def scope(
    headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b"", path: str = "/events"
) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, "headers": headers or [], "query_string": query}


def bearer(token: str) -> dict[str, Any]:
    return scope([(b"authorization", f"Bearer {token}".encode())])


# -- verifying tokens: the attacks ---------------------------------------------------------


def test_a_valid_token_gives_its_claims_and_a_grant() -> None:
    auth = authorizer()
    verified = auth.verifier.verify(hs256(sub="bob"))
    assert verified["sub"] == "bob"
    grant = auth.grant(verified)
    assert grant.identity == "bob"
    assert grant.expires_at == pytest.approx(verified["exp"])


def test_alg_none_is_refused() -> None:
    unsigned = hand_made({"alg": "none", "typ": "JWT"}, claims(), None)
    for verifier in (authorizer().verifier, TokenVerifier(public_key=rsa_public_pem())):
        with pytest.raises(Unauthorized):
            verifier.verify(unsigned)
    with pytest.raises(ValueError, match="not allowed"):
        TokenVerifier(secret=SECRET, algorithms=["none"])
    with pytest.raises(ValueError, match="not allowed"):
        TokenVerifier(secret=SECRET, algorithms=["HS256", "None"])


def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    """The HS/RS confusion: an attacker signs HS256 with the (public) PEM as the HMAC secret."""
    pem = rsa_public_pem()
    forged = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private_key().public_key()))
    for verifier in (
        TokenVerifier(public_key=pem, issuer=ISSUER, audience=AUDIENCE),
        TokenVerifier(jwks={"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE),
    ):
        assert verifier.verify(rs256())["sub"] == "alice"  # the genuine token passes
        with pytest.raises(Unauthorized):
            verifier.verify(forged)
    # An HMAC algorithm cannot even be configured with a public key, nor the reverse.
    with pytest.raises(ValueError, match="cannot be used with a public key"):
        TokenVerifier(public_key=pem, algorithms=["RS256", "HS256"])
    with pytest.raises(ValueError, match="cannot be used with an HMAC secret"):
        TokenVerifier(secret=SECRET, algorithms=["RS256"])
    with pytest.raises(ValueError, match="public keys only"):
        TokenVerifier(jwks={"keys": [{"kty": "oct", "k": _b64(b"x" * 32)}]})


def test_an_expired_token_is_refused_beyond_the_leeway() -> None:
    verifier = authorizer(leeway=10).verifier
    assert verifier.verify(hs256(lifetime=-5))["sub"] == "alice"  # within the leeway
    with pytest.raises(Unauthorized, match="expired"):
        verifier.verify(hs256(lifetime=-11))


def test_a_token_not_yet_valid_is_refused_beyond_the_leeway() -> None:
    verifier = authorizer(leeway=10).verifier
    assert verifier.verify(hs256(nbf=time.time() + 5))["sub"] == "alice"
    with pytest.raises(Unauthorized, match="not yet valid"):
        verifier.verify(hs256(nbf=time.time() + 60))


def test_a_token_for_another_audience_is_refused() -> None:
    verifier = authorizer().verifier
    with pytest.raises(Unauthorized, match=r"(?i)audience"):
        verifier.verify(hs256(aud="another-app"))
    without = claims()
    del without["aud"]
    with pytest.raises(Unauthorized):
        verifier.verify(jwt.encode(without, SECRET, algorithm="HS256"))
    # An authorizer without an audience refuses tokens that name one: they are someone else's.
    with pytest.raises(Unauthorized):
        authorizer(audience=None).verifier.verify(hs256())


def test_a_token_from_another_issuer_is_refused() -> None:
    with pytest.raises(Unauthorized, match=r"(?i)issuer"):
        authorizer().verifier.verify(hs256(iss="https://evil.test"))


def test_a_token_signed_with_another_secret_is_refused() -> None:
    with pytest.raises(Unauthorized, match="Signature"):
        authorizer().verifier.verify(hs256(secret=OTHER_SECRET))


def test_a_token_without_exp_is_refused_unless_not_required() -> None:
    without = claims()
    del without["exp"]
    token = jwt.encode(without, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized, match="exp"):
        authorizer().verifier.verify(token)
    auth = authorizer(required=())
    assert auth.grant(auth.verifier.verify(token)).expires_at is None


def test_keys_are_checked_when_the_authorizer_is_made() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JWTAuthorizer(secret="short")
    with pytest.raises(ValueError, match="exactly one"):
        JWTAuthorizer(secret=SECRET, public_key=rsa_public_pem())
    with pytest.raises(ValueError, match="exactly one"):
        JWTAuthorizer()
    with pytest.raises(ValueError, match="PEM public key"):
        JWTAuthorizer(public_key=b"-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ValueError, match="ticket_secret"):
        JWTAuthorizer(secret=SECRET, ticket_secret="short")
    with pytest.raises(ValueError, match="cookie name"):
        JWTAuthorizer(secret=SECRET, cookie="a b")
    with pytest.raises(ValueError, match="grants every channel"):
        JWTAuthorizer(secret=SECRET, channels=["*"])
    with pytest.raises(ValueError, match="may only end"):
        JWTAuthorizer(secret=SECRET, channels=["room-*-x"])


def test_a_jwks_picks_the_key_by_kid() -> None:
    public = rsa_private_key().public_key()
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public)), "kid": "k1", "alg": "RS256"}
    other = {**jwk, "kid": "k2"}
    verifier = TokenVerifier(jwks=json.dumps({"keys": [jwk, other]}), issuer=ISSUER, audience=AUDIENCE)
    token = jwt.encode(claims(), rsa_private_key(), algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token)["sub"] == "alice"
    unknown = jwt.encode(claims(), rsa_private_key(), algorithm="RS256", headers={"kid": "nope"})
    with pytest.raises(Unauthorized, match="kid"):
        verifier.verify(unknown)
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_private_key()))
    with pytest.raises(ValueError, match="public keys only"):
        TokenVerifier(jwks={"keys": [private]})
    for alg in ("none", "HS256", "XX"):  # PyJWT raises NotImplementedError for "none"
        with pytest.raises(ValueError, match="does not load"):
            TokenVerifier(jwks={"keys": [jwk, {**jwk, "kid": "k3", "alg": alg}]})


# -- channels a token grants -------------------------------------------------------------


def test_templates_and_prefixes_grant_channels() -> None:
    auth = authorizer(channels=["user-{sub}", "room-*"])
    alice = {"sub": "alice"}
    assert auth.grants(alice, ["user-alice", "room-1", "room-lobby"])
    assert not auth.grants(alice, ["user-bob"])
    assert not auth.grants(alice, ["user-alice", "secret"])
    # The token's own claim adds patterns (the issuer's word).
    assert auth.grants({"sub": "alice", "channels": ["news", "team-*"]}, ["news", "team-a"])
    assert not auth.grants({"sub": "alice", "channels": ["news"]}, ["newsx"])


def test_a_token_granting_room_star_does_not_grant_roomx() -> None:
    auth = authorizer(channels=[])
    granting = {"sub": "alice", "channels": ["room-*"]}
    assert auth.grants(granting, ["room-1"])
    assert not auth.grants(granting, ["roomx"])
    assert not auth.grants(granting, ["room-"])  # the prefix alone is not a room
    assert not auth.grants(granting, ["room"])


@pytest.mark.parametrize(
    "sub",
    ["a/../b", "a,b", "*", "a;b", 'a"b', "a\nb", "a b", "..", ".a", "a..b", "{sub}", "", "x" * 129, "é"],
)
def test_template_injection_through_a_claim_grants_nothing(sub: str) -> None:
    """A claim's value fills a template only when it is a plain word: separators (',' ';' '"'
    and control characters, which channel names refuse, '/' and '..'), a '*' (which would make
    the pattern a prefix) and the rest grant nothing at all."""
    auth = authorizer(channels=["user-{sub}"])
    hostile = {"sub": sub}
    for asked in (f"user-{sub}", "user-a", "user-b", "user-", "user-x", "user-*"):
        assert not auth.grants(hostile, [asked]), (sub, asked)
    assert ChannelPattern("user-{sub}").fill(hostile) is None
    assert ChannelPattern("user-{sub}-*").fill(hostile) is None
    # Not a str nor an int: nothing either.
    for value in (None, True, 1.5, ["a"], {"a": 1}):
        assert ChannelPattern("user-{sub}").fill({"sub": value}) is None
    assert ChannelPattern("user-{sub}").fill({"sub": 42}) == "user-42"
    assert ChannelPattern("user-{sub}").fill({"sub": "a.b-c_d@e"}) == "user-a.b-c_d@e"


def test_a_claim_holding_the_separator_next_to_its_field_grants_nothing() -> None:
    """Claim values may hold '-' and '.': one holding the character that follows its field (or, between
    two fields, the one that separates them) could make another claim's channel, so it grants nothing."""
    # user-{sub}-* is bob's user-bob-x-inbox: the sub bob-x is not granted it (nor anything else).
    prefix = authorizer(channels=["user-{sub}-*"])
    assert prefix.grants({"sub": "bob"}, ["user-bob-inbox", "user-bob-x-inbox"])
    for channel in ("user-bob-x-inbox", "user-bob-x-", "user-bob-x-a"):
        assert not prefix.grants({"sub": "bob-x"}, [channel]), channel
    assert ChannelPattern("user-{sub}-*").fill({"sub": "bob-x"}) is None
    dotted = authorizer(channels=["user.{sub}.*"])
    assert dotted.grants({"sub": "bob"}, ["user.bob.x.inbox"])
    assert not dotted.grants({"sub": "bob.x"}, ["user.bob.x.inbox"])
    assert ChannelPattern("user.{sub}.*").fill({"sub": "bob.x"}) is None
    # {org}-{sub}: org a with sub b-c and org a-b with sub c would both be a-b-c.
    pair = authorizer(channels=["{org}-{sub}"])
    assert pair.grants({"org": "a", "sub": "b"}, ["a-b"])
    assert not pair.grants({"org": "a", "sub": "b-c"}, ["a-b-c"])
    assert not pair.grants({"org": "a-b", "sub": "c"}, ["a-b-c"])
    assert ChannelPattern("{org}.{sub}").fill({"org": "a", "sub": "b-c.d"}) is None
    assert ChannelPattern("{org}.{sub}").fill({"org": "a-b", "sub": "c-d"}) == "a-b.c-d"
    # A field that ends the pattern is followed by nothing: user-{sub} is as it was.
    exact = authorizer(channels=["user-{sub}"])
    assert exact.grants({"sub": "bob"}, ["user-bob"])
    assert not exact.grants({"sub": "bob"}, ["user-bob-x"])
    assert exact.grants({"sub": "bob-x"}, ["user-bob-x"])
    # A separator no claim can hold leaves every plain word its channels (UUIDs hold '-').
    colon = authorizer(channels=["user:{sub}:*"])
    assert colon.grants({"sub": "1b4e28ba-2fa1"}, ["user:1b4e28ba-2fa1:inbox"])
    assert not colon.grants({"sub": "1b4e28ba"}, ["user:1b4e28ba-2fa1:inbox"])


def test_a_channels_claim_of_the_wrong_shape_grants_nothing() -> None:
    auth = authorizer(channels=[])
    for value in (None, 7, {"room-1": True}, [["room-1"]], ["*"], ["a*b"], ["{"]):
        assert not auth.grants({"sub": "alice", "channels": value}, ["room-1"]), value
    assert auth.grants({"channels": "room-1"}, ["room-1"])  # one str is one pattern


def test_a_grant_is_a_validating_value() -> None:
    assert Grant() == Grant(expires_at=None, identity=None)
    for bad in (float("nan"), float("inf"), "soon", True):
        with pytest.raises(ValueError, match="expires_at"):
            Grant(expires_at=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Grant(identity=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        Grant(identity="")
    # A lone surrogate (JSON's "\ud800" decodes to one) cannot be encoded for the engine or an
    # event: a presence heartbeat carrying it once ended the app's broker, and the process.
    with pytest.raises(ValueError, match="lone surrogate"):
        Grant(identity="ann\ud800")
    assert Grant(identity="zoë").identity == "zoë"


def test_an_identity_claim_that_is_not_text_names_nobody() -> None:
    auth = authorizer()
    for sub in ("\ud800", "ann\udfff"):
        verified = auth.verifier.verify(hs256(sub=sub))
        assert verified["sub"] == sub
        assert auth.grant(verified).identity is None


# -- credentials in requests -------------------------------------------------------------


@pytest.mark.anyio
async def test_credentials_are_read_from_the_header_then_the_cookie_then_a_ticket() -> None:
    auth = authorizer(cookie="session")
    assert (await auth.authenticate(bearer(hs256(sub="bob"))))["sub"] == "bob"
    cookie = f"other=1; session={hs256(sub='carol')}; more=2".encode()
    assert (await auth.authenticate(scope([(b"cookie", cookie)])))["sub"] == "carol"
    # HTTP/2 sends one cookie header per cookie.
    split = scope([(b"cookie", b"other=1"), (b"cookie", f"session={hs256(sub='dave')}".encode())])
    assert (await auth.authenticate(split))["sub"] == "dave"
    ticket = auth.mint_ticket(bearer(hs256(sub="erin")))
    assert (await auth.authenticate(scope(query=f"ticket={ticket}".encode())))["sub"] == "erin"
    # The first credential present decides: a bad header is not rescued by a good cookie.
    both = scope([(b"authorization", b"Bearer nonsense"), (b"cookie", cookie)])
    with pytest.raises(Unauthorized):
        await auth.authenticate(both)
    # Another scheme's Authorization header is not ours: the cookie is read.
    basic = scope([(b"authorization", b"Basic YTpi"), (b"cookie", cookie)])
    assert (await auth.authenticate(basic))["sub"] == "carol"
    with pytest.raises(Unauthorized, match="no credentials"):
        await auth.authenticate(scope())


GARBAGE = [
    "",
    "garbage",
    "a.b.c",
    "a.b",
    "....",
    "eyJhbGciOiJIUzI1NiJ9.e30.",
    "eyJ" + "A" * 60,
    "\x00\x01\x02",
    "ÿþ",
    "x" * 9000,
    "v1.e30.AAAA",
    "v1." + "A" * 5000,
    "v1..",
    "v1.!!!.???",
    # A header nested 3,000 deep: its JSON decoding hits the recursion limit.
    _b64(b"[" * 3000 + b"]" * 3000)[:8000] + ".e30.AAAA",
]


@pytest.mark.anyio
@pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
async def test_garbage_in_every_place_a_credential_is_read_is_unauthorized(value: str) -> None:
    auth = authorizer(cookie="session")
    raw = value.encode("latin-1")
    for request in (
        scope([(b"authorization", b"Bearer " + raw)]),
        scope([(b"authorization", b"bearer    " + raw)]),
        scope([(b"cookie", b"session=" + raw)]),
        scope([(b"cookie", b'session="' + raw + b'"')]),
        scope(query=b"ticket=" + raw),
        scope(query=b"ticket=" + base64.b64encode(raw)),
    ):
        with pytest.raises(Unauthorized):
            await auth(request, ["user-alice"])
    with pytest.raises(Unauthorized):
        auth.mint_ticket(scope([(b"authorization", b"Bearer " + raw)]))


# -- tickets ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_replayed_ticket_is_refused() -> None:
    auth = authorizer()
    ticket = auth.mint_ticket(bearer(hs256()))
    request = scope(query=f"ticket={ticket}".encode())
    grant = await auth(request, ["user-alice"])
    assert isinstance(grant, Grant)
    assert grant.identity == "alice"
    with pytest.raises(Unauthorized, match="already used"):
        await auth(request, ["user-alice"])


@pytest.mark.anyio
async def test_a_ticket_minted_with_another_apps_secret_is_refused() -> None:
    other_app = authorizer(ticket_secret=OTHER_SECRET + "-ticket")
    ticket = other_app.mint_ticket(bearer(hs256()))
    with pytest.raises(Unauthorized, match="bad signature"):
        await authorizer()(scope(query=f"ticket={ticket}".encode()), ["user-alice"])


@pytest.mark.anyio
async def test_a_forged_ticket_is_refused() -> None:
    auth = authorizer()
    ticket = auth.mint_ticket(bearer(hs256()))
    version, payload, mac = ticket.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["c"]["sub"] = "mallory"
    body["c"]["channels"] = ["admin"]
    forged_payload = _b64(json.dumps(body).encode())
    for forged in (
        f"{version}.{forged_payload}.{mac}",  # claims changed, the mac kept
        f"{version}.{payload}.{mac[:-2]}",  # the mac cut short
        f"{version}.{payload}.",  # no mac
        f"v2.{payload}.{mac}",  # another version
        hs256(),  # a token is not a ticket
    ):
        with pytest.raises(Unauthorized):
            await auth(scope(query=f"ticket={forged}".encode()), ["admin"])
    # The genuine ticket still works once: forgeries did not use it up.
    assert await auth(scope(query=f"ticket={ticket}".encode()), ["user-alice"])


@pytest.mark.anyio
async def test_an_expired_ticket_is_refused_and_a_ticket_never_outlives_its_token() -> None:
    auth = authorizer(ticket_ttl=0.001)
    ticket = auth.mint_ticket(bearer(hs256()))
    await anyio.sleep(0.01)  # the ticket's lifetime is 1 ms: this wait outlasts it
    with pytest.raises(Unauthorized, match="expired"):
        await auth(scope(query=f"ticket={ticket}".encode()), ["user-alice"])
    # A token 20 s from its exp (within a 30 s leeway) mints a ticket that dies with it.
    late = authorizer(ticket_ttl=3600, leeway=30).mint_ticket(bearer(hs256(lifetime=-20)))
    with pytest.raises(Unauthorized, match="expired"):
        await auth(scope(query=f"ticket={late}".encode()), ["user-alice"])


def test_a_ticket_is_minted_from_a_token_only() -> None:
    auth = authorizer()
    ticket = auth.mint_ticket(bearer(hs256()))
    with pytest.raises(Unauthorized):
        auth.mint_ticket(scope(query=f"ticket={ticket}".encode()))
    with pytest.raises(RuntimeError, match="ticket_secret"):
        authorizer(ticket_secret=None).mint_ticket(bearer(hs256()))


@pytest.mark.anyio
async def test_the_memory_ledger_is_bounded_and_purges_expired_tickets() -> None:
    ledger = MemoryTicketLedger(max_tickets=2)
    now = time.time()
    assert await ledger.use("a", now + 60)
    assert not await ledger.use("a", now + 60)
    assert await ledger.use("b", now + 0.01)
    # Full, none expired: refused (never forgets a used ticket early).
    assert not await ledger.use("c", now + 60)
    await anyio.sleep(0.02)  # "b" expires 10 ms after it was used: this wait outlasts it
    assert await ledger.use("c", now + 60)
    assert len(ledger) == 2
    assert not await ledger.use("a", now + 60)
    with pytest.raises(ValueError, match="max_tickets"):
        MemoryTicketLedger(max_tickets=0)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"ticket_ttl": 0}, "ticket_ttl must be a positive number of seconds, not 0"),
        ({"ticket_ttl": True}, "ticket_ttl must be a positive number of seconds, not True"),
        ({"max_token_length": 0}, "max_token_length must be an int >= 1, not 0"),
        ({"max_token_length": 8.5}, "max_token_length must be an int >= 1, not 8.5"),
    ],
)
def test_an_authorizer_refuses_bad_limits_when_built(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        authorizer(**options)


def test_a_memory_ledger_refuses_a_size_that_is_not_a_count() -> None:
    with pytest.raises(ValueError, match="max_tickets must be an int >= 1, not True"):
        MemoryTicketLedger(max_tickets=True)


# -- the answers of an endpoint ------------------------------------------------------------


@pytest.mark.anyio
async def test_the_endpoint_answers_401_403_or_streams() -> None:
    stream = EventStream(authorize=authorizer())
    app = stream("{name}")
    unauthorized = [
        [],
        [("authorization", "Bearer junk")],
        [("authorization", f"Bearer {hs256(lifetime=-3600)}")],
        [("authorization", "Bearer " + "x" * 100_000)],
    ]
    alice = {"name": "user-alice"}
    for headers in unauthorized:
        async with open_stream(app, "/events/user-alice", headers=headers, path_params=alice) as r:
            assert r.status == 401
            assert r.header("www-authenticate") == "Bearer"
            assert (await r.read()) == b"Unauthorized"  # no detail
    token = [("authorization", f"Bearer {hs256()}")]
    async with open_stream(app, "/events/user-bob", headers=token, path_params={"name": "user-bob"}) as r:
        assert r.status == 403
        assert b"not authorized" in await r.read()
    async with open_stream(app, "/events/user-alice", headers=token, path_params={"name": "user-alice"}) as r:
        assert r.status == 200
        assert (await r.receive_event()).event == "stream-open"
    assert stream.subscriber_count() == 0


@pytest.mark.anyio
async def test_a_bool_authorizer_still_works_and_may_raise_unauthorized() -> None:
    def decide(scope: object, channels: list[str]) -> bool:
        if channels == ["nobody"]:
            raise Unauthorized("who are you")
        return channels == ["yes"]

    app = EventStream(authorize=decide)("{name}")
    for name, status in (("yes", 200), ("no", 403), ("nobody", 401)):
        async with open_stream(app, f"/{name}", path_params={"name": name}) as response:
            assert response.status == status, name


@pytest.mark.anyio
@pytest.mark.parametrize("keep_alive", [None, 0.05])
async def test_a_stream_ends_with_stream_expired_when_its_grant_expires(keep_alive: float | None) -> None:
    """The last event has no id (the client resumes from its last event), then the response ends."""
    expires_at = time.time() + 0.3

    def decide(scope: object, channels: list[str]) -> Grant:
        return Grant(expires_at=expires_at, identity="alice")

    stream = EventStream(authorize=decide, keep_alive_interval=keep_alive)
    app = stream("news")
    async with open_stream(app, "/news") as response:
        assert (await response.receive_event()).event == "stream-open"
        await stream.wait_subscribers(1, "news")
        await stream.publish_event("news", {"id": "1", "data": "one"})
        assert (await response.receive_event()).id == "1"
        with anyio.fail_after(5):
            while (event := await response.receive_event()).event == "keep-alive":
                pass
        assert time.time() >= expires_at
        assert event.event == "stream-expired"
        assert event.json() == {"reason": "token expired"}
        assert event.id is None
        body = await response.read()  # returns once the response is complete
        tail = body[body.rindex(b"event: stream-expired") :]
        assert tail.endswith(b"\n\n")
        assert tail.count(b"\n\n") == 1  # nothing follows it
    assert stream.subscriber_count() == 0


@pytest.mark.anyio
async def test_a_stream_that_keeps_receiving_still_ends_at_expiry() -> None:
    """Deliveries never reach the idle wait: the expiry is checked after each write too."""
    expires_at = time.time() + 0.3
    stream = EventStream(authorize=lambda scope, channels: Grant(expires_at=expires_at))
    app = stream("busy")
    async with open_stream(app, "/busy") as response, anyio.create_task_group() as tg:
        assert (await response.receive_event()).event == "stream-open"
        await stream.wait_subscribers(1, "busy")

        async def publish_forever() -> None:
            n = 0
            while True:
                n += 1
                await stream.publish_event("busy", {"data": n})
                await anyio.sleep(0.005)  # a steady trickle of events, not a wait for a condition

        tg.start_soon(publish_forever)
        with anyio.fail_after(5):
            while (await response.receive_event()).event != "stream-expired":
                pass
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_refused_credentials_log_at_debug_level_only(caplog: pytest.LogCaptureFixture) -> None:
    """A flood of bad tokens does not flood the log: why each was refused is a debug line."""
    auth = authorizer()
    caplog.set_level(logging.DEBUG, logger="eventstream")
    for value in GARBAGE:
        with pytest.raises(Unauthorized):
            await auth(bearer(value), ["user-alice"])
    assert not await auth(bearer(hs256()), ["user-bob"])
    assert caplog.records
    assert {record.levelno for record in caplog.records} == {logging.DEBUG}


def test_a_ticket_carries_only_the_claims_deciding_needs() -> None:
    """A ticket is readable in the URL: the token's other claims stay out of it."""
    auth = authorizer(channels=["user-{sub}", "org-{org}-*"])
    token = hs256(org="acme", email="alice@example.com", channels=["team-{team}"], team="red")
    payload = auth.mint_ticket(bearer(token)).split(".")[1]
    carried = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["c"]
    assert set(carried) == {"exp", "sub", "org", "channels", "team"}


def test_a_pattern_whose_fields_do_not_show_where_they_end_is_refused() -> None:
    # `user-{sub}*` would give the sub bob `user-bobby`; `{org}{sub}` one channel to two pairs.
    for text in ("user-{sub}*", "{sub}*", "{org}{sub}", "room-{org}{sub}-*"):
        with pytest.raises(ValueError, match="field"):
            ChannelPattern(text)
    auth = authorizer(channels=[])
    token_claims = {"sub": "bob", "channels": ["user-{sub}*", "user-{sub}-*"]}  # one is skipped
    assert not auth.grants(token_claims, ["user-bobby"])
    assert auth.grants(token_claims, ["user-bob-inbox"])
