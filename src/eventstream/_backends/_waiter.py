"""One task's reusable wake-up, with a deadline that moves.

A streaming connection spends its life waiting for its next event. Creating an
``anyio.Event`` and a cancel scope for each wait costs more CPU than the rest
of a delivery, and keeps both alive for as long as the connection is idle. A
:class:`Waiter` belongs to one task and is reused for every wait:

- :meth:`Waiter.wait` returns when another task calls :meth:`Waiter.wake`, or
  when the deadline passes (the keep-alive), whichever comes first;
- :meth:`Waiter.wake` is a no-op when nobody waits, so publishers may call it
  after each ``append`` without checking;
- on asyncio the deadline is an entry on one clock per event loop (one loop
  timer for all waiters), re-armed lazily: moving the deadline later (after
  every delivery) costs nothing, and the entry comes due at most once per
  keep-alive interval while idle;
- on trio the wait parks the task with ``wait_task_rescheduled``; a finite
  deadline is run by a timer task beside it (:meth:`start_timer`, re-armed
  lazily in the same way), by a task that waits for something else anyway
  (:meth:`_TrioWaiter.run_deadlines_elsewhere`: a connection's disconnect
  watcher), or, without either, by a trio cancel scope per wait.

Cancellation (an anyio cancel scope around the waiting task, the server
cancelling the request) interrupts :meth:`Waiter.wait` at once on both
backends, and leaves the waiter ready for another wait. Not thread-safe: wake
it from the event loop it waits in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio.lowlevel

from . import _asyncio
from ._interfaces import Waiter
from ._trio import _TrioWaiter

__all__ = ["current_waiter", "waiter_factory"]


def current_waiter() -> Waiter:
    """A waiter for the calling task, on the event loop it runs in (asyncio or trio)."""
    return waiter_factory()()


def waiter_factory() -> Callable[[], Waiter]:
    """What makes waiters for the event loop that calls this (to make many, cheaply)."""
    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        return _asyncio.waiter_factory(native)
    return _TrioWaiter
