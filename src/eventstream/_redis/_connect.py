"""Connecting to a Redis-protocol engine through valkey-glide, and which failures are worth a retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .._exceptions import BrokerError
from ._url import RedisAddress

if TYPE_CHECKING:
    from glide import GlideClient, GlideClientConfiguration

__all__ = ["connect", "glide_configuration", "glide_module", "transient"]

_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "CLUSTERDOWN")


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
    return any(word in str(exc) for word in _TRANSIENT_REPLIES)


def glide_configuration(
    address: RedisAddress | None,
    base: GlideClientConfiguration | None,
    *,
    request_timeout: float,
    pattern: str | None,
    on_message: Callable[[Any, Any], None] | None = None,
) -> GlideClientConfiguration:
    """A client configuration from a parsed URL or from the user's own (one of them).

    ``pattern``: the pub/sub pattern the client subscribes to (the feed), or
    None (the command client); ``on_message`` gets each of its messages.
    ``request_timeout`` (seconds) applies unless ``base`` sets its own.
    """
    glide = glide_module()
    config_class = glide.GlideClientConfiguration
    timeout_ms = max(1, round(request_timeout * 1000))
    subscriptions = None
    if pattern is not None:
        subscriptions = config_class.PubSubSubscriptions(
            {config_class.PubSubChannelModes.Pattern: {pattern}}, on_message, None
        )
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
            pubsub_subscriptions=subscriptions,
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
        pubsub_subscriptions=subscriptions,
    )
    return result


async def connect(config: GlideClientConfiguration, *, engine: str, within: float) -> GlideClient:
    """A connected client.

    Raises:
        BrokerError: the engine could not be reached within ``within`` seconds,
            or refused the connection (wrong credentials); the message names
            ``engine`` and the reason.
    """
    glide = glide_module()
    try:
        with anyio.fail_after(within):
            client: GlideClient = await glide.GlideClient.create(config)
    except TimeoutError:
        raise BrokerError(engine, "connecting timed out") from None
    except glide.GlideError as exc:
        raise BrokerError(engine, f"cannot connect: {exc}".strip()) from exc
    return client
