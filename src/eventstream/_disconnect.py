"""Noticing that a streaming response's client is gone, at the cost of one small task.

ASGI servers report a gone client as an ``http.disconnect`` message from
``receive()`` (some also raise ``OSError`` from ``send``), so a streaming
response must keep a ``receive()`` pending beside its writes. An anyio task
group with a watcher task costs about 4 KiB per idle connection (the group,
its cancel scopes, the task's handle, its done event, the wrapper coroutine);
:class:`DisconnectWatch` does the same with less:

- on asyncio, the response's task enters one :class:`~._task_scope.TaskScope`
  (80 bytes, where anyio's cancel scope takes about 600), and the
  server's ``receive()`` coroutine runs as a bare ``asyncio`` task whose done
  callback reads the message (and starts the next ``receive()`` if it was not
  a disconnect): no wrapper coroutine, no task group;
- on trio, a trio nursery with one watcher task (trio needs a nursery to run
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
import math
import sys
from typing import Any, Protocol

import anyio
import anyio.lowlevel

from ._backends import Waiter, no_context
from ._backends._trio import _TrioWaiter
from ._hub import Hub, Subscriber
from ._task_scope import TaskScope
from .types import Receive

__all__ = ["DisconnectWatch"]


class Connection(Protocol):
    """What the watch needs of the response (``_connection.Connection``)."""

    hub: Hub
    subscriber: Subscriber
    #: The response's last message is being sent: a disconnect no longer cancels anything.
    completing: bool


class DisconnectWatch(TaskScope):
    """Between :meth:`start` and :meth:`stop`, the client's disconnect cancels :attr:`scope`.

    The scope is also the subscriber's (the hub moves its deadline to drop a
    client that takes nothing). Start it in the response's task, and stop it
    there with what the response raised: ``async with`` does that, and so does
    :meth:`Connection.run <eventstream._connection.Connection.run>` by hand
    (``async with`` keeps its bound ``__aexit__`` alive, 64 bytes, for as long
    as the connection is open).

    Raises:
        Exception: from :meth:`stop`, what ``receive()`` raised other than
            ``OSError`` (the server's fault; ``OSError`` means the client is gone).

    Cancellation: cancelling the enclosing scope cancels the response as
    usual; the pending ``receive()`` is cancelled by :meth:`stop`.
    """

    __slots__ = (
        "_connection",
        "_deadlines",
        "_error",
        "_nursery",
        "_pending",
        "_receive",
        "_receiving",
        "_safe",
        "_tasks",
        "scope",
    )

    def __init__(self, receive: Receive, connection: Connection) -> None:
        super().__init__()  # its own cancel scope, on asyncio (Python 3.11+): one object fewer
        self._receive = receive
        self._connection = connection
        self._pending: asyncio.Future[Any] | None = None
        self._nursery: Any = None  # trio's nursery manager
        self._tasks: Any = None  # and its nursery
        self._error: BaseException | None = None
        # On trio, with a keep-alive, and receive() a memory channel's: the watcher runs the timer.
        self._safe = False
        self._deadlines: _TrioWaiter | None = None  # the waiter whose deadlines it runs
        self._receiving: Any = None  # the cancel scope it waits for a message in
        self.scope: Any = None  # an anyio (asyncio) or trio cancel scope: deadline, cancel()

    async def __aenter__(self) -> DisconnectWatch:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        return await self.stop(exc)

    async def start(self, keep_alive: bool = False) -> Any:
        """Start watching (what ``async with`` does on entering); returns :attr:`scope`.

        ``keep_alive``: :meth:`start_timer` will be called (on trio, the
        watcher then waits for each message in a cancel scope, for the timer).
        """
        native = anyio.lowlevel.current_token().native_token
        if isinstance(native, asyncio.AbstractEventLoop):
            # Task.uncancel() came with Python 3.11; before, anyio's scope.
            if sys.version_info >= (3, 11):
                TaskScope.__enter__(self)
                self.scope = self
            else:
                self.scope = anyio.CancelScope().__enter__()
            self._listen(native)
        else:
            import trio  # only when running on trio

            self._nursery = manager = trio.open_nursery()
            self._tasks = nursery = await manager.__aenter__()
            self.scope = nursery.cancel_scope
            self._safe = keep_alive and _cancel_safe(self._receive, trio)
            nursery.start_soon(self._watch)
        return self.scope

    def start_timer(self, waiter: Waiter) -> None:
        """Run ``waiter``'s deadlines beside the response until :meth:`stop`.

        On trio, in the watcher task when ``receive()`` may be cancelled
        safely, else in a timer task of the nursery; on asyncio, the event
        loop's clock runs them.
        """
        if self._safe and isinstance(waiter, _TrioWaiter):
            waiter.run_deadlines_elsewhere()
            self._deadlines = waiter
            waiter.timer_scope(self._receiving)  # the watcher waits in it now, or will in its own
        else:
            waiter.start_timer(self._tasks)

    async def stop(self, exc: BaseException | None) -> bool:
        """Stop watching (what ``async with`` does on leaving, ``exc`` raised in the block).

        Returns whether ``exc`` is swallowed (the cancellation the watch caused).
        """
        kind, tb = (None, None) if exc is None else (type(exc), exc.__traceback__)
        scope, self.scope = self.scope, None  # no cycle through self
        self._tasks = self._deadlines = None
        if self._nursery is not None:
            scope.cancel()
            return bool(await self._nursery.__aexit__(kind, exc, tb))
        task, self._pending = self._pending, None
        if task is not None:
            task.cancel()
        if scope is self:
            swallowed = TaskScope.__exit__(self, kind, exc, tb)
        else:
            swallowed = bool(scope.__exit__(kind, exc, tb))
        if self._error is not None and (exc is None or swallowed):
            raise self._error
        return swallowed

    # -- asyncio: a bare task per receive() ---------------------------------

    def _listen(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            # ensure_future: a server's receive() may return a future or another awaitable.
            task: asyncio.Future[Any] = asyncio.ensure_future(self._receive(), loop=loop)
        except Exception as exc:  # receive() failed before returning an awaitable
            if not isinstance(exc, OSError):
                self._error = exc
            self._gone()
            return
        self._pending = task
        task.add_done_callback(self._received, context=no_context())

    def _received(self, task: asyncio.Future[Any]) -> None:
        # Read the outcome first, even when stopped: a failure is then never "unretrieved".
        error = None if task.cancelled() else task.exception()
        if task is not self._pending:
            return  # cancelled by stop()
        self._pending = None
        if task.cancelled():  # by someone else: the server tearing the connection down
            self._gone()
            return
        if error is None and task.result()["type"] != "http.disconnect":
            self._listen(task.get_loop())
            return
        if error is not None and not isinstance(error, OSError):
            self._error = error
        self._gone()

    # -- trio: a watcher task in a nursery -----------------------------------

    async def _watch(self) -> None:
        try:
            if self._safe:
                await self._watch_and_time()
            else:
                while (await self._receive())["type"] != "http.disconnect":
                    pass
        except OSError:
            pass
        finally:
            # Cancelled at a left-behind subscriber's deadline: free the subscription
            # even if the response is stuck in a send() the server shields.
            self._connection.hub.drop_if_overdue(self._connection.subscriber)
        if not self._connection.completing and self.scope is not None:  # None: the block is over
            self.scope.cancel()

    async def _watch_and_time(self) -> None:
        # Each wait for a message is bounded by the keep-alive's armed deadline;
        # cancelling a memory channel's receive() takes nothing from it.
        import trio

        while True:
            timer = self._deadlines
            with trio.CancelScope(deadline=math.inf if timer is None else timer.armed) as scope:
                self._receiving = scope
                if timer is not None:
                    timer.timer_scope(scope)
                message = await self._receive()
            self._receiving = None
            timer = self._deadlines  # perhaps given while this task waited
            if timer is not None:
                timer.timer_scope(None)
            if scope.cancelled_caught:
                if timer is not None:
                    timer.timer_fired()
            elif message["type"] == "http.disconnect":
                return

    def _gone(self) -> None:
        connection = self._connection
        connection.hub.drop_if_overdue(connection.subscriber)
        if (not connection.completing or self._error is not None) and self.scope is not None:
            self.scope.cancel()


def _cancel_safe(receive: Receive, trio: Any) -> bool:
    """Whether ``receive`` is a trio memory channel's ``receive`` (cancelled, it takes nothing)."""
    channel = getattr(receive, "__self__", None)
    return (
        isinstance(channel, trio.MemoryReceiveChannel)
        and getattr(receive, "__func__", None) is trio.MemoryReceiveChannel.receive
    )
