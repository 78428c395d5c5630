"""SIGINT and SIGTERM end open event streams first, then reach the server's own handler.

ASGI servers run the lifespan shutdown only after every connection has ended,
and event streams never end by themselves: without help, a server waits for
them forever (uvicorn) or for its graceful timeout (hypercorn). So the first
request an :class:`~eventstream.EventStream` serves in the main thread (or the
first lifespan startup of an endpoint) registers the stream with the relay of
the running event loop, which installs a handler for SIGINT and SIGTERM that
chains to the handler installed before it (the server's). On a signal, the
relay closes every registered stream, waits until their connections have
ended (at most their ``shutdown_grace``), then passes the signal on to the
previous handler, or to the default action when there was no Python handler
(hypercorn's trio worker installs none for SIGTERM). A second signal while
streams are ending is passed on at once. Nothing of the server is patched,
and the relay starts no task: it runs in signal handlers and in callbacks of
the event loop.

Signals a process ignores (``SIG_IGN``, as hypercorn's worker processes do
with SIGINT) are left alone.

A child process forked while the handlers are installed (``multiprocessing``
with the fork start method, ``os.fork``) runs no event loop of the parent's:
the handlers there would swallow the first signal (``Process.terminate()``
would not stop it). So the child gets back the handlers found before them
(the default action where there were none), through ``os.register_at_fork``.

What the servers do (uvicorn 0.54, hypercorn 0.18): uvicorn installs its
handlers with ``signal.signal`` before the lifespan starts, and at its end
restores the handlers it found and raises the signals it caught again.
Hypercorn's asyncio worker uses ``loop.add_signal_handler``: its handler runs
through the loop's wake-up fd whatever the Python-level handler is (that is
asyncio's no-op, which the relay chains to), so hypercorn begins stopping at
once while the streams end. Hypercorn's trio worker installs none: SIGINT
reaches trio's KeyboardInterrupt handler (called from a callback of the run,
so it is delivered to the main task, which hypercorn treats as a shutdown),
SIGTERM its default action once the streams have ended. With hypercorn's
default supervisor and worker processes, the workers never see the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, Protocol

import anyio.lowlevel

from .._backends import LoopHandle

__all__ = ["SIGNALS", "SignalRelay", "chain_close", "release", "watch"]

#: The signals the relay handles.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

Handler = Callable[[int, FrameType | None], Any]


class Closable(Protocol):
    """What the relay needs of an event stream."""

    def _signal_close(self, now: float) -> None:
        """End every open stream, as ``aclose()`` does, without awaiting."""

    def _signal_done(self) -> bool:
        """Whether every stream ended by ``_signal_close`` has finished its response."""


class SignalRelay:
    """The chained SIGINT/SIGTERM handlers of one event loop, and the streams they close."""

    def __init__(self, loop: LoopHandle) -> None:
        self.loop = loop
        self.streams: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.previous: dict[int, Any] = {}
        #: Signals received and not yet passed on.
        self.received: list[int] = []
        self.installed = False
        self._handler: Handler = self._handle  # one bound method, so that `is` finds it again

    def install(self) -> None:
        # In place before the first handler is: a signal that comes between two of them closes
        # the streams (and the uninstall that follows puts back every handler installed so far).
        self.installed = True
        _in_place[self] = None
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is signal.SIG_IGN or current is None:
                continue  # ignored on purpose, or set outside Python: not ours to change
            self.previous[signum] = current
            signal.signal(signum, self._handler)

    def uninstall(self) -> None:
        """Put the previous handlers back where ours is still the current one."""
        self.installed = False
        _in_place.pop(self, None)
        for signum, previous in self.previous.items():
            if signal.getsignal(signum) is self._handler:
                signal.signal(signum, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.installed and not self.received and self.loop.running():
            self.received.append(signum)
            try:
                self.loop.schedule(self._close_all)
            except Exception:  # the loop ended between the check and now
                self.received.clear()
            else:
                return
        # A second signal (the user insists), a loop that is gone, or handlers
        # already given back: the previous handler gets the signals now.
        self.uninstall()
        received, self.received = self.received, []
        for pending in [*received, signum]:
            self._pass_on(pending, frame)

    def _close_all(self) -> None:
        # In the event loop (a callback), not in the signal handler.
        now = self.loop.clock()
        for stream in list(self.streams):
            stream._signal_close(now)
        self.check()

    def check(self) -> None:
        """Pass the signals on once every registered stream has ended (called when connections end)."""
        if self.received and self.installed and all(stream._signal_done() for stream in list(self.streams)):
            self.installed = False
            try:
                self.loop.schedule(self._finish)  # trio: a KeyboardInterrupt-safe context
            except Exception:
                self._finish()

    def _finish(self) -> None:
        self.uninstall()
        received, self.received = self.received, []
        for signum in received:
            self._pass_on(signum, None)

    def _pass_on(self, signum: int, frame: FrameType | None) -> None:
        previous = self.previous.get(signum, signal.SIG_DFL)
        if callable(previous):
            try:
                previous(signum, frame)
            except RuntimeError:
                # The handler of an event loop that has ended (trio: RunFinishedError),
                # left behind in a process that goes on (a test run): Ctrl+C still interrupts.
                if signum != signal.SIGINT:
                    raise
                raise KeyboardInterrupt from None
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)  # the default action: the process ends


# The relay of the event loop running in the main thread (signals only reach that thread).
_relay: SignalRelay | None = None


class _Uninstallable(Protocol):
    def uninstall(self) -> None:
        """Put the previous handlers back where ours is still the current one."""


#: Every relay and ``chain_close`` block whose handlers are installed now (insertion order).
_in_place: dict[_Uninstallable, None] = {}


def _after_fork_in_child() -> None:
    # The child runs none of the parent's event loops: the handlers go back to what they
    # were before them, newest first (each restores where it is still the current one).
    global _relay
    _relay = None
    for installed in reversed(list(_in_place)):
        installed.uninstall()
    _in_place.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


def watch(stream: Closable, relay: SignalRelay | None) -> SignalRelay | None:
    """Register ``stream`` with the relay of the running event loop; return the relay.

    ``relay`` is the one ``stream`` is registered with, if any: when it still
    serves this loop, nothing is done (the per-request fast path). Outside
    the main thread (where Python cannot install signal handlers) nothing is
    installed and ``relay`` is returned as it is. Must be called in an event
    loop.
    """
    global _relay
    if threading.current_thread() is not threading.main_thread():
        return relay
    loop_native = anyio.lowlevel.current_token().native_token
    if relay is not None and relay.installed and relay.loop.native is loop_native:
        return relay
    current = _relay
    if current is None or current.loop.native is not loop_native or not current.installed:
        if current is not None:
            current.uninstall()  # a loop that has stopped (only one runs in the main thread)
        current = _relay = SignalRelay(LoopHandle())
        current.install()
    current.streams.add(stream)
    return current


def release(stream: Closable, relay: SignalRelay | None) -> None:
    """Unregister ``stream`` (closed by its owner); the last one out gives the handlers back."""
    global _relay
    if relay is None:
        return
    relay.streams.discard(stream)
    if relay.received:
        relay.check()  # a signal is being handled: this stream has ended too
    elif not relay.streams:
        relay.uninstall()  # also where a handler chained over ours has since put ours back
        if _relay is relay:
            _relay = None


@contextlib.contextmanager
def chain_close(close: Callable[[float], None], signals: tuple[int, ...]) -> Iterator[None]:
    """While in the block, ``signals`` first call ``close(now)`` in the event loop, then the previous handler.

    The mechanism of :meth:`EventStream.close_on_signals`: the previous handler
    is called at once (the server's shutdown runs while streams end). A
    signal without a Python handler (default action) is left alone.
    """
    loop = LoopHandle()
    previous: dict[int, Any] = {}

    def run_close() -> None:
        close(loop.clock())

    def handler(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(Exception):  # the loop is gone: only the previous handler
            loop.schedule(run_close)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)

    for signum in signals or SIGNALS:
        current = signal.getsignal(signum)
        if callable(current):
            previous[signum] = current
            signal.signal(signum, handler)
    chained = _Chained(handler, previous)
    _in_place[chained] = None
    try:
        yield
    finally:
        chained.uninstall()


class _Chained:
    """The handler a ``chain_close`` block installed, and those it chains to."""

    def __init__(self, handler: Handler, previous: dict[int, Any]) -> None:
        self.handler = handler
        self.previous = previous

    def uninstall(self) -> None:
        """Put the previous handlers back where ours is still the current one."""
        _in_place.pop(self, None)
        for signum, chained in self.previous.items():
            if signal.getsignal(signum) is self.handler:
                signal.signal(signum, chained)
