"""Connecting to a Redis-protocol engine through valkey-glide, what entering checks there (its eviction
policy, its epoch), and which failures are worth a retry."""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

import anyio

from .._base import BrokerError
from ._url import RedisAddress

if TYPE_CHECKING:
    from collections.abc import Callable

    from glide import GlideClient, GlideClientConfiguration, GlideClusterClientConfiguration

__all__ = [
    "check_eviction", "cluster_configuration", "connect", "engine_epoch", "glide_configuration",
    "glide_module", "misrouted", "transient",
]  # fmt: skip

logger = logging.getLogger("eventstream")

#: Replies that say "not now": an engine loading or busy, a replica promoted, a cluster's slot
#: moving or its state down (valkey-glide writes some as ``Moved: ...``, ``TryAgain: ...``).
_TRANSIENT_REPLIES = re.compile(
    r"\b(LOADING|BUSY|TRY ?AGAIN|MASTERDOWN|READONLY|CLUSTER ?DOWN|MOVED|ASK)\b|the cluster is down",
    re.IGNORECASE,
)


def glide_module() -> Any:
    """The ``glide`` package.

    Raises:
        ImportError: valkey-glide is not installed (the message says how to install it).
    """
    try:
        import glide
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the Redis broker needs valkey-glide: pip install 'eventstream[valkey]'") from None
    return glide


def transient(exc: Exception, glide: Any) -> bool:
    """Whether a failed request may succeed if sent again (connection lost, engine loading or busy)."""
    if isinstance(exc, glide.ConnectionError | glide.TimeoutError):
        return True
    if isinstance(exc, glide.ClosingError):
        return False
    return _TRANSIENT_REPLIES.search(str(exc)) is not None


#: What a cluster's node answers a call that names a key it does not serve (now): a script of
#: several slots' keys (passed as arguments) fails on it before it writes anything.
_MISROUTED = re.compile(r"non local key|same slot|\b(MOVED|ASK|TRY ?AGAIN|CROSS ?SLOT)\b", re.IGNORECASE)


def misrouted(reason: str) -> bool:
    """Whether the engine refused a call for its keys (see :data:`_MISROUTED`)."""
    return _MISROUTED.search(reason) is not None


def glide_configuration(
    address: RedisAddress | None,
    base: GlideClientConfiguration | None,
    *,
    request_timeout: float,
) -> GlideClientConfiguration:
    """A command client's configuration from a parsed URL or from the user's own (one of them).

    ``request_timeout`` (seconds) applies unless ``base`` sets its own.
    """
    glide = glide_module()
    config_class = glide.GlideClientConfiguration
    timeout_ms = max(1, round(request_timeout * 1000))
    if base is not None:
        config: GlideClientConfiguration = config_class(
            addresses=base.addresses,
            use_tls=base.use_tls,
            credentials=base.credentials,
            request_timeout=base.request_timeout or timeout_ms,
            reconnect_strategy=base.reconnect_strategy,
            database_id=base.database_id,
            client_name=base.client_name,
            advanced_config=base.advanced_config,
        )
        return config
    assert address is not None
    credentials = None
    if address.password is not None or address.username is not None:
        credentials = glide.ServerCredentials(password=address.password, username=address.username)
    result: GlideClientConfiguration = config_class(
        [glide.NodeAddress(address.host, address.port)],
        use_tls=address.tls,
        credentials=credentials,
        request_timeout=timeout_ms,
        database_id=address.database or None,
        reconnect_strategy=glide.BackoffStrategy(num_of_retries=6, factor=50, exponent_base=2),
    )
    return result


def cluster_configuration(
    address: RedisAddress,
    *,
    request_timeout: float,
    on_message: Callable[[Any, Any], None] | None = None,
) -> GlideClusterClientConfiguration:
    """A cluster client's configuration from a parsed ``redis+cluster://`` URL.

    ``on_message``: the client is the feed's (it takes sharded subscriptions, made again within
    0.1 s on the shard's new primary after a failover), and each message goes to it.
    """
    glide = glide_module()
    config_class = glide.GlideClusterClientConfiguration
    credentials = None
    if address.password is not None or address.username is not None:
        credentials = glide.ServerCredentials(password=address.password, username=address.username)
    subscriptions = None
    advanced = None
    if on_message is not None:
        subscriptions = config_class.PubSubSubscriptions(
            channels_and_patterns={}, callback=on_message, context=None
        )
        advanced = glide.AdvancedGlideClusterClientConfiguration(pubsub_reconciliation_interval=100)
    result: GlideClusterClientConfiguration = config_class(
        [glide.NodeAddress(host, port) for host, port in address.nodes],
        use_tls=address.tls,
        credentials=credentials,
        request_timeout=max(1, round(request_timeout * 1000)),
        reconnect_strategy=glide.BackoffStrategy(num_of_retries=6, factor=50, exponent_base=2),
        pubsub_subscriptions=subscriptions,
        advanced_config=advanced,
    )
    return result


async def connect(
    config: GlideClientConfiguration | GlideClusterClientConfiguration, *, engine: str, within: float
) -> GlideClient:
    """A connected client.

    Raises:
        BrokerError: the engine could not be reached within ``within`` seconds,
            or refused the connection (wrong credentials); the message names
            ``engine`` and the reason.
    """
    glide = glide_module()
    try:
        with anyio.fail_after(within):
            if isinstance(config, glide.GlideClusterClientConfiguration):
                # (a cluster client takes the same commands: typed as the one-engine client's)
                client: GlideClient = await glide.GlideClusterClient.create(config)
            else:
                client = await glide.GlideClient.create(config)
    except TimeoutError:
        raise BrokerError(engine, "connecting timed out") from None
    except glide.GlideError as exc:
        raise BrokerError(engine, f"cannot connect: {exc}".strip()) from exc
    return client


async def engine_epoch(client: GlideClient, *, state: str, engine: str) -> str:
    """The engine's epoch (the prefix of every id it assigns), set now if it has none (new, or it
    lost its data). ``state``: the broker's state hash, which holds it.

    Raises:
        BrokerError: the engine failed the request (the message names ``engine`` and the reason).
    """
    glide = glide_module()
    try:
        await client.custom_command(["HSETNX", state, "epoch", os.urandom(4).hex()])
        epoch = await client.custom_command(["HGET", state, "epoch"])
    except glide.GlideError as exc:
        raise BrokerError(engine, f"{type(exc).__name__}: {exc}") from exc
    return bytes(epoch).decode("ascii")


async def check_eviction(client: GlideClient, *, engine: str, allow_eviction: bool) -> None:
    """Refuse (or, with ``allow_eviction``, log an error about) an engine that may evict keys.

    An engine that evicts keys may drop the broker's (its state, a history, a
    kept reply). Where CONFIG is refused (managed engines), it logs what to check.

    Raises:
        BrokerError: the engine's ``maxmemory-policy`` is not ``noeviction`` and
            ``allow_eviction`` is false, or the engine cannot be reached.
    """
    glide = glide_module()
    try:
        if isinstance(client, glide.GlideClusterClient):  # every primary must keep keys
            replies = await client.custom_command(["CONFIG", "GET", "maxmemory-policy"], glide.AllPrimaries())
            # ({node: reply}: the first node's that evicts, if any)
            nodes = list(replies.values())
            reply = next((one for one in nodes if _policy(one) != "noeviction"), nodes[0])
        else:
            reply = await client.custom_command(["CONFIG", "GET", "maxmemory-policy"])
    except glide.GlideError as exc:
        if transient(exc, glide):
            raise BrokerError(engine, f"{type(exc).__name__}: {exc}") from exc
        logger.warning(
            "broker engine %s does not tell its maxmemory-policy (%s): make sure it is noeviction, "
            "or an evicted key of the broker's ends streams or starts a new epoch",
            engine, exc,
        )  # fmt: skip
        return
    policy = _policy(reply)
    if policy == "noeviction":
        return
    problem = (
        f"its maxmemory-policy is {policy}: under memory pressure it may evict the broker's keys "
        "(a channel's history, the state that numbers events, a kept reply)"
    )
    if not allow_eviction:
        raise BrokerError(
            engine,
            f"{problem}; set maxmemory-policy noeviction (or use an engine of its own for the broker), "
            "or pass allow_eviction=True to run anyway",
        )
    logger.error(
        "broker engine %s: %s; running anyway (allow_eviction=True): an evicted history ends "
        "the streams behind it, an evicted state starts a new epoch",
        engine, problem,
    )  # fmt: skip


def _policy(reply: Any) -> str:
    # CONFIG GET's answer: {name: value} (RESP3) or [name, value] (RESP2).
    values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
    return bytes(values[0]).decode("ascii", "replace") if values else "noeviction"
