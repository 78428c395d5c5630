"""Publishing into a broker's channels from code that serves no streams."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import weakref
from concurrent.futures import Future
from types import TracebackType
from typing import Any

import anyio
from anyio.from_thread import BlockingPortal

from .._base import check_count
from .._core import Broker
from .._observe._trace import TRACEPARENT, Tracing
from .._options import as_event, make_broker
from .._serve import check_channel_name
from ..types import EventLike

__all__ = ["Publisher"]


class Publisher:
    """Publishes to the channels of every :class:`~eventstream.EventStream` sharing a broker.

    For code that serves no streams: a Celery task, a cron job, a sync Django
    or Flask view. Events get their ids from the engine and reach the
    subscribers of every process, exactly as with ``stream.publish_event``.

    Async code enters it::

        async with Publisher(broker="redis://localhost:6379/0") as publisher:
            await publisher.publish_event("news", {"event": "message", "data": "hi"})

    Blocking code calls :meth:`publish_event_sync`, which runs the broker in a
    thread of its own (an anyio blocking portal, started on first use) until
    :meth:`close` (or the end of a ``with`` block)::

        with Publisher(broker="redis://localhost:6379/0") as publisher:
            publisher.publish_event_sync("news", {"event": "message", "data": "hi"})

    A process-wide instance may be shared by threads; call :meth:`close` at
    exit (one left running is closed when the interpreter exits). Its thread
    and connections do not survive ``fork()``: in a child forked after its first
    :meth:`publish_event_sync` (gunicorn ``--preload``, a ``multiprocessing``
    fork), the call raises ``RuntimeError``; make the publisher in the child.

    Args:
        broker: A ``redis://`` / ``rediss://`` URL (``redis+cluster://`` for a
            cluster), or a :class:`Broker`
            (such as a tuned :class:`RedisBroker`, with the same
            ``key_prefix`` as the streams).
        max_channel_name_length: The longest channel name accepted.

    Raises:
        ValueError: the URL is malformed, or ``max_channel_name_length`` is
            not an int >= 1.
        TypeError: ``broker`` is neither a URL nor a broker.
    """

    def __init__(self, *, broker: str | Broker, max_channel_name_length: int = 256) -> None:
        if broker is None:
            raise TypeError("Publisher needs a broker")
        check_count("max_channel_name_length", max_channel_name_length)  # as EventStream's
        self.broker: Broker = make_broker(broker)
        self.max_channel_name_length = max_channel_name_length
        self._entered = False
        self._lock = threading.Lock()
        self._runner: _PortalThread | None = None
        self._portal: BlockingPortal | None = None
        self._broker_cm: contextlib.AbstractContextManager[Any] | None = None
        self._closed = False  # close() was called: publish_event_sync raises
        self._forked = False  # its thread was started in the process this one was forked from
        self._calls = 0  # publish_event_sync calls in flight (close() waits for them)
        self._idle = threading.Condition(self._lock)
        #: tracing: what makes spans (``eventstream.otel.trace``), ``None`` while tracing is off.
        self.tracing: Tracing | None = None

    # -- async -----------------------------------------------------------------

    async def publish_event(self, channel: str, event: EventLike) -> str:
        """Publish ``event`` on ``channel``; return its id once the engine has it.

        Raises:
            ValueError, TypeError: the channel name or the event is invalid,
                or the event alone weighs more than the broker's ``max_bytes``
                (nothing was published).
            BrokerError: the engine refused the event or could not be reached
                within the broker's publish timeout (if an attempt reached the
                engine and only its answer was lost, subscribers got it once:
                ``maybe_published`` is then True).
            RuntimeError: the publisher was not entered (``async with``).

        Cancellation: the event may or may not have been published.
        """
        message = as_event(event)
        check_channel_name(channel, self.max_channel_name_length)
        if not self._entered:
            raise RuntimeError("enter the Publisher (async with) before publish_event")
        tracing = self.tracing
        if tracing is not None and TRACEPARENT.get() is None and tracing.active:  # tracing: in its span
            with tracing.publish(channel, message.id):
                return (await self.broker.publish(channel, message)).id
        return (await self.broker.publish(channel, message)).id

    async def __aenter__(self) -> Publisher:
        """Connect to the engine.

        Raises:
            BrokerError: the engine cannot be reached, or (a Redis broker) its
                ``maxmemory-policy`` may evict keys and eviction was not allowed.
        """
        await self.broker.__aenter__()
        self._entered = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered = False
        await self.broker.__aexit__(exc_type, exc, tb)

    # -- blocking --------------------------------------------------------------

    def publish_event_sync(self, channel: str, event: EventLike) -> str:
        """Publish from blocking code (any thread, no event loop); return the event's id.

        The first call starts a thread running the broker (and connects);
        later calls reuse it. Thread-safe.

        Raises:
            ValueError, TypeError: the channel name or the event is invalid,
                or the event alone weighs more than the broker's ``max_bytes``.
            BrokerError: the engine refused the event or could not be reached
                within the broker's publish timeout (or, on the first call,
                could not be connected to).
            RuntimeError: called from a thread that runs an event loop (it
                would block that loop, and valkey-glide delivers every
                client's replies through the first event loop that used it:
                use ``await publish_event``, or run this in a worker thread),
                the publisher is entered with ``async with`` already, or
                :meth:`close` was called, or its thread was started before this
                process was forked from the one that started it (nothing was published).
        """
        library = _running_event_loop()
        if library is not None:
            raise RuntimeError(
                f"publish_event_sync called from {library} code: use await publish_event, "
                "or call it in a worker thread (anyio.to_thread.run_sync)"
            )
        message = as_event(event)
        check_channel_name(channel, self.max_channel_name_length)
        portal = self._start_portal()
        try:
            return portal.call(self.broker.publish, channel, message).id
        finally:
            with self._lock:
                self._calls -= 1
                if not self._calls:
                    self._idle.notify_all()

    def _start_portal(self) -> BlockingPortal:
        with self._lock:
            if self._closed:
                raise _closed_error()  # a thread started again would keep the interpreter from exiting
            if self._forked:
                raise RuntimeError(
                    "this Publisher's thread and connections were started before this process was "
                    "forked, and do not exist here: make the Publisher in this process"
                )
            if self._portal is not None:
                self._calls += 1
                return self._portal
            if self._entered:
                raise RuntimeError("this Publisher is entered with async with: use await publish_event")
            runner = _PortalThread()
            portal = runner.portal
            try:
                broker_cm = portal.wrap_async_context_manager(self.broker)
                broker_cm.__enter__()
            except BaseException:
                runner.stop()
                raise
            self._runner, self._portal, self._broker_cm = runner, portal, broker_cm
            self._calls += 1
            _RUNNING.add(self)
            return portal

    def _after_fork(self) -> None:
        # In a forked child: the parent's thread is not here, and its lock may have been held
        # at the fork. Forget both (nothing of them may be touched); publishing then refuses.
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._runner = self._portal = self._broker_cm = None  # (dropped: nothing of theirs runs)
        self._calls = 0
        self._forked = True

    def close(self) -> None:
        """Stop the thread started by :meth:`publish_event_sync` and disconnect. Idempotent.

        Final: :meth:`publish_event_sync` raises ``RuntimeError`` afterwards
        (and in threads that call it meanwhile) instead of starting a thread
        again. Publishes already under way finish first (each within the
        broker's publish timeout). A ``with`` block calls it at its end.
        """
        with self._lock:
            self._closed = True
            while self._calls:
                self._idle.wait()
            runner, broker_cm = self._runner, self._broker_cm
            self._runner = self._portal = self._broker_cm = None
            _RUNNING.discard(self)
        if runner is not None:
            try:
                if broker_cm is not None:
                    broker_cm.__exit__(None, None, None)
            finally:
                runner.stop()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _PortalThread:
    """An event loop in a daemon thread of its own, and a portal into it.

    Unlike anyio's ``start_blocking_portal`` (a generator), dropping one runs
    nothing: a forked child, where the thread does not exist, drops it.

    Raises:
        Exception: what starting the event loop raised.
    """

    def __init__(self) -> None:
        started: Future[BlockingPortal] = Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                started.set_result(portal)
                await portal.sleep_until_stopped()

        def run() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # (after it started, the broker's own exit reports it)
                if not started.done():
                    started.set_exception(exc)

        self._thread = threading.Thread(target=run, name="eventstream-publisher", daemon=True)
        self._thread.start()
        self.portal = started.result()

    def stop(self) -> None:
        """Stop the event loop (the calls in it finish first) and wait for its thread."""
        with contextlib.suppress(RuntimeError):  # (stopped already)
            self.portal.call(self.portal.stop)
        self._thread.join()


#: Publishers whose thread runs: closed at the interpreter's exit (a daemon thread frozen by the
#: interpreter's finalization would hang the portal's teardown), forgotten in a forked child.
_RUNNING: weakref.WeakSet[Publisher] = weakref.WeakSet()


def _close_running() -> None:
    for publisher in list(_RUNNING):
        publisher.close()


def _forget_running() -> None:
    for publisher in list(_RUNNING):
        publisher._after_fork()
    _RUNNING.clear()


atexit.register(_close_running)
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_running)


def _closed_error() -> RuntimeError:
    return RuntimeError("this Publisher is closed: publish_event_sync cannot be used after close()")


def _running_event_loop() -> str | None:
    """The async library running in this thread, if any."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return "asyncio"
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return "trio"
    return None
