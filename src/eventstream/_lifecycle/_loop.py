"""Which thread's event loop an event stream belongs to, and publishing from other threads.

A stream's subscriber buffers, waiters and GRIP tasks live in the event loop
that serves its connections. A publish from another thread (for instance from
an event loop of its own) would wake tasks of that foreign loop from the
wrong thread: trio fails with an ``AssertionError`` deep inside, asyncio
delivers whenever the loop next wakes. So the stream records the thread (and
the anyio token of its loop) when a connection or ``async with stream`` runs,
and a publish compares thread ids: one comparison on the hot path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.lowlevel

__all__ = ["LoopBinding", "current_thread_id"]

#: How often a thread waiting in :meth:`LoopBinding.run_from_thread` checks that the loop still runs.
_POLL = 0.05

#: The id of the calling thread (bound here so the hot path skips a lookup).
current_thread_id = threading.get_ident


class LoopBinding:
    """The thread and event loop a stream serves its connections in (none until first use)."""

    __slots__ = ("thread", "token")

    def __init__(self) -> None:
        #: The id of the event loop's thread, or ``None`` before first use.
        self.thread: int | None = None
        self.token: anyio.lowlevel.EventLoopToken | None = None

    def bind(self) -> None:
        """Belong to the calling task's thread and event loop (must run in an event loop)."""
        self.thread = current_thread_id()
        self.token = anyio.lowlevel.current_token()

    def claim(self) -> None:
        """The slow path of the publish check: the caller is not in the bound thread.

        A stream whose event loop has ended (or that no loop has used yet)
        moves to the caller's; one whose loop still runs stays there.

        Raises:
            RuntimeError: the stream belongs to another thread's running
                event loop; the message says how to publish from a thread.
        """
        if self.token is None or not _is_running(self.token):
            self.bind()
            return
        owner = next((t for t in threading.enumerate() if t.ident == self.thread), None)
        owner_name = repr(owner.name) if owner is not None else f"#{self.thread}"
        raise RuntimeError(
            f"publish_event was called from thread {threading.current_thread().name!r}, but this "
            f"EventStream serves its streams in the event loop of thread {owner_name}: a publish from "
            "another thread would touch that loop's buffers and tasks. From a plain thread, call "
            "stream.publish_event_threadsafe(channel, event); or run it in that loop with "
            "anyio.from_thread.run(stream.publish_event, channel, event, token=token), 'token' being "
            "anyio.lowlevel.current_token() taken in that loop"
        )

    def run_from_thread(self, func: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
        """Run ``await func(*args)`` in the bound event loop; block the calling thread until done.

        Raises:
            RuntimeError: no event loop is bound yet, or the caller is in the
                bound loop's thread (it would deadlock);
                ``anyio.RunFinishedError`` (a ``RuntimeError``): the bound
                event loop has ended, or ended while the call waited (a call
                that had not started then never runs).
            Exception: whatever ``func`` raises, in the calling thread.
        """
        token = self.token
        if token is None:
            raise RuntimeError(
                "no event loop has used this EventStream yet: publish_event_threadsafe sends the event "
                "to the loop that serves the streams, once a connection or 'async with stream' ran in it"
            )
        if current_thread_id() == self.thread:
            raise RuntimeError(
                "publish_event_threadsafe was called in the event loop's own thread, where it would "
                "deadlock: use 'await stream.publish_event(channel, event)' there"
            )
        call = _Call(func, args, token)
        call.start()
        call.wait()


class _Call:
    """One call of :meth:`LoopBinding.run_from_thread`: run in the event loop, awaited by a thread.

    Not ``anyio.from_thread.run``: a call queued while the loop stops is never
    run (asyncio), and one that runs when the loop ends may never finish, so
    its thread would wait for ever. The thread waits on a future and checks
    every ``_POLL`` seconds that the loop still runs: a call that has not
    started by then is withdrawn (nothing was published); one that started
    is cancelled by the loop's end (its task is cancelled) and fails too.
    """

    __slots__ = ("args", "cancelled", "context", "func", "future", "native", "task", "token")

    def __init__(
        self,
        func: Callable[..., Coroutine[Any, Any, None]],
        args: tuple[Any, ...],
        token: anyio.lowlevel.EventLoopToken,
    ) -> None:
        self.func, self.args, self.token = func, args, token
        self.native: Any = token.native_token
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.task: object = None  # asyncio: a strong reference to the task (the loop keeps a weak one)
        # The caller's context variables go along, but not the async library it may be in
        # (a worker thread of another event loop).
        self.context = contextvars.copy_context()
        sniffio: Any = sys.modules.get("sniffio")
        if sniffio is not None:
            library = "asyncio" if isinstance(self.native, asyncio.AbstractEventLoop) else "trio"
            self.context.run(sniffio.current_async_library_cvar.set, library)
        #: What the end of the event loop raises in the call's task.
        self.cancelled: type[BaseException] = asyncio.CancelledError

    def start(self) -> None:
        # Raises anyio.RunFinishedError when the loop has ended.
        if not _is_running(self.token):
            raise anyio.RunFinishedError
        try:
            if isinstance(self.native, asyncio.AbstractEventLoop):
                self.native.call_soon_threadsafe(self._start_asyncio, context=self.context)
            else:
                self.native.run_sync_soon(self._start_trio)
        except RuntimeError:  # asyncio: the loop is closed; trio: RunFinishedError
            raise anyio.RunFinishedError from None

    def _start_asyncio(self) -> None:
        # A callback of the event loop.
        if self.future.set_running_or_notify_cancel():
            self.task = self.native.create_task(self._run())

    def _start_trio(self) -> None:
        # A callback of the trio run (queued ones run even while the run ends).
        if not self.future.set_running_or_notify_cancel():
            return
        import trio

        self.cancelled = trio.Cancelled
        try:
            trio.lowlevel.spawn_system_task(self._run, context=self.context)
        except RuntimeError:  # the run is ending: its system nursery takes no new task
            self.future.set_exception(anyio.RunFinishedError())

    async def _run(self) -> None:
        try:
            await self.func(*self.args)
        except self.cancelled:
            # Only the end of the event loop cancels this task: it ends quietly.
            self.future.set_exception(anyio.RunFinishedError())
        except BaseException as exc:
            self.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.future.set_result(None)

    def wait(self) -> None:
        # In the calling thread: the call's result, or RunFinishedError once the loop has ended.
        future = self.future
        while True:
            done, _ = concurrent.futures.wait((future,), timeout=_POLL)
            if done:
                return future.result()
            if _is_running(self.token):
                continue
            if future.cancel():
                raise anyio.RunFinishedError  # it never started: nothing was published
            # asyncio: a task started while the loop was ending may never finish.
            if isinstance(self.native, asyncio.AbstractEventLoop) and self.native.is_closed():
                done, _ = concurrent.futures.wait((future,), timeout=0)
                if not done:
                    self._forget_unstarted_task()
                    raise anyio.RunFinishedError

    def _forget_unstarted_task(self) -> None:
        # asyncio: the loop closed before the task created for the call ran at all; it never
        # will, and no code of it ran: close its coroutine, and spare the "destroyed but
        # pending" log (the calling thread gets RunFinishedError instead).
        task: Any = self.task
        if task is not None and inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_CREATED:
            task.get_coro().close()
            task._log_destroy_pending = False


def _is_running(token: anyio.lowlevel.EventLoopToken) -> bool:
    # Whether the event loop behind ``token`` still runs; callable from any thread.
    native: Any = token.native_token
    is_running = getattr(native, "is_running", None)
    if callable(is_running):  # an asyncio event loop
        return bool(is_running())
    try:  # a trio token: scheduling a no-op fails once the run has finished
        native.run_sync_soon(_nothing)
    except RuntimeError:  # trio.RunFinishedError
        return False
    return True


def _nothing() -> None:
    pass
