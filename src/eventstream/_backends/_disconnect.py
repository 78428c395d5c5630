"""Noticing that a streaming response's client is gone, at the cost of one small task.

ASGI servers report a gone client as an ``http.disconnect`` message from
``receive()`` (some also raise ``OSError`` from ``send``), so a streaming
response must keep a ``receive()`` pending beside its writes. An anyio task
group with a watcher task costs about 4 KiB per idle connection (the group,
its cancel scopes, the task's handle, its done event, the wrapper coroutine);
:class:`DisconnectWatch` does the same with less:

- on asyncio (:class:`~._asyncio.AsyncioWatch`), the response's task enters one
  :class:`~._task_scope.TaskScope`
  (80 bytes, where anyio's cancel scope takes about 600), and the
  server's ``receive()`` coroutine runs as a bare ``asyncio`` task whose done
  callback reads the message (and starts the next ``receive()`` if it was not
  a disconnect): no wrapper coroutine, no task group;
- on trio (:class:`~._trio.TrioWatch`), a trio nursery with one watcher task (trio needs a nursery to run
  anything beside the response). When ``receive()`` is a trio memory
  channel's (hypercorn's), whose cancellation loses no message, the watcher
  also runs the keep-alive's deadline: it waits for the next message in a
  cancel scope whose deadline is the keep-alive's. Otherwise the keep-alive's
  timer task runs in the nursery too.

When the client is gone the scope is cancelled, unless the response is already
sending its last message (:attr:`Connection.completing`); the subscription is
also dropped at once if it was left behind ``send_timeout`` ago (a send the
server shields from cancellation then cannot hold it).
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import anyio.lowlevel

from ..types import Receive
from ._asyncio import AsyncioWatch
from ._trio import TrioWatch
from ._waiter import Waiter

__all__ = ["Connection", "DisconnectWatch", "Watch"]


class _Hub(Protocol):
    def drop_if_overdue(self, subscriber: Any) -> None:
        """Drop ``subscriber`` if it was left behind ``send_timeout`` ago."""


class Connection(Protocol):
    """What the watch needs of the response (``_connection.Connection``)."""

    @property
    def hub(self) -> _Hub: ...

    @property
    def subscriber(self) -> Any: ...

    #: The response's last message is being sent: a disconnect no longer cancels anything.
    completing: bool


class Watch(Protocol):
    """Between :meth:`start` and :meth:`stop`, the client's disconnect cancels :attr:`scope`.

    The scope is also the subscriber's (the hub moves its deadline to drop a
    client that takes nothing). Start it in the response's task, and stop it
    there with what the response raised: ``async with`` does that, and so does
    :meth:`Connection.run <eventstream._serve._connection.Connection.run>` by hand
    (``async with`` keeps its bound ``__aexit__`` alive, 64 bytes, for as long
    as the connection is open).

    Raises:
        Exception: from :meth:`stop`, what ``receive()`` raised other than
            ``OSError`` (the server's fault; ``OSError`` means the client is gone).

    Cancellation: cancelling the enclosing scope cancels the response as
    usual; the pending ``receive()`` is cancelled by :meth:`stop`.
    """

    #: An anyio (asyncio) or trio cancel scope: ``deadline``, ``cancel()``.
    scope: Any

    async def __aenter__(self) -> Watch: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        """:meth:`stop` with what the block raised."""

    async def start(self, keep_alive: bool = False) -> Any:
        """Start watching (what ``async with`` does on entering); returns :attr:`scope`.

        ``keep_alive``: :meth:`start_timer` will be called (on trio, the
        watcher then waits for each message in a cancel scope, for the timer).
        """

    def start_timer(self, waiter: Waiter) -> None:
        """Run ``waiter``'s deadlines beside the response until :meth:`stop`.

        On trio, in the watcher task when ``receive()`` may be cancelled
        safely, else in a timer task of the nursery; on asyncio, the event
        loop's clock runs them.
        """

    async def stop(self, exc: BaseException | None) -> bool:
        """Stop watching (what ``async with`` does on leaving, ``exc`` raised in the block).

        Returns whether ``exc`` is swallowed (the cancellation the watch caused).
        """


def DisconnectWatch(receive: Receive, connection: Connection) -> Watch:
    """The watch of the running event loop's backend, for one response (chosen once, here)."""
    if isinstance(anyio.lowlevel.current_token().native_token, asyncio.AbstractEventLoop):
        return AsyncioWatch(receive, connection)
    return TrioWatch(receive, connection)
