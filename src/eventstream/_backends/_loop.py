"""Signal-safe ways back into one running event loop, chosen once per loop (asyncio or trio)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio.lowlevel

from . import _asyncio, _trio

__all__ = ["LoopHandle"]


class LoopHandle:
    """The running event loop, as a signal handler may reach it.

    :attr:`schedule` runs a callback in the loop soon (from a signal handler or
    another thread; it raises once the loop is gone), :attr:`running` tells
    whether a callback scheduled now would run, :attr:`clock` is the loop's
    clock and :attr:`native` the loop itself (to recognise it). Must be made in
    the event loop.
    """

    __slots__ = ("clock", "native", "running", "schedule")

    def __init__(self) -> None:
        token = anyio.lowlevel.current_token()
        native = token.native_token
        self.native: object = native
        self.schedule: Callable[[Callable[[], None]], object]
        self.running: Callable[[], bool]
        if isinstance(native, asyncio.AbstractEventLoop):
            self.schedule, self.running = _asyncio.loop_callbacks(native)
        else:
            self.schedule, self.running = _trio.loop_callbacks(native)
        self.clock: Callable[[], float] = token.backend_class.current_time
