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

import anyio.lowlevel

from ..types import Receive
from ._asyncio import AsyncioWatch
from ._interfaces import Connection, Watch
from ._trio import TrioWatch

__all__ = ["DisconnectWatch"]


def DisconnectWatch(receive: Receive, connection: Connection) -> Watch:
    """The watch of the running event loop's backend, for one response (chosen once, here)."""
    if isinstance(anyio.lowlevel.current_token().native_token, asyncio.AbstractEventLoop):
        return AsyncioWatch(receive, connection)
    return TrioWatch(receive, connection)
