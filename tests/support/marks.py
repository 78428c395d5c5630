"""How end-to-end tests choose the event loop of their own process (the anyio backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import pytest

#: For a test whose own process runs nothing of the library, only an HTTP client (httpx, raw
#: sockets) against servers in other processes: the library runs there, under each server's
#: own event loop (hypercorn's trio worker is trio), so the client runs on asyncio alone
#: rather than running every server twice. Tests that run the library in the test process
#: (in-process servers, publishers, the EventSource client) run on both backends.
CLIENT_ON_ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])


def backend_of(kind: str) -> str:
    """The event loop a server kind runs the app on."""
    return "trio" if kind == "hypercorn-trio" else "asyncio"


def client_follows_server(
    fixture: str, kinds: Sequence[str], scope: Literal["session", "module"]
) -> pytest.MarkDecorator:
    """Run the test once per server kind (the ``scope``-scoped ``fixture`` started per kind), on
    that server's backend: for the library's own client (EventSource), so that it runs on both
    backends across the kinds while each server runs once."""
    return pytest.mark.parametrize(
        (fixture, "anyio_backend"),
        [(kind, backend_of(kind)) for kind in kinds],
        indirect=[fixture],
        ids=list(kinds),
        scope=scope,
    )
