"""Why a stream ended, counted under its template when its response is over; a slow client logged."""

from __future__ import annotations

from typing import Final

from .._observe import RateLimitedLog
from ..types import Scope
from ._connection import Connection

__all__ = ["SLOW_CLIENTS", "unsubscribe_counted"]

#: Slow clients dropped: one line each, at most 10 at once and one per 6 s beyond.
SLOW_CLIENTS: Final = RateLimitedLog()


def unsubscribe_counted(connection: Connection, scope: Scope) -> None:
    """Unsubscribe the connection's subscriber (its response is over), counting why it ended.

    A stream dropped as slow is logged (rate-limited), with its client's address from ``scope``.
    """
    hub = connection.hub
    subscriber = connection.subscriber
    reason: str | None = None
    if connection.failed:
        reason = "error"
    elif subscriber.closed:  # ended by the hub: a close, a drop, or the broker's reset
        reason = "shutdown" if hub.closed else "slow" if subscriber.stalled is not None else "reset"
    dropped = hub.dropped
    hub.unsubscribe(subscriber)
    if reason is None:  # the response ended by itself: its client left, or its deadline cut it
        reason = "slow" if hub.dropped != dropped else "client"
    connection.template.closed[reason] += 1
    if connection.span is not None:  # tracing
        connection.span.end(reason)
    if reason == "slow":
        client = _address(scope.get("client"))
        SLOW_CLIENTS.warning(
            "event stream of %s to %s ended: its client took nothing for %g s (slow consumer)",
            ",".join(subscriber.channels),
            client,
            hub.send_timeout,
            extra={
                "channels": subscriber.channels,
                "client": client,
                "template": connection.template.label,
                "reason": reason,
            },
        )


def _address(client: object) -> str:
    # ASGI's scope["client"]: (host, port), or None when the server does not know it.
    if isinstance(client, (tuple, list)) and len(client) == 2:
        return f"{client[0]}:{client[1]}"
    return "an unknown client"
