"""The Redis broker over TLS, against a real private redis-server that speaks TLS only, on asyncio and trio.

The engine's certificate is signed by a private CA made at test time (``tls_engine.ca_pem``).
glide takes a CA in a configuration (``TlsAdvancedConfiguration(root_pem_cacerts=...)``), not
in a ``rediss://`` URL: a URL trusts the system's roots, which ``SSL_CERT_FILE`` replaces (glide
reads the platform's roots through rustls-native-certs, which honours it). Several
``EventStream`` instances on one engine stand for several processes, as in ``test_broker.py``;
one test runs a real app process (uvicorn) on the ``rediss://`` URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import httpx
import pytest
from glide import (
    AdvancedGlideClientConfiguration,
    GlideClientConfiguration,
    NodeAddress,
    ServerCredentials,
    TlsAdvancedConfiguration,
)

from eventstream import BrokerError, EventStream, RedisBroker, ServerSentEvent
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import EventReader, open_events, wait_until
from ..support.redis_engine import RedisEngine, run_redis
from ..support.servers import Server, run_server

pytestmark = pytest.mark.anyio

USER, PASSWORD = "app", "tls-Pa55word-never-shown"
#: The app process's key prefix (the tests' channels differ).
APP_PREFIX = "tls-app:"


@pytest.fixture(scope="module")
def tls_user_engine() -> Iterator[RedisEngine]:
    """A TLS engine where only ``USER`` with ``PASSWORD`` may do anything (the default user needs another)."""
    with run_redis(tls=True) as engine:
        engine.command("ACL", "SETUSER", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all")
        engine.command("CONFIG", "SET", "requirepass", "default-user-Pa55")
        yield engine


def tls_configuration(
    engine: RedisEngine,
    *,
    tls: TlsAdvancedConfiguration | None = None,
    credentials: ServerCredentials | None = None,
    connection_timeout: int | None = None,
) -> GlideClientConfiguration:
    """The engine's address with TLS on; ``tls`` unset: trusting the engine's CA."""
    tls = tls or TlsAdvancedConfiguration(root_pem_cacerts=engine.ca_pem)
    return GlideClientConfiguration(
        [NodeAddress("127.0.0.1", engine.port)],
        use_tls=True,
        credentials=credentials,
        advanced_config=AdvancedGlideClientConfiguration(
            tls_config=tls, connection_timeout=connection_timeout
        ),
    )


def user_credentials(password: str = PASSWORD) -> ServerCredentials:
    return ServerCredentials(password=password, username=USER)


def make_stream(configuration: GlideClientConfiguration, prefix: str) -> EventStream:
    return EventStream(broker=RedisBroker(configuration=configuration, key_prefix=prefix))


async def receive_data(response: StreamResponse | EventReader, count: int) -> list[ServerSentEvent]:
    events: list[ServerSentEvent] = []
    while len(events) < count:
        if isinstance(response, EventReader):
            event = await response.next()
        else:
            event = await response.receive_event()
        assert event.event not in ("stream-reset", "stream-error"), event
        if event.event not in ("stream-open", "keep-alive"):
            events.append(event)
    return events


async def share_and_resume(a: EventStream, b: EventStream) -> None:
    """An event published on ``a`` reaches subscribers on ``a`` and on ``b`` (through the engine's
    feed) with one id; a client of ``b`` resumes after an id ``a`` gave."""
    async with a, b:
        async with open_stream(a("news")) as on_a, open_stream(b("news")) as on_b:
            await a.wait_subscribers(1, "news")
            await b.wait_subscribers(1, "news")
            for n in range(3):
                await a.publish_event("news", {"data": n})
            seen_a, seen_b = await receive_data(on_a, 3), await receive_data(on_b, 3)
        assert [(e.id, e.json()) for e in seen_b] == [(e.id, e.json()) for e in seen_a]
        assert [e.json() for e in seen_b] == [0, 1, 2]
        last_id = seen_a[0].id
        assert last_id is not None
        await a.publish_event("news", {"data": 3})
        async with open_stream(b("news"), headers={"last-event-id": last_id}) as response:
            replay = await receive_data(response, 3)
            await a.publish_event("news", {"data": 4})
            live = await receive_data(response, 1)
    assert [e.json() for e in replay] == [1, 2, 3]
    assert [e.id for e in replay[:2]] == [seen_a[1].id, seen_a[2].id]
    assert [e.json() for e in live] == [4]


async def refused_on_entering(broker: RedisBroker) -> BrokerError:
    """The error entering ``broker`` raises (bounded in time)."""
    with anyio.fail_after(15), pytest.raises(BrokerError) as info:
        async with EventStream(broker=broker):
            pass
    return info.value


async def test_streams_trusting_the_engines_ca_share_events_and_resume(
    tls_engine: RedisEngine, prefix: str
) -> None:
    configuration = tls_configuration(tls_engine)
    with anyio.fail_after(20):
        await share_and_resume(make_stream(configuration, prefix), make_stream(configuration, prefix))


async def test_credentials_over_tls(tls_user_engine: RedisEngine, prefix: str) -> None:
    configuration = tls_configuration(tls_user_engine, credentials=user_credentials())
    with anyio.fail_after(20):
        await share_and_resume(make_stream(configuration, prefix), make_stream(configuration, prefix))
    wrong = tls_configuration(tls_user_engine, credentials=user_credentials("wrong-Pa55"))
    error = await refused_on_entering(RedisBroker(configuration=wrong, key_prefix=prefix))
    assert f"127.0.0.1:{tls_user_engine.port}" in str(error)
    assert "WRONGPASS" in error.reason
    assert "wrong-Pa55" not in str(error)


async def test_a_client_that_does_not_trust_the_ca_is_refused_on_entering(
    tls_user_engine: RedisEngine, prefix: str
) -> None:
    # No root_pem_cacerts: the system's roots only, which never signed this engine's
    # certificate. Entering fails at once, saying so (not tried again until publish_timeout).
    configuration = GlideClientConfiguration(
        [NodeAddress("127.0.0.1", tls_user_engine.port)], use_tls=True, credentials=user_credentials()
    )
    broker = RedisBroker(
        configuration=configuration, key_prefix=prefix, request_timeout=0.5, publish_timeout=1
    )
    refusals = tls_user_engine.log().count("Error accepting a client connection")
    error = await refused_on_entering(broker)
    assert error.engine == f"rediss://127.0.0.1:{tls_user_engine.port}"
    assert error.reason.startswith("cannot connect: its TLS certificate is not trusted")
    assert "CERTIFICATE_VERIFY_FAILED" in error.reason
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    await _engine_logs_a_refusal(tls_user_engine, refusals)  # (handshake cut)


async def test_a_rediss_url_trusts_the_system_roots_only(tls_user_engine: RedisEngine, prefix: str) -> None:
    # A URL carries no CA: unless the system's roots (or SSL_CERT_FILE, see the next test)
    # hold the engine's private CA, its certificate is unknown to the client, which gives
    # up as above. (No test of this process connects to this engine trusting the system's
    # roots: once one did, glide was seen connecting later ones too, whatever
    # SSL_CERT_FILE then named; a resumed TLS session, it seems.)
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_user_engine.port}/0"
    broker = RedisBroker(url, key_prefix=prefix, request_timeout=0.5, publish_timeout=1)
    refusals = tls_user_engine.log().count("Error accepting a client connection")
    error = await refused_on_entering(broker)
    assert error.engine == f"rediss://127.0.0.1:{tls_user_engine.port}/0"
    assert error.reason.startswith("cannot connect: its TLS certificate is not trusted")
    assert PASSWORD not in str(error)
    assert PASSWORD not in repr(error)
    await _engine_logs_a_refusal(tls_user_engine, refusals)


async def _engine_logs_a_refusal(engine: RedisEngine, before: int) -> None:
    # The engine says what it refused in its log only (no counter of failed handshakes),
    # and writes it when it notices the connection cut, maybe after the client gave up.
    async def logged() -> bool:
        return engine.log().count("Error accepting a client connection") > before

    await wait_until(logged, timeout=10)


@pytest.fixture(scope="module")
def url_app(tls_user_engine: RedisEngine, log_dir: Path) -> Iterator[Server]:
    """The test app in its own process (uvicorn) on ``rediss://user:password@...``, trusting the engine's
    CA through ``SSL_CERT_FILE`` (set for that process only, as a deployment would)."""
    env = {
        "EVENTSTREAM_BROKER": f"rediss://{USER}:{PASSWORD}@127.0.0.1:{tls_user_engine.port}/0",
        "EVENTSTREAM_BROKER_PREFIX": APP_PREFIX,
        "EVENTSTREAM_KEEP_ALIVE": "0.5",
        "SSL_CERT_FILE": str(tls_user_engine.ca_file),
    }
    with run_server("uvicorn", env=env, log_dir=log_dir) as server:
        yield server


async def test_a_rediss_url_with_credentials_trusts_the_ca_of_ssl_cert_file(
    tls_user_engine: RedisEngine, url_app: Server, prefix: str
) -> None:
    channel = f"news-{prefix.rstrip(':')}"
    here = make_stream(tls_configuration(tls_user_engine, credentials=user_credentials()), APP_PREFIX)

    async def app_follows() -> bool:
        stats = (await client.get(f"{url_app.base_url}/stats")).json()
        return bool(stats["channels"].get(channel, 0))

    with anyio.fail_after(20):
        async with httpx.AsyncClient(timeout=10) as client, here:
            async with (
                open_events(client, f"{url_app.base_url}/events/{channel}") as on_app,
                open_stream(here(channel)) as on_here,
            ):
                await wait_until(app_follows)
                await here.wait_subscribers(1, channel)
                for n in range(2):
                    await here.publish_event(channel, {"data": n})
                seen_app, seen_here = await receive_data(on_app, 2), await receive_data(on_here, 2)
            assert [(e.id, e.json()) for e in seen_app] == [(e.id, e.json()) for e in seen_here]
            last_id = seen_here[0].id
            assert last_id is not None
            headers = {"last-event-id": last_id}
            async with open_events(client, f"{url_app.base_url}/events/{channel}", headers=headers) as on_app:
                replay = await receive_data(on_app, 1)
    assert [(e.id, e.json()) for e in replay] == [(seen_here[1].id, 1)]
    assert PASSWORD not in url_app.log()


async def test_insecure_tls_connects(tls_engine: RedisEngine, prefix: str) -> None:
    # use_insecure_tls=True checks no certificate: the connection is encrypted but anyone
    # on the path can stand in for the engine. That is a choice the user spells out in
    # the configuration (e.g. on a network they trust); the broker passes it on as given.
    configuration = tls_configuration(tls_engine, tls=TlsAdvancedConfiguration(use_insecure_tls=True))
    with anyio.fail_after(20):
        await share_and_resume(make_stream(configuration, prefix), make_stream(configuration, prefix))


async def test_entering_gives_up_within_publish_timeout_and_other_tasks_run_meanwhile(prefix: str) -> None:
    # An engine that takes the connection and never answers the TLS handshake; the
    # user gave glide 3 s to connect, the broker 0.3 s to reach the engine.
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    held: list[anyio.abc.SocketStream] = []

    async def hold(client: anyio.abc.SocketStream) -> None:
        held.append(client)  # (closed with the listener's task group)
        await anyio.sleep_forever()

    configuration = GlideClientConfiguration(
        [NodeAddress("127.0.0.1", port)],
        use_tls=True,
        advanced_config=AdvancedGlideClientConfiguration(connection_timeout=3000),
    )
    broker = RedisBroker(
        configuration=configuration, key_prefix=prefix, request_timeout=0.3, publish_timeout=0.3
    )
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.05)
            ticks += 1

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        tg.start_soon(tick)
        started = time.monotonic()
        error = await refused_on_entering(broker)
        elapsed = time.monotonic() - started
        tg.cancel_scope.cancel()
    for client in held:
        await client.aclose()
    assert held  # it did connect, and waited for the handshake
    assert ticks >= 3  # the loop ran other tasks meanwhile
    assert elapsed < 2.0  # 0.3 s and what it takes to hand the error back
    assert error.reason == "connecting timed out"


@pytest.mark.parametrize("given_as", ["pem", "path"])
async def test_a_client_certificate_is_presented_to_an_engine_that_asks_for_one(
    prefix: str, given_as: str
) -> None:
    # Mutual TLS: the engine refuses clients without a certificate its CA signed.
    # Both connections (glide's, and the feed's own) present the one configured,
    # given as PEM bytes or as file paths.
    with run_redis(tls=True, options=("--tls-auth-clients", "yes")) as engine:
        cert, key = engine.directory / "client.pem", engine.directory / "client.key"
        if given_as == "pem":
            mutual = TlsAdvancedConfiguration(
                root_pem_cacerts=engine.ca_pem,
                client_cert_pem=cert.read_bytes(),
                client_key_pem=key.read_bytes(),
            )
        else:
            mutual = TlsAdvancedConfiguration(
                root_pem_cacerts=engine.ca_pem, client_cert_path=str(cert), client_key_path=str(key)
            )
        configuration = tls_configuration(engine, tls=mutual)
        with anyio.fail_after(20):
            await share_and_resume(make_stream(configuration, prefix), make_stream(configuration, prefix))
        without = tls_configuration(engine)  # (trusts the CA, presents nothing)
        broker = RedisBroker(configuration=without, key_prefix=prefix, request_timeout=0.5, publish_timeout=1)
        error = await refused_on_entering(broker)
        assert error.reason.startswith("cannot connect")
