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

import threading
from collections.abc import Callable, Coroutine
from typing import Any

import anyio.from_thread
import anyio.lowlevel

__all__ = ["LoopBinding", "current_thread_id"]

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
                event loop has ended.
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
        anyio.from_thread.run(func, *args, token=token)


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
