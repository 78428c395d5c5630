"""A flood of bad tokens is no log flood: at most a bounded number of lines at WARNING or above."""

from __future__ import annotations

import logging
import uuid

import anyio
import jwt
import pytest

import eventstream._auth._jwks
from eventstream import EventStream
from eventstream._observe import RateLimitedLog
from eventstream.auth import JWKSFetcher, JWTAuthorizer
from eventstream.testing import open_stream
from tests.support.servers import free_port
from tests.support.tokens import AUDIENCE, ISSUER, OTHER_SECRET, SECRET, TICKET_SECRET, claims, hs256

pytestmark = pytest.mark.anyio


def bad_requests() -> list[tuple[str, dict[str, str]]]:
    none = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    bearer = [
        "not a token",
        hs256(secret=OTHER_SECRET),
        hs256(lifetime=-60),
        none,
        "x" * 9000,
        jwt.encode(claims(), OTHER_SECRET, algorithm="HS256", headers={"kid": "x" * 500}),
    ]
    requests = [("/user-alice", {"authorization": f"Bearer {token}"}) for token in bearer]
    requests.append(("/user-alice?ticket=v1.e30.AAAA", {}))
    requests.append(("/user-alice", {"cookie": "session=" + "y" * 100}))
    return requests


async def test_thousands_of_bad_tokens_log_nothing_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    auth = JWTAuthorizer(
        secret=SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        channels=["user-{sub}"],
        cookie="session",
        ticket_secret=TICKET_SECRET,
    )
    stream = EventStream(authorize=auth, keep_alive_interval=None)
    endpoint = stream("user-alice")
    requests = bad_requests()
    with caplog.at_level(logging.DEBUG), anyio.fail_after(60):
        for i in range(3000):
            url, headers = requests[i % len(requests)]
            async with open_stream(endpoint, url, headers=headers) as response:
                assert response.status == 401
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert loud == []
    # Why each was refused is there for whoever turns debug on, on the eventstream.auth logger.
    assert sum(record.name == "eventstream.auth" for record in caplog.records) == 3000


async def test_bad_tokens_against_an_unreachable_jwks_url_log_a_bounded_number_of_lines(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eventstream._auth._jwks, "_FAILURES", RateLimitedLog())  # a full burst
    # Nothing listens on the port: every fetch fails at once (connection refused), and each
    # token names another kid, so each asks for a fetch.
    fetcher = JWKSFetcher(
        f"http://127.0.0.1:{free_port()}/jwks.json", allow_http=True, min_refresh_interval=0.001
    )
    auth = JWTAuthorizer(jwks_url=fetcher, issuer=ISSUER, audience=AUDIENCE, channels=["user-{sub}"])
    stream = EventStream(authorize=auth, keep_alive_interval=None)
    endpoint = stream("user-alice")
    started = anyio.current_time()
    with caplog.at_level(logging.DEBUG), anyio.fail_after(60):
        for _ in range(200):
            token = jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": str(uuid.uuid4())})
            async with open_stream(endpoint, headers={"authorization": f"Bearer {token}"}) as response:
                assert response.status == 503
    assert fetcher.fetches > 10  # it did try again and again
    loud = [record for record in caplog.records if record.levelno >= logging.WARNING]
    elapsed = anyio.current_time() - started
    assert 1 <= len(loud) <= 10 + 1 + elapsed / 6  # a burst of 10, then one per 6 s
