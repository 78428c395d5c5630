"""handle_signals, in process: SIGTERM closes every stream, then reaches the handler installed before.

The signals are raised in this process with ``signal.raise_signal``; a
recording handler stands for the server's (so the test process survives),
and is put back, with the original, at the end of each test.
"""

from __future__ import annotations

import contextvars
import multiprocessing
import signal
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from eventstream import EventStream
from eventstream._lifecycle._signals import release, watch
from eventstream.testing import StreamResponse, open_stream

pytestmark = pytest.mark.anyio


class Recorder:
    """A stand-in for a server's signal handler: records the signals and what the streams looked like."""

    def __init__(self, *streams: EventStream) -> None:
        self.streams = streams
        self.calls: list[tuple[int, int]] = []  # (signal, open subscribers of every stream then)
        self.called = anyio.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.calls.append((signum, sum(s.subscriber_count() for s in self.streams)))
        self.called.set()


def current_handler_is(handler: object) -> bool:
    return signal.getsignal(signal.SIGTERM) is handler


@pytest.fixture
def sigterm() -> Iterator[None]:
    original = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, original)


async def read_to_end(response: StreamResponse) -> list[str | None]:
    events = []
    while True:
        try:
            events.append((await response.receive_event()).event)
        except anyio.EndOfStream:
            return events


async def test_sigterm_closes_every_hub_then_reaches_the_previous_handler(sigterm: None) -> None:
    chat = EventStream(shutdown_event={"event": "shutdown"})
    alerts = EventStream(shutdown_event={"event": "shutdown"})
    recorder = Recorder(chat, alerts)
    signal.signal(signal.SIGTERM, recorder)
    with anyio.fail_after(10):
        async with (
            open_stream(chat("room")) as first,
            open_stream(chat("room")) as second,
            open_stream(alerts("all")) as third,
        ):
            await chat.wait_subscribers(2, "room")
            await alerts.wait_subscribers(1, "all")
            # The first request installed the handlers, chained to the recorder.
            assert not current_handler_is(recorder)
            await chat.publish_event("room", {"event": "message", "data": "last"})
            signal.raise_signal(signal.SIGTERM)
            assert recorder.calls == []  # not before the streams have ended
            endings = [await read_to_end(response) for response in (first, second, third)]
            await recorder.called.wait()
    assert endings == [
        ["stream-open", "message", "shutdown"],
        ["stream-open", "message", "shutdown"],
        ["stream-open", "shutdown"],
    ]
    assert recorder.calls == [(signal.SIGTERM, 0)]  # once, after every stream had ended
    assert current_handler_is(recorder)  # given back
    with pytest.raises(anyio.ClosedResourceError):
        await chat.publish_event("room", {"data": "too late"})


async def test_a_second_signal_is_passed_on_at_once(sigterm: None) -> None:
    chat = EventStream(shutdown_grace=60)
    recorder = Recorder(chat)
    signal.signal(signal.SIGTERM, recorder)
    with anyio.fail_after(10):
        async with open_stream(chat("room")) as response:
            await chat.wait_subscribers(1, "room")
            for n in range(20):  # the client reads nothing: the connection is stuck writing
                await chat.publish_event("room", {"data": n})
                await anyio.wait_all_tasks_blocked()
            signal.raise_signal(signal.SIGTERM)
            await anyio.wait_all_tasks_blocked()
            assert recorder.calls == []  # waiting for the stuck stream (up to shutdown_grace)
            signal.raise_signal(signal.SIGTERM)  # the user insists
            assert recorder.calls == [(signal.SIGTERM, 0), (signal.SIGTERM, 0)]
            assert current_handler_is(recorder)
            assert (await response.receive_event()).event == "stream-open"


async def test_handlers_are_given_back_when_the_stream_is_closed(sigterm: None) -> None:
    recorder = Recorder()
    signal.signal(signal.SIGTERM, recorder)
    stream = EventStream()
    with anyio.fail_after(10):
        async with stream:
            assert not current_handler_is(recorder)
            async with open_stream(stream("a")) as response:
                assert (await response.receive_event()).event == "stream-open"
        assert current_handler_is(recorder)
        # Entered again: installed again; the signal closes it and goes on to the recorder.
        async with stream:
            assert not current_handler_is(recorder)
            signal.raise_signal(signal.SIGTERM)
            await recorder.called.wait()
            assert recorder.calls == [(signal.SIGTERM, 0)]
            assert current_handler_is(recorder)


async def test_handle_signals_false_installs_nothing(sigterm: None) -> None:
    stream = EventStream(handle_signals=False)
    recorder = Recorder(stream)
    signal.signal(signal.SIGTERM, recorder)
    with anyio.fail_after(10):
        async with stream, open_stream(stream("a")) as response:
            assert (await response.receive_event()).event == "stream-open"
            assert current_handler_is(recorder)
            signal.raise_signal(signal.SIGTERM)
            assert recorder.calls == [(signal.SIGTERM, 1)]  # the stream is still open
            assert stream.subscriber_count() == 1


async def test_ignored_signals_are_left_alone(sigterm: None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stream = EventStream()
    with anyio.fail_after(10):
        async with stream, open_stream(stream("a")) as response:
            assert (await response.receive_event()).event == "stream-open"
            assert current_handler_is(signal.SIG_IGN)


async def test_close_on_signals_still_chains(sigterm: None) -> None:
    # The explicit form, inside the automatic one: both close, the recorder runs once.
    stream = EventStream(shutdown_event={"event": "shutdown"})
    recorder = Recorder(stream)
    signal.signal(signal.SIGTERM, recorder)
    with anyio.fail_after(10):
        async with stream:
            with stream.close_on_signals():
                async with open_stream(stream("a")) as response:
                    await stream.wait_subscribers(1, "a")
                    signal.raise_signal(signal.SIGTERM)
                    assert await read_to_end(response) == ["stream-open", "shutdown"]
                    await recorder.called.wait()
    assert recorder.calls == [(signal.SIGTERM, 0)]
    assert current_handler_is(recorder)


def report_handlers_and_wait(conn: Connection, before: dict[int, object]) -> None:
    # In the forked child: which handlers are in place, then wait to be terminated.
    conn.send([signal.getsignal(signum) is before[signum] for signum in (signal.SIGINT, signal.SIGTERM)])
    time.sleep(60)


@pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")
async def test_a_forked_child_gets_the_handlers_found_before(sigterm: None) -> None:
    # A multiprocessing child (fork start method) of a process serving streams runs none of its
    # event loops: with the stream's handlers it ignored its first SIGTERM, so terminate() failed.
    signums = (signal.SIGINT, signal.SIGTERM)
    before = {signum: signal.getsignal(signum) for signum in signums}
    context = multiprocessing.get_context("fork")
    stream = EventStream()
    with anyio.fail_after(30):
        async with stream:  # handle_signals: installed here, in the main thread
            with stream.close_on_signals():  # and the explicit form above them
                assert [signal.getsignal(signum) is before[signum] for signum in signums] == [False, False]
                parent_end, child_end = context.Pipe()
                child = context.Process(target=report_handlers_and_wait, args=(child_end, before))
                child.start()
                try:
                    assert await anyio.to_thread.run_sync(parent_end.poll, 10)
                    assert parent_end.recv() == [True, True]
                    child.terminate()
                    await anyio.to_thread.run_sync(child.join, 10)
                    assert child.exitcode == -signal.SIGTERM
                finally:
                    if child.is_alive():
                        child.kill()
                        child.join()
                # The parent keeps its handlers.
                assert [signal.getsignal(signum) is before[signum] for signum in signums] == [False, False]
        assert [signal.getsignal(signum) is before[signum] for signum in signums] == [True, True]


async def test_sigterm_closes_a_stream_whose_client_was_left_behind(sigterm: None) -> None:
    # The relay closes streams in a callback of the event loop, outside any task: closing a
    # left-behind subscriber read anyio's clock there, which failed on asyncio, so the
    # streams were never closed and the signal never reached the server's handler.
    stream = EventStream(buffer_size=2, send_timeout=30, shutdown_grace=0.5)
    recorder = Recorder(stream)
    signal.signal(signal.SIGTERM, recorder)
    with anyio.fail_after(10):
        async with open_stream(stream("c")) as paused:
            await stream.wait_subscribers(1, "c")
            (subscriber,) = stream._hub._subscribers
            count = 0
            while subscriber.stalled is None:  # it reads nothing: it is left behind
                await stream.publish_event("c", {"data": count})
                count += 1
            # As under a server: the handler runs outside the test runner's context (in which
            # anyio would find its event loop even from a loop callback).
            contextvars.Context().run(signal.raise_signal, signal.SIGTERM)
            await recorder.called.wait()  # once its response has ended (cut after the grace)
            await read_to_end(paused)
    assert recorder.calls == [(signal.SIGTERM, 0)]


class Stuck:
    """A registered stream (the relay's interface) whose response never finishes ending."""

    def __init__(self) -> None:
        self.closed_at: list[float] = []

    def _signal_close(self, now: float) -> None:
        self.closed_at.append(now)

    def _signal_done(self) -> bool:
        return False


@pytest.fixture
def sigint() -> Iterator[None]:
    original = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, original)


@pytest.mark.parametrize(
    ("signum", "raised"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, RuntimeError)],
    ids=["SIGINT", "SIGTERM"],
)
async def test_a_previous_handler_of_an_ended_loop_still_lets_ctrl_c_interrupt(
    sigint: None, sigterm: None, signum: int, raised: type[BaseException]
) -> None:
    # The handler left behind by an event loop that has ended (trio raises RunFinishedError,
    # a RuntimeError): Ctrl+C must still interrupt; any other signal's error is not hidden.
    calls: list[int] = []

    def ended_loop_handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)
        raise RuntimeError("the run has finished")

    signal.signal(signum, ended_loop_handler)
    stuck = Stuck()
    relay = watch(stuck, None)
    assert relay is not None
    try:
        assert signal.getsignal(signum) is not ended_loop_handler  # the relay chained over it
        with anyio.fail_after(10):
            signal.raise_signal(signum)
            while not stuck.closed_at:  # the relay closes the streams in a loop callback
                await anyio.lowlevel.checkpoint()
        assert calls == []  # waiting for the stream to end
        with pytest.raises(raised) as caught:
            signal.raise_signal(signum)  # the user insists: passed on at once
        assert caught.type is raised
        assert calls == [signum]  # the first one raised: the second is not passed on
        assert signal.getsignal(signum) is ended_loop_handler  # given back
    finally:
        release(stuck, relay)


async def test_outside_the_main_thread_nothing_is_installed(sigterm: None) -> None:
    recorder = Recorder()
    signal.signal(signal.SIGTERM, recorder)
    stuck = Stuck()
    assert await anyio.to_thread.run_sync(watch, stuck, None) is None
    assert current_handler_is(recorder)
    signal.raise_signal(signal.SIGTERM)
    assert recorder.calls == [(signal.SIGTERM, 0)]
    assert stuck.closed_at == []


async def test_a_signal_between_two_handlers_being_installed_closes_the_streams(
    sigterm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGINT comes right after the relay's SIGINT handler went in, before its SIGTERM one: it
    # closes the streams, then reaches the server's handler, and both handlers are given back.
    chat = EventStream(shutdown_event={"event": "shutdown"})
    recorder = Recorder(chat)
    original_sigint = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, recorder)
    signal.signal(signal.SIGTERM, recorder)
    install = signal.signal

    def install_then_interrupt(signum: int, handler: Any) -> Any:
        previous = install(signum, handler)
        if signum == signal.SIGINT and previous is recorder:  # the relay's first handler
            signal.raise_signal(signal.SIGINT)  # (handled in this thread at once)
        return previous

    monkeypatch.setattr(signal, "signal", install_then_interrupt)
    try:
        with anyio.fail_after(10):
            async with open_stream(chat("room")) as response:  # the first request installs them
                monkeypatch.undo()
                endings = await read_to_end(response)
                await recorder.called.wait()
    finally:
        signal.signal(signal.SIGINT, original_sigint)
    assert endings == ["stream-open", "shutdown"]
    assert recorder.calls == [(signal.SIGINT, 0)]  # after the stream had ended
    assert current_handler_is(recorder)  # SIGTERM's given back too
