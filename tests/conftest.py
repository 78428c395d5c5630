from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from .support.redis_cluster import RedisCluster, run_redis_cluster
from .support.redis_engine import RedisEngine, run_redis
from .support.relay import Relay, relay
from .support.servers import SERVER_KINDS, Server, run_server

_prefixes = itertools.count()

# The tests stop servers with SIGINT, as Ctrl+C in a terminal does. A run started as a
# background job of a shell without job control inherits SIGINT ignored, and so would
# every server it starts: hypercorn's trio worker installs no SIGINT handler of its own
# (the library leaves an ignored signal alone), so it would never stop. A handler here
# makes the servers start with the default action instead (exec resets handled signals).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-logs")


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[Server]:
    """The test app under each real server, started once per session."""
    with run_server(request.param, env={"EVENTSTREAM_KEEP_ALIVE": "0.5"}, log_dir=log_dir) as server:
        yield server


@pytest.fixture(scope="module")
def engine() -> Iterator[RedisEngine]:
    """A private redis-server for the test module (its own port and directory), stopped by PID."""
    with run_redis() as engine:
        yield engine


@pytest.fixture(scope="module")
def tls_engine() -> Iterator[RedisEngine]:
    """A private redis-server for the test module that speaks TLS only (``rediss://``), its certificate
    signed by a private CA made for it (``tls_engine.ca_pem``); clients need no certificate."""
    with run_redis(tls=True) as engine:
        yield engine


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private Redis Cluster for the test module (3 primaries with a replica each, their own
    ports and folders), stopped by PID. A test that breaks it (a node left stopped) restores it."""
    with run_redis_cluster() as cluster:
        yield cluster


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own per test, so tests sharing the engine share no channel."""
    return f"t{next(_prefixes)}:"


@pytest.fixture
def via_relay(engine: RedisEngine) -> Iterator[Relay]:
    """A relay to the module's engine (tests/support/relay.py): it holds what it should
    forward where a test says so (an engine that accepts and never answers)."""
    with relay(engine.port) as instance:
        yield instance
