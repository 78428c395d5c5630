"""asyncio: the waiter (its own future, its deadlines on one clock per event loop) and loop callbacks.

See :mod:`._waiter` for what a waiter promises. On asyncio the deadline is an
entry on one clock per event loop (one loop timer for all waiters), re-armed
lazily: moving the deadline later (after every delivery) costs nothing, and
the entry comes due at most once per keep-alive interval while idle.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import math
import sys
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import anyio

from ._task_scope import TaskScope

if TYPE_CHECKING:
    from ..types import Receive
    from ._interfaces import Connection, Waiter

__all__ = ["AsyncioWatch", "loop_callbacks", "no_context", "waiter_factory"]

_local = threading.local()


def no_context() -> contextvars.Context:
    """An empty context for loop callbacks that read no context variable (this thread's).

    ``call_at`` and ``add_done_callback`` otherwise copy the caller's context:
    64 bytes per idle connection for each. One per thread: a context runs one
    callback at a time, and each event loop runs in one thread.
    """
    context: contextvars.Context | None = getattr(_local, "context", None)
    if context is None:
        context = _local.context = contextvars.Context()
    return context


class _Clock:
    """One loop timer for every asyncio waiter's deadline of one event loop.

    A loop timer per idle connection costs ~190 bytes (the handle, its bound
    callback, a heap slot); an entry here costs ~64 (a 2-tuple and a heap
    slot). The timer is armed for the earliest entry. An entry whose waiter
    re-armed or closed meanwhile is stale: skipped when it comes due, and
    dropped in a sweep once stale entries outnumber live ones.
    """

    __slots__ = ("_heap", "_loop", "_next", "_stale", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, _AsyncioWaiter]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._next = math.inf  # when the timer fires
        self._stale = 0

    def arm(self, waiter: _AsyncioWaiter, when: float) -> None:
        heapq.heappush(self._heap, (when, waiter))
        if when < self._next:
            self._set_timer(when)

    def _set_timer(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._next = when
        self._timer = self._loop.call_at(when, self._fire, context=no_context())

    def disarm(self) -> None:
        """One entry went stale (its waiter re-armed earlier, or closed)."""
        self._stale += 1
        heap = self._heap
        if self._stale > 64 and self._stale * 2 > len(heap):
            self._heap = [entry for entry in heap if entry[1]._armed == entry[0]]
            heapq.heapify(self._heap)
            self._stale = 0

    def _fire(self) -> None:
        # The loop runs a timer once it is due within the clock's resolution: what
        # the timer was armed for is due, whatever time() says.
        due = max(self._next, self._loop.time())
        self._timer, self._next = None, math.inf
        heap = self._heap
        while heap and heap[0][0] <= due:
            when, waiter = heapq.heappop(heap)
            if waiter._armed == when:
                waiter._expire()
            elif self._stale:
                self._stale -= 1
        # Entries re-armed above may have set the timer: for them, not for the earliest.
        if heap and heap[0][0] < self._next:
            self._set_timer(heap[0][0])


# The states of an asyncio wait.
_IDLE, _PENDING, _WOKEN, _EXPIRED, _CANCELLED = range(5)


class _AsyncioWaiter:
    """The waiter of one asyncio task; it is also the future that task awaits.

    A new future per wait lives as long as the connection is idle, with the
    iterator ``await`` wraps it in: both are objects the garbage collector
    tracks, and a process holding many idle connections then pays for them in
    every collection. asyncio's tasks wait on any object that follows the
    future protocol (``_asyncio_future_blocking``, ``_loop``,
    ``add_done_callback``, ``result``, ``cancel``), so the waiter plays that
    part itself, once per wait: only the task's wake-up callback is new.
    """

    __slots__ = (
        "_armed",
        "_asyncio_future_blocking",
        "_callback",
        "_clock",
        "_context",
        "_deadline",
        "_loop",
        "_message",
        "_state",
    )

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock
        self._loop = clock._loop
        self._state = _IDLE
        self._asyncio_future_blocking = False
        self._callback: Callable[..., object] | None = None
        self._context: contextvars.Context | None = None
        self._message: Any = None  # the cancellation's message
        self._armed = math.inf  # when the clock's entry for it comes due
        self._deadline = math.inf  # when the current wait ends

    def __lt__(self, other: _AsyncioWaiter) -> bool:
        return id(self) < id(other)  # orders entries of equal deadlines on the clock's heap

    def time(self) -> float:
        return self._loop.time()

    def wake(self) -> None:
        if self._state == _PENDING:
            self._resolve(_WOKEN)

    def wait(self, deadline: float) -> _AsyncioWaiter:
        # A deadline later than the armed one costs nothing now: the entry
        # re-arms when it comes due.
        self._state = _PENDING
        self._deadline = deadline
        if deadline < self._armed:
            if self._armed != math.inf:
                self._clock.disarm()
            self._armed = deadline
            if deadline != math.inf:
                self._clock.arm(self, deadline)
        return self

    def _expire(self) -> None:
        # The clock's entry came due.
        armed, self._armed = self._armed, math.inf
        if self._state != _PENDING:
            return  # not waiting: the next wait arms it again
        if self._deadline <= armed:
            self._resolve(_EXPIRED)
        elif self._deadline != math.inf:  # the deadline moved since the entry was armed
            self._armed = self._deadline
            self._clock.arm(self, self._deadline)

    def _resolve(self, state: int) -> None:
        self._state = state
        callback, self._callback = self._callback, None
        if callback is not None:
            context, self._context = self._context, None
            self._loop.call_soon(callback, self, context=context)

    # -- what asyncio's Task (and anyio, of a task's awaited future) asks of it -----

    def __await__(self) -> Generator[Any, None, bool]:
        return self  # type: ignore[return-value]  # an iterator: what ``await`` needs of it

    def __iter__(self) -> _AsyncioWaiter:
        return self

    def __next__(self) -> _AsyncioWaiter:
        if self._state == _PENDING and not self._asyncio_future_blocking:
            self._asyncio_future_blocking = True  # the task sets it back when it parks
            return self
        raise StopIteration(self.result())

    def add_done_callback(
        self, callback: Callable[..., object], *, context: contextvars.Context | None = None
    ) -> None:
        if self._state == _PENDING:
            self._callback, self._context = callback, context
        else:
            self._loop.call_soon(callback, self, context=context)

    def done(self) -> bool:  # anyio's wait_all_tasks_blocked() asks it
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def cancel(self, msg: Any = None) -> bool:
        if self._state != _PENDING:
            return False
        self._message = msg
        self._resolve(_CANCELLED)
        return True

    def result(self) -> bool:
        state = self._state
        if state == _WOKEN:
            return True
        if state == _EXPIRED:
            return False
        if state == _CANCELLED:
            raise asyncio.CancelledError(self._message)
        raise asyncio.InvalidStateError("the wait has not ended")

    def start_timer(self, nursery: Any) -> None:
        pass  # the loop's clock runs the deadlines

    def close(self) -> None:
        if self._armed != math.inf:
            self._armed = math.inf
            self._clock.disarm()
        self.wake()


def waiter_factory(loop: asyncio.AbstractEventLoop) -> Callable[[], _AsyncioWaiter]:
    """What makes waiters for ``loop``, the running loop of this thread."""
    # One clock per thread, for the loop it runs now (a loop runs in one thread).
    clock: _Clock | None = getattr(_local, "clock", None)
    if clock is None or clock._loop is not loop:
        clock = _local.clock = _Clock(loop)
    return functools.partial(_AsyncioWaiter, clock)


def loop_callbacks(
    loop: asyncio.AbstractEventLoop,
) -> tuple[Callable[[Callable[[], None]], object], Callable[[], bool]]:
    """How a signal handler schedules a callback in ``loop``, and whether that callback would run.

    A callback given to a stopped (or closed) loop would never run: ``running`` says so first.
    """
    return loop.call_soon_threadsafe, lambda: loop.is_running() and not loop.is_closed()


class AsyncioWatch(TaskScope):
    """The disconnect watch on asyncio: the response's task in a :class:`TaskScope`, and
    the server's ``receive()`` as a bare task whose done callback reads the message
    (see :mod:`._disconnect`; :class:`~._interfaces.Watch` says what each method does)."""

    __slots__ = ("_connection", "_error", "_pending", "_receive", "scope")

    def __init__(self, receive: Receive, connection: Connection) -> None:
        super().__init__()  # its own cancel scope (Python 3.11+): one object fewer
        self._receive = receive
        self._connection = connection
        self._pending: asyncio.Future[Any] | None = None
        self._error: BaseException | None = None
        self.scope: Any = None

    async def __aenter__(self) -> AsyncioWatch:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        return await self.stop(exc)

    async def start(self, keep_alive: bool = False) -> Any:
        # Task.uncancel() came with Python 3.11; before, anyio's scope.
        if sys.version_info >= (3, 11):
            TaskScope.__enter__(self)
            self.scope = self
        else:
            self.scope = anyio.CancelScope().__enter__()
        self._listen(asyncio.get_running_loop())
        return self.scope

    def start_timer(self, waiter: Waiter) -> None:
        pass  # the event loop's clock runs the deadlines

    async def stop(self, exc: BaseException | None) -> bool:
        kind, tb = (None, None) if exc is None else (type(exc), exc.__traceback__)
        scope, self.scope = self.scope, None  # no cycle through self
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

    def _gone(self) -> None:
        connection = self._connection
        connection.hub.drop_if_overdue(connection.subscriber)
        if (not connection.completing or self._error is not None) and self.scope is not None:
            self.scope.cancel()
