"""Publishing from other threads: refused with a clear error, and the supported ways.

Every test runs on asyncio and trio, with real threads (``threading.Thread``)
and a real subscriber (eventstream.testing.open_stream) in the test's event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from eventstream import EventStream, ServerSentEvent
from eventstream._lifecycle._loop import _POLL, LoopBinding
from eventstream.testing import StreamResponse, open_stream

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


async def in_thread(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a new thread (not one of anyio's workers); return its result or raise its error."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = func()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="publisher-thread")
    thread.start()
    # The event loop stays free (publish_event_threadsafe needs it) while a worker waits for the thread.
    await anyio.to_thread.run_sync(thread.join, 10)
    assert not thread.is_alive(), "the thread did not finish in 10 s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


async def next_message(response: StreamResponse) -> ServerSentEvent:
    while (event := await response.receive_event()).event in ("stream-open", "keep-alive"):
        pass
    return event


async def test_publish_event_from_another_threads_loop_is_refused(anyio_backend: str) -> None:
    stream = EventStream()
    with anyio.fail_after(15):
        async with open_stream(stream("c")) as response:
            await stream.wait_subscribers(1, "c")

            def publish_in_own_loop() -> None:
                anyio.run(stream.publish_event, "c", {"event": "m", "data": "lost"}, backend=anyio_backend)

            with pytest.raises(RuntimeError) as caught:
                await in_thread(publish_in_own_loop)
            message = str(caught.value)
            assert "publish_event was called from thread 'publisher-thread'" in message
            assert "publish_event_threadsafe" in message
            assert "anyio.from_thread.run" in message
            # Nothing was numbered, kept or queued: the next event is the loop's own.
            assert stream.statistics().events_published == 0
            await stream.publish_event("c", {"event": "m", "data": "from the loop"})
            assert (await next_message(response)).json() == "from the loop"
            assert stream.statistics().events_published == 1


async def test_channel_writers_and_publishers_are_checked_too(anyio_backend: str) -> None:
    stream = EventStream()
    with anyio.fail_after(15):
        async with open_stream(stream("c")):
            await stream.wait_subscribers(1, "c")
            publisher = stream.get_channel_publisher("c")
            writer = stream.channel_writer("c")
            for publish in (publisher.publish_event, writer.send):

                def run(publish: Any = publish) -> None:
                    anyio.run(publish, {"event": "m"}, backend=anyio_backend)

                with pytest.raises(RuntimeError, match="publish_event_threadsafe"):
                    await in_thread(run)
    assert stream.statistics().events_published == 0


async def test_publish_event_threadsafe(anyio_backend: str) -> None:
    stream = EventStream()
    with anyio.fail_after(15):
        async with open_stream(stream("c")) as response:
            await stream.wait_subscribers(1, "c")
            await in_thread(lambda: stream.publish_event_threadsafe("c", {"event": "m", "data": 1}))
            # It returned once the event was in the subscriber's buffer: it is there now.
            with anyio.fail_after(1):
                assert (await next_message(response)).json() == 1
            # Errors of the event reach the calling thread; nothing is sent.
            with pytest.raises(ValueError, match="CR, LF or NUL"):
                await in_thread(lambda: stream.publish_event_threadsafe("c", {"event": "a\nb"}))
            with pytest.raises(ValueError, match="channel name"):
                await in_thread(lambda: stream.publish_event_threadsafe("", {"event": "m"}))
            await stream.publish_event("c", {"event": "m", "data": 2})
            assert (await next_message(response)).json() == 2


async def test_anyio_from_thread_with_the_loops_token(anyio_backend: str) -> None:
    # The documented alternative: the app keeps its loop's token and publishes through anyio.
    stream = EventStream()
    token = anyio.lowlevel.current_token()
    with anyio.fail_after(15):
        async with open_stream(stream("c")) as response:
            await stream.wait_subscribers(1, "c")

            def publish() -> None:
                anyio.from_thread.run(stream.publish_event, "c", {"event": "m", "data": "x"}, token=token)

            await in_thread(publish)
            with anyio.fail_after(1):
                assert (await next_message(response)).json() == "x"


async def test_threadsafe_in_the_loops_own_thread_is_refused(anyio_backend: str) -> None:
    stream = EventStream()
    async with stream:
        with pytest.raises(RuntimeError, match=r"await stream\.publish_event"):
            stream.publish_event_threadsafe("c", {"event": "m"})


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_threadsafe_after_the_loop_ended_is_refused(backend: str) -> None:
    stream = EventStream()
    # The stream is used (and bound) in a thread's event loop, which then ends.
    thread = threading.Thread(
        target=lambda: anyio.run(stream.publish_event, "c", {"event": "m"}, backend=backend)
    )
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert stream.statistics().events_published == 1
    with pytest.raises(anyio.RunFinishedError, match="already finished"):  # a RuntimeError
        stream.publish_event_threadsafe("c", {"event": "m"})
    assert stream.statistics().events_published == 1


def test_threadsafe_before_any_event_loop_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no event loop has used this EventStream yet"):
        EventStream().publish_event_threadsafe("c", {"event": "m"})


async def test_a_running_loop_keeps_the_stream_even_without_subscribers(anyio_backend: str) -> None:
    # Whether it fails does not depend on who happens to be connected.
    stream = EventStream()
    with anyio.fail_after(15):
        await stream.publish_event("c", {"event": "m", "data": 0})  # binds to this loop

        def publish_in_own_loop() -> None:
            anyio.run(stream.publish_event, "c", {"event": "m", "data": 1}, backend=anyio_backend)

        with pytest.raises(RuntimeError, match="publish_event_threadsafe"):
            await in_thread(publish_in_own_loop)
    assert stream.statistics().events_published == 1


async def test_a_stream_whose_loop_ended_moves_to_the_next(anyio_backend: str) -> None:
    # Used by a thread's event loop that has ended since: nothing ties the stream to it.
    stream = EventStream()
    with anyio.fail_after(15):

        def publish_in_own_loop() -> None:
            anyio.run(stream.publish_event, "c", {"event": "m", "data": 0}, backend=anyio_backend)

        await in_thread(publish_in_own_loop)
        await stream.publish_event("c", {"event": "m", "data": 1})
        async with open_stream(stream("c"), headers={"last-event-id": f"{stream._epoch}-1"}) as response:
            # History kept both events, numbered in order across the two loops.
            assert (await next_message(response)).json() == 1
            await stream.publish_event("c", {"event": "m", "data": 2})
            assert (await next_message(response)).json() == 2


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("closed", [True, False], ids=["stream-closed", "loop-just-ends"])
def test_threads_publishing_while_the_loop_ends_all_return(backend: str, closed: bool) -> None:
    # 80 threads publish in a loop while the event loop ends (with `async with stream`
    # closing first, or with the loop's main task simply returning): each one's current
    # call either publishes or fails, none waits for ever, and later calls are refused.
    stream = EventStream()
    threads_count = 80
    go = threading.Event()
    outcomes: list[BaseException | None] = [None] * threads_count

    def publish_until_refused(index: int) -> None:
        go.wait(10)
        try:
            while True:
                stream.publish_event_threadsafe("c", {"event": "m", "data": index})
        except BaseException as exc:
            outcomes[index] = exc

    threads = [
        threading.Thread(target=publish_until_refused, args=(i,), daemon=True) for i in range(threads_count)
    ]

    async def main() -> None:
        async def until_busy() -> bool:
            return stream.statistics().events_published >= 4 * threads_count

        if closed:
            async with stream:
                go.set()
                await wait_until(until_busy)
        else:
            await stream.publish_event("c", {"event": "m"})  # binds the stream to this loop
            go.set()
            await wait_until(until_busy)

    for thread in threads:
        thread.start()
    anyio.run(main, backend=backend)
    for thread in threads:
        thread.join(5)  # far more than the few tenths of a second a thread takes to notice
    assert [t.name for t in threads if t.is_alive()] == []
    for outcome in outcomes:
        # RunFinishedError: the loop ended (the call never ran, or was cut off by the loop's
        # end); ClosedResourceError: the call ran after `async with stream` closed it.
        allowed = (anyio.RunFinishedError, anyio.ClosedResourceError) if closed else anyio.RunFinishedError
        assert isinstance(outcome, allowed), repr(outcome)
    # Nothing is queued for a loop that has ended: a new call (from a thread) is refused at once.
    thread = threading.Thread(target=publish_until_refused, args=(0,))
    go.set()
    thread.start()
    thread.join(5)
    assert isinstance(outcomes[0], anyio.RunFinishedError)


async def test_a_threadsafe_call_outlasting_the_poll_interval_is_awaited(anyio_backend: str) -> None:
    # The waiting thread wakes every _POLL seconds to check that the loop still runs; a call
    # still running then (a slow publish: a remote broker) is waited for, not given up.
    binding = LoopBinding()
    binding.bind()
    steps: list[str] = []

    async def slow_publish(label: str) -> None:
        steps.append(f"{label} started")
        await anyio.sleep(_POLL * 4)  # the slow call itself, not a wait for something
        steps.append(f"{label} done")

    async def failing_publish() -> None:
        await anyio.sleep(_POLL * 4)
        raise ValueError("refused by the broker")

    with anyio.fail_after(10):
        await in_thread(lambda: binding.run_from_thread(slow_publish, "first"))
        assert steps == ["first started", "first done"]
        with pytest.raises(ValueError, match="refused by the broker"):
            await in_thread(lambda: binding.run_from_thread(failing_publish))
