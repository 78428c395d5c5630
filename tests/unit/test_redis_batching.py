"""BatchQueue, in process: the sending of concurrent publishes in batches, with a recording send."""

from __future__ import annotations

import anyio
import pytest

from eventstream._redis._batching import BatchQueue, Pending

pytestmark = pytest.mark.anyio


class _Engine:
    """A send that records its batches, holds the first one until released, and may fail."""

    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = anyio.Event()
        self.first_taken = anyio.Event()
        self.error = error

    async def send(self, batch: list[Pending]) -> None:
        self.batches.append([item.id or "" for item in batch])
        if not self.first_taken.is_set():
            self.first_taken.set()
            await self.release.wait()
        if self.error is not None:
            raise self.error
        for item in batch:
            item.done = True
            item.wake()


async def test_a_queue_never_bound_to_the_loop_says_so_and_loses_no_event() -> None:
    engine = _Engine()
    queue = BatchQueue(engine.send, batch_size=10, senders=1)  # no bind()
    first, second = Pending("c", b"data: 1\n", "1"), Pending("c", b"data: 2\n", "2")
    async with anyio.create_task_group() as tg:
        tg.start_soon(queue.submit, first)
        with anyio.fail_after(5):
            await engine.first_taken.wait()
        # The only sender is busy: the second call would wait, and cannot without a waiter.
        with pytest.raises(RuntimeError, match=r"bind\(\) was not called"):
            await queue.submit(second)
        engine.release.set()
    assert first.done
    assert first.error is None
    assert not second.done
    assert engine.batches == [["1"]]  # the refused call's event was withdrawn, not sent


async def test_a_send_that_raises_fails_its_whole_batch_and_strands_no_waiter() -> None:
    bug = ValueError("a bug in the send")
    engine = _Engine(error=bug)
    queue = BatchQueue(engine.send, batch_size=10, senders=1)
    queue.bind()
    items = [Pending("c", b"data: x\n", str(n)) for n in range(3)]
    raised: list[BaseException] = []

    async def publish(item: Pending) -> None:
        try:
            await queue.submit(item)
        except ValueError as exc:
            raised.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(publish, items[0])
            await engine.first_taken.wait()
            for item in items[1:]:  # queued in this order (one at a time: trio starts tasks in any order)
                tg.start_soon(publish, item)
                await anyio.wait_all_tasks_blocked()
            engine.release.set()
    # The first call sent its own batch and raised; the two waiting ones were sent together
    # by the next sender, which raised too; the other one returned with the error on its
    # event: every call returned, every event is done and failed.
    assert engine.batches == [["0"], ["1", "2"]]
    assert raised == [bug, bug]
    assert all(item.done for item in items)
    assert [item.error for item in items] == [bug, bug, bug]
