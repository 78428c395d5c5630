"""Entering, closing and signals of an :class:`~eventstream.EventStream` (its base class).

Entering runs a shared broker and the GRIP publisher and binds the stream to
the event loop; closing ends every open stream after what it holds is
written (with the shutdown event last) and stops what entering started;
SIGINT and SIGTERM close it too (see ``_signals.py``). Waiting for a number
of subscribers is here because closing, and a signal waiting for the
streams to end, are woken by the same changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar

import anyio
import anyio.lowlevel

from ._broker import Broker
from ._grip import GripPublisher
from ._hub import Hub
from ._loop import LoopBinding
from ._options import as_event, check_shutdown_grace
from ._signals import SignalRelay, chain_close, release, watch
from ._sse import ServerSentEvent
from ._subscriber import Subscriber
from .types import EventLike

__all__ = ["StreamLifecycle"]

_Self = TypeVar("_Self", bound="StreamLifecycle")


class StreamLifecycle:
    """The lifecycle half of :class:`~eventstream.EventStream`; see its options.

    Raises:
        ValueError, TypeError: ``shutdown_event`` is not an event, or
            ``shutdown_grace`` is negative or infinite.
    """

    # Set by EventStream.__init__ before this class's.
    _hub: Hub
    _broker: Broker
    _grip: GripPublisher | None
    _loop: LoopBinding

    def __init__(
        self, *, shutdown_event: EventLike | None, shutdown_grace: float, handle_signals: bool
    ) -> None:
        self._shutdown_event: ServerSentEvent | None = (
            None if shutdown_event is None else as_event(shutdown_event)
        )
        self.shutdown_grace: float = check_shutdown_grace(shutdown_grace)
        self.handle_signals = handle_signals
        self._relay: SignalRelay | None = None
        self._ending: list[Subscriber] = []  # ended by a close, their responses maybe not finished
        self._waiters: list[anyio.Event] = []
        self._started_grip = False
        self._started_broker = False

    # -- waiting -----------------------------------------------------------

    async def wait_subscribers(self, count: int, channel: str | None = None) -> None:
        """Wait until ``channel`` (or the whole hub) has exactly ``count`` subscribers.

        Useful in tests: publish once the client is subscribed, or check that
        disconnects were noticed. Wrap it in ``anyio.fail_after`` to bound it.
        """
        while self._hub.subscriber_count(channel) != count:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)

    def _notify_waiters(self) -> None:
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for event in waiters:
                event.set()
        if self._relay is not None and self._relay.received:
            self._relay.check()  # a signal waits for the streams to end

    # -- closing ---------------------------------------------------------

    async def aclose(self) -> None:
        """End every open stream after what it holds is written, and refuse new ones.

        Streams end cleanly (the response completes), so servers can shut
        down. Requests after this get 503 and publishes raise
        ``ClosedResourceError``. Call it from any task (a request handler, a
        task group of your own): what ``async with`` started stops when it
        exits, in the task that entered it (a GRIP publisher sends what is
        queued, then stops; a shared broker disconnects). Idempotent.
        """
        self._close_streams()
        release(self, self._relay)
        self._relay = None
        await anyio.lowlevel.checkpoint()

    def _close_streams(self, now: float | None = None) -> None:
        final = None
        if self._shutdown_event is not None and not self._hub.closed:
            final = self._broker.closing_entry(self._shutdown_event)
        self._signal_done()  # forget connections of an earlier close that have ended
        self._ending += self._hub.close(self.shutdown_grace, final, now)
        self._notify_waiters()

    # -- signals (see _signals.py) -----------------------------------------

    def _watch_signals(self) -> None:
        # Per request: a no-op once registered with this event loop's relay.
        if self.handle_signals and not self._hub.closed:
            self._relay = watch(self, self._relay)

    def _signal_close(self, now: float) -> None:
        self._close_streams(now)

    def _signal_done(self) -> bool:
        # A connection marks its subscriber finished when its response is over.
        self._ending = [s for s in self._ending if not s.finished]
        return not self._ending

    @contextlib.contextmanager
    def close_on_signals(self, *signals: int) -> Iterator[None]:
        """While in the block, SIGTERM and SIGINT (or ``signals``) also close this stream.

        ASGI servers tell the app they are stopping (lifespan shutdown) only
        after every connection has ended, which event streams never do by
        themselves: servers then wait out a graceful timeout (hypercorn) or,
        without one, forever (uvicorn). Inside this block, the signal first
        ends every stream cleanly, as :meth:`aclose` does, and then reaches
        the handler that was installed before (the server's), so shutdown
        goes on at once. Use it in the lifespan, inside ``async with stream``::

            async with stream:
                with stream.close_on_signals():
                    yield

        A signal without a Python handler (default action) is left alone. Must
        be used in the main thread, in the event loop that serves the app.
        Since ``handle_signals`` (on by default) does this without any code,
        it is only needed for other signals, or with ``handle_signals=False``.
        """
        with chain_close(self._close_streams, signals):
            yield

    async def __aenter__(self: _Self) -> _Self:
        """Open the stream for subscribers (again, after an ``aclose()``); start the broker and GRIP.

        A shared broker connects here and starts following its engine
        (``BrokerError`` when the engine cannot be reached, or may evict the
        broker's keys and eviction was not allowed). In the main
        thread, with ``handle_signals``, it also installs the SIGINT and
        SIGTERM handlers (see the option). Exiting closes (see :meth:`__aexit__`). A
        :class:`GripPublisher` that is already running (entered by its owner)
        is used as it is.
        """
        if not self._started_broker:
            await self._broker.__aenter__()  # BrokerError: a shared engine cannot be reached
            self._started_broker = True
        self._hub.closed = False
        self._loop.bind()
        self._watch_signals()
        if self._grip is not None and not self._grip.running:
            await self._grip.__aenter__()
            self._started_grip = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close (as :meth:`aclose`), then stop the GRIP publisher and the broker that entering started.

        Cancellation: what the GRIP publisher still holds fails in its
        publishers with ``GripPublishError``; the broker disconnects.
        """
        try:
            await self.aclose()
            if self._started_grip and self._grip is not None:
                self._started_grip = False
                await self._grip.aclose()
        finally:
            if self._started_broker:
                self._started_broker = False
                await self._broker.__aexit__(None, None, None)
