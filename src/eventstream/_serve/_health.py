"""Liveness and readiness: whether this process serves, and whether it can take new streams.

Kubernetes (and most load balancers) probe two URLs: a *liveness* probe
restarts a process that fails it, a *readiness* probe stops sending it
traffic while it fails. :class:`HealthEndpoint` answers either, as an ASGI
app the application mounts (conventionally at ``/healthz`` and ``/readyz``),
with 200 or 503 and a JSON body for people.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio

from .._base import BrokerError
from .._core import LocalBroker
from ..types import Receive, Scope, Send
from ._http import send_plain

if TYPE_CHECKING:
    from .._stream import EventStream
    from ._endpoint import Serving

__all__ = ["HealthEndpoint", "Readiness", "answer_other", "check_readiness"]

_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


@dataclass(frozen=True)
class Readiness:
    """Whether an :class:`~eventstream.EventStream` can take new streams, and why (not)."""

    #: Every check passed.
    ready: bool
    #: Each check's answer: ``"ok"``, or what is wrong. ``stream``: ``"shutting down"``
    #: once the stream was closed (``aclose()``, a signal); ``broker`` (with a shared
    #: broker): ``"not running"`` or why its engine did not answer; ``grip`` (with GRIP):
    #: ``"not running"`` until the stream is entered.
    checks: Mapping[str, str]


async def check_readiness(stream: Serving, within: float) -> Readiness:
    """Check a stream's parts: not closed, its shared broker running with its engine answering, GRIP running.

    The engine is given ``within`` seconds to answer a ``PING``.
    Never raises for what it checks: a failure is an answer.
    """
    checks: dict[str, str] = {"stream": "shutting down" if stream.hub.closed else "ok"}
    broker = stream.broker
    if not isinstance(broker, LocalBroker):
        if not stream.lifecycle.broker_started:
            checks["broker"] = "not running: enter the stream (async with)"
        else:
            checks["broker"] = f"the engine did not answer within {within:g} s"
            with anyio.move_on_after(within):
                try:
                    await broker.ping()
                    checks["broker"] = "ok"
                except BrokerError as exc:
                    checks["broker"] = str(exc)
                except RuntimeError as exc:  # stopped meanwhile
                    checks["broker"] = f"not running: {exc}"
            stream.observed.engine_up = checks["broker"] == "ok"
    if stream.grip is not None:
        checks["grip"] = "ok" if stream.grip.running else "not running: enter the stream (async with)"
    return Readiness(ready=all(answer == "ok" for answer in checks.values()), checks=checks)


async def answer_other(scope: Scope, receive: Receive, send: Send) -> None:
    """What an HTTP-only app answers to the rest: ``lifespan`` (startup and shutdown complete), and
    ``websocket`` (closed, 1003); other scope types are left alone."""
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif kind == "websocket":
        await send({"type": "websocket.close", "code": 1003})


class HealthEndpoint:
    """An ASGI app that answers a Kubernetes probe for ``stream``: ``probe`` is ``"live"`` or ``"ready"``.

    ``"live"`` (mount it at ``/healthz``) answers 200 whenever the process
    answers at all, shutting down included (a liveness failure restarts the
    process; a closing stream is not a reason). ``"ready"`` (at ``/readyz``)
    answers 200 when :meth:`EventStream.readiness` is ready and 503 when not:
    a process that is shutting down answers 503, so a load balancer stops
    sending it new streams. The body is JSON, for people:
    ``{"status": "ready", "checks": {"stream": "ok", "broker": "ok"}}``.
    GET and HEAD; other methods get 405. It answers the ``lifespan`` protocol
    and closes ``websocket`` connections, like an endpoint.

    Raises:
        ValueError: ``probe`` is neither ``"live"`` nor ``"ready"``, or
            ``timeout`` (how long the broker's engine may take to answer) is
            not a positive number of seconds.
    """

    def __init__(self, stream: EventStream, probe: Literal["live", "ready"], *, timeout: float = 2.0) -> None:
        if probe not in ("live", "ready"):
            raise ValueError(f'probe must be "live" or "ready", not {probe!r}')
        if not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.stream: EventStream = stream
        self.probe: Literal["live", "ready"] = probe
        self.timeout: float = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await answer_other(scope, receive, send)
        else:
            method = scope.get("method", "GET")
            with contextlib.suppress(OSError):  # the client left before reading the answer
                if method not in ("GET", "HEAD"):
                    await send_plain(send, 405, "Method Not Allowed", [(b"allow", b"GET, HEAD")])
                    return
                status, answer = await self._answer()
                body = json.dumps(answer).encode("utf-8") + b"\n"
                headers = [*_HEADERS, (b"content-length", str(len(body)).encode("ascii"))]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _answer(self) -> tuple[int, dict[str, object]]:
        if self.probe == "live":
            return 200, {"status": "alive", "shutting_down": self.stream.closed}
        readiness = await self.stream.readiness(self.timeout)
        status = "ready" if readiness.ready else "not ready"
        return (200 if readiness.ready else 503), {"status": status, "checks": dict(readiness.checks)}
