"""trio: the waiter (the task parked with ``wait_task_rescheduled``, its deadlines run by a timer).

See :mod:`._waiter` for what a waiter promises. On trio the wait parks the task
with ``wait_task_rescheduled``; a finite deadline is run by a timer task beside
it (:meth:`_TrioWaiter.start_timer`, re-armed lazily), by a task that waits for
something else anyway (:meth:`_TrioWaiter.run_deadlines_elsewhere`: a
connection's disconnect watcher), or, without either, by a trio cancel scope
per wait. trio is imported only when a waiter is made (it runs on trio then).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..types import Receive
    from ._interfaces import Connection, Waiter

__all__ = ["TrioWatch", "_TrioWaiter", "loop_callbacks"]


def loop_callbacks(token: Any) -> tuple[Callable[[Callable[[], None]], object], Callable[[], bool]]:
    """How a signal handler schedules a callback in the run of ``token`` (a trio token), and whether
    that callback would run: always, as far as one can tell beforehand (``run_sync_soon`` raises
    ``RunFinishedError`` once the run is over)."""
    return token.run_sync_soon, lambda: True


class _TrioWaiter:
    __slots__ = ("_abort_fn", "_armed", "_deadline", "_scope", "_task", "_timed", "_trio", "_value")

    def __init__(self) -> None:
        import outcome  # trio's own dependency
        import trio  # only when running on trio

        self._trio: Any = trio
        self._value: Any = outcome.Value
        self._task: Any = None
        self._timed = False  # another task runs the deadlines (see _run_timer, timer_fired)
        self._scope: Any = None  # that task's cancel scope, while it waits
        self._armed = math.inf  # when the task running the deadlines next calls timer_fired()
        self._deadline = math.inf  # when the current wait ends
        # Bound once, not per wait (until close(): it refers back to the waiter).
        self._abort_fn: Any = self._abort

    def time(self) -> float:
        now: float = self._trio.current_time()
        return now

    def wake(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            self._trio.lowlevel.reschedule(task, self._value(True))

    def _abort(self, raise_cancel: Any) -> Any:
        self._task = None
        return self._trio.lowlevel.Abort.SUCCEEDED

    def wait(self, deadline: float) -> Awaitable[bool]:
        # Not a coroutine of its own: trio's wait is awaited directly, one
        # object fewer per wait for as long as the connection is idle.
        lowlevel = self._trio.lowlevel
        if deadline != math.inf and not self._timed:
            return self._wait_in_scope(deadline)
        self._deadline = deadline
        if deadline < self._armed:  # a later deadline costs nothing now: see _run_timer
            self._armed = deadline
            if self._scope is not None:
                self._scope.deadline = deadline
        self._task = lowlevel.current_task()
        woken: Awaitable[bool] = lowlevel.wait_task_rescheduled(self._abort_fn)
        return woken

    async def _wait_in_scope(self, deadline: float) -> bool:
        # No timer task: a cancel scope bounds this wait.
        lowlevel = self._trio.lowlevel
        self._task = lowlevel.current_task()
        with self._trio.CancelScope(deadline=deadline) as scope:
            await lowlevel.wait_task_rescheduled(self._abort_fn)
        return not scope.cancelled_caught

    def start_timer(self, nursery: Any) -> None:
        """Run the deadlines of this waiter's waits in a task of ``nursery``, beside the waiting task.

        A cancel scope per wait costs a trio task more CPU than the rest of
        a delivery; the timer task sleeps until the earliest deadline armed
        and, if the wait's deadline moved later meanwhile, sleeps on. It ends
        when the nursery is cancelled.
        """
        self._timed = True
        nursery.start_soon(self._run_timer)

    def run_deadlines_elsewhere(self) -> None:
        """Another task runs this waiter's deadlines, as :meth:`start_timer`'s task would.

        That task waits in a cancel scope whose deadline is :attr:`armed`,
        made known with :meth:`timer_scope` (a wait arming an earlier deadline
        moves it), and calls :meth:`timer_fired` when that scope's deadline
        passed. No task of the waiter's own: one task fewer per connection.
        """
        self._timed = True

    @property
    def armed(self) -> float:
        """When the task running the deadlines must next call :meth:`timer_fired`."""
        return self._armed

    def timer_scope(self, scope: Any) -> None:
        """The cancel scope (deadline :attr:`armed`) the deadlines' task waits in now, or ``None``."""
        self._scope = scope

    def timer_fired(self) -> None:
        """The armed deadline passed: end the wait it bounds, or re-arm for a deadline moved later."""
        armed, self._armed = self._armed, math.inf
        task = self._task
        if task is None:
            return  # not waiting: the next wait arms it again
        if self._deadline <= armed:
            self._task = None
            self._trio.lowlevel.reschedule(task, self._value(False))
        else:  # the deadline moved since it was armed
            self._armed = self._deadline

    async def _run_timer(self) -> None:
        trio = self._trio
        while True:
            with trio.CancelScope(deadline=self._armed) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            self.timer_fired()

    def close(self) -> None:
        self.wake()
        self._abort_fn = None


class TrioWatch:
    """The disconnect watch on trio: a nursery with one watcher task, which also runs the
    keep-alive's deadlines when ``receive()`` is a memory channel's (see :mod:`._disconnect`;
    :class:`~._interfaces.Watch` says what each method does)."""

    __slots__ = (
        "_connection",
        "_deadlines",
        "_nursery",
        "_receive",
        "_receiving",
        "_safe",
        "_tasks",
        "scope",
    )

    def __init__(self, receive: Receive, connection: Connection) -> None:
        self._receive = receive
        self._connection = connection
        self._nursery: Any = None  # trio's nursery manager
        self._tasks: Any = None  # and its nursery
        # With a keep-alive, and receive() a memory channel's: the watcher runs the timer.
        self._safe = False
        self._deadlines: _TrioWaiter | None = None  # the waiter whose deadlines it runs
        self._receiving: Any = None  # the cancel scope it waits for a message in
        self.scope: Any = None  # the nursery's cancel scope

    async def __aenter__(self) -> TrioWatch:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        return await self.stop(exc)

    async def start(self, keep_alive: bool = False) -> Any:
        import trio  # only when running on trio

        self._nursery = manager = trio.open_nursery()
        self._tasks = nursery = await manager.__aenter__()
        self.scope = nursery.cancel_scope
        self._safe = keep_alive and _cancel_safe(self._receive, trio)
        nursery.start_soon(self._watch)
        return self.scope

    def start_timer(self, waiter: Waiter) -> None:
        if self._safe and isinstance(waiter, _TrioWaiter):
            waiter.run_deadlines_elsewhere()
            self._deadlines = waiter
            waiter.timer_scope(self._receiving)  # the watcher waits in it now, or will in its own
        else:
            waiter.start_timer(self._tasks)

    async def stop(self, exc: BaseException | None) -> bool:
        kind, tb = (None, None) if exc is None else (type(exc), exc.__traceback__)
        scope, self.scope = self.scope, None  # no cycle through self
        self._tasks = self._deadlines = None
        scope.cancel()
        return bool(await self._nursery.__aexit__(kind, exc, tb))

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


def _cancel_safe(receive: Receive, trio: Any) -> bool:
    """Whether ``receive`` is a trio memory channel's ``receive`` (cancelled, it takes nothing)."""
    channel = getattr(receive, "__self__", None)
    return (
        isinstance(channel, trio.MemoryReceiveChannel)
        and getattr(receive, "__func__", None) is trio.MemoryReceiveChannel.receive
    )
