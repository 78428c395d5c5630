"""Entering, closing and signals of an :class:`~eventstream.EventStream`: its :class:`Lifecycle`.

The stream's public methods (``async with``, ``aclose``, ``wait_subscribers``,
``close_on_signals``) call this part of it, which holds what they share.
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

import anyio
import anyio.lowlevel

from .._backends import declare_running_library
from .._core import Broker, Hub, Subscriber
from .._grip import GripPublisher
from .._options import StreamOptions
from ._loop import LoopBinding
from ._signals import SignalRelay, chain_close, release, watch

__all__ = ["Lifecycle"]


class Lifecycle:
    """What entering, closing, signals and waiting for subscribers share, for one event stream.

    The signal relay holds it weakly (as the stream it closes); the stream holds it.
    """

    def __init__(
        self, hub: Hub, broker: Broker, grip: GripPublisher | None, loop: LoopBinding, options: StreamOptions
    ) -> None:
        self._hub = hub
        self._broker = broker
        self._grip = grip
        self._loop = loop
        self._options = options
        self._relay: SignalRelay | None = None
        self._ending: list[Subscriber] = []  # ended by a close, their responses maybe not finished
        self._waiters: list[anyio.Event] = []
        self._started_grip = False
        self._started_broker = False

    @property
    def broker_started(self) -> bool:
        """Whether entering started the broker and it has not been stopped since."""
        return self._started_broker

    # -- waiting -----------------------------------------------------------

    async def wait_subscribers(self, count: int, channel: str | None) -> None:
        """See :meth:`EventStream.wait_subscribers <eventstream.EventStream.wait_subscribers>`."""
        while self._hub.subscriber_count(channel) != count:
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            finally:
                if event in self._waiters:
                    self._waiters.remove(event)

    def notify_waiters(self) -> None:
        """Wake ``wait_subscribers`` (and a signal waiting for the streams to end): subscribers changed."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for event in waiters:
                event.set()
        if self._relay is not None and self._relay.received:
            self._relay.check()  # a signal waits for the streams to end

    # -- closing ---------------------------------------------------------

    async def aclose(self) -> None:
        """See :meth:`EventStream.aclose <eventstream.EventStream.aclose>`."""
        self._close_streams()
        release(self, self._relay)
        self._relay = None
        await anyio.lowlevel.checkpoint()

    def _close_streams(self, now: float | None = None) -> None:
        final = None
        closing_event = self._options.closing_event
        if closing_event is not None and not self._hub.closed:
            final = self._broker.closing_entry(closing_event)
        self._signal_done()  # forget connections of an earlier close that have ended
        self._ending += self._hub.close(self._options.shutdown_grace, final, now)
        self.notify_waiters()

    # -- signals (see _signals.py) -----------------------------------------

    def watch_signals(self) -> None:
        """Register with this event loop's signal relay (per request: a no-op once registered)."""
        if self._options.handle_signals and not self._hub.closed:
            self._relay = watch(self, self._relay)

    def _signal_close(self, now: float) -> None:
        self._close_streams(now)

    def _signal_done(self) -> bool:
        # A connection marks its subscriber finished when its response is over.
        self._ending = [s for s in self._ending if not s.finished]
        return not self._ending

    @contextlib.contextmanager
    def close_on_signals(self, signals: tuple[int, ...]) -> Iterator[None]:
        """See :meth:`EventStream.close_on_signals <eventstream.EventStream.close_on_signals>`."""
        with chain_close(self._close_streams, signals):
            yield

    async def enter(self) -> None:
        """See :meth:`EventStream.__aenter__ <eventstream.EventStream.__aenter__>`."""
        declare_running_library()  # (for the tasks the broker and GRIP start from here)
        if not self._started_broker:
            await self._broker.__aenter__()  # BrokerError: a shared engine cannot be reached
            self._started_broker = True
        self._hub.reopen()
        self._loop.bind()
        self.watch_signals()
        if self._grip is not None and not self._grip.running:
            await self._grip.__aenter__()
            self._started_grip = True

    async def exit(self) -> None:
        """See :meth:`EventStream.__aexit__ <eventstream.EventStream.__aexit__>`."""
        try:
            await self.aclose()
            if self._started_grip and self._grip is not None:
                self._started_grip = False
                await self._grip.aclose()
        finally:
            if self._started_broker:
                self._started_broker = False
                await self._broker.__aexit__(None, None, None)
