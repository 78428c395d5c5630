"""BatchQueue, in process: the sending of concurrent publishes in batches, with a recording send."""

from __future__ import annotations

import asyncio
import random

import anyio
import anyio.lowlevel
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


async def test_calls_asked_to_send_keep_the_place_and_none_is_lost_whatever_is_cancelled() -> None:
    # Many calls, some cancelled while they wait (maybe just asked to send): at most
    # `senders` batches are ever out at once, every call that was not cancelled gets its
    # outcome, each event is sent once at most (a cancelled call's, only if its batch was
    # already out), and no place is lost (two calls made afterwards are both sent at once).
    out = 0
    most = 0
    batches: list[str] = []
    both_out = anyio.Event()

    async def send(batch: list[Pending]) -> None:
        nonlocal out, most
        out += 1
        most = max(most, out)
        if batch[0].channel == "after":  # the last two calls: each waits until both are out
            if out == 2:
                both_out.set()
            with anyio.move_on_after(5):  # (a send is shielded: a lost place would hang here)
                await both_out.wait()
        for _ in range(random.randrange(3)):  # a round trip: others run meanwhile
            await anyio.lowlevel.checkpoint()
        out -= 1
        batches.extend(item.id or "" for item in batch)
        for item in batch:
            item.done = True
            item.wake()

    queue = BatchQueue(send, batch_size=3, senders=2)
    queue.bind()
    items: list[Pending] = []
    cancelled: list[Pending] = []

    async def publisher(n: int) -> None:
        for k in range(10):
            item = Pending("c", b"data: x\n", f"{n}-{k}")
            items.append(item)
            with anyio.move_on_after(random.choice([0, 0.0002, 1])) as scope:
                await queue.submit(item)
            if scope.cancelled_caught:
                cancelled.append(item)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(30):
                tg.start_soon(publisher, n)
        last = [Pending("after", b"data: x\n", f"last-{n}") for n in range(2)]
        async with anyio.create_task_group() as tg:
            for item in last:
                tg.start_soon(queue.submit, item)
    assert most <= 2
    assert all(item.done for item in items if item not in cancelled)
    assert 0 < len(cancelled) < len(items)
    assert both_out.is_set()
    assert all(item.done for item in last)
    assert sorted(batches) == sorted(item.id or "" for item in [*items, *last] if item.done)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (trio has no cancellation besides its scopes)
async def test_a_sender_cancelled_by_asyncio_itself_strands_no_waiter(anyio_backend: str) -> None:
    # The shield keeps anyio's cancellation out of a send for others, not asyncio's own
    # task.cancel() (a server cancelling its tasks as it stops): the batch it was sending
    # then fails, and the calls whose events were in it return with that error.
    engine = _Engine()
    queue = BatchQueue(engine.send, batch_size=10, senders=1)
    queue.bind()
    a, b, c = (Pending("c", b"data: x\n", name) for name in "abc")
    with anyio.fail_after(5):
        first = asyncio.ensure_future(queue.submit(a))
        await engine.first_taken.wait()  # the only sender is out with [a]; b and c queue
        others = [asyncio.ensure_future(queue.submit(item)) for item in (b, c)]
        await anyio.wait_all_tasks_blocked()
        engine.first_taken, held, engine.release = anyio.Event(), engine.release, anyio.Event()
        held.set()  # [a] is answered: b's call sends [b, c] in a's place, and that one is held
        await first
        await engine.first_taken.wait()
        others[0].cancel()  # b's call, sending for c
        with pytest.raises(asyncio.CancelledError):
            await others[0]
        await others[1]  # c's call returns: it does not wait for ever
    assert engine.batches == [["a"], ["b", "c"]]
    assert a.done
    assert a.error is None
    for item in (b, c):
        assert item.done
        assert isinstance(item.error, RuntimeError)
        assert "may or may not have been sent" in str(item.error)


async def test_waiting_calls_use_the_same_waiters_again_and_let_go_of_them() -> None:
    # A waiter made per wait lived on after it: asyncio's clock kept each one until
    # its call's deadline came (request_timeout, seconds later). Under a flood of new
    # streams, thousands a second lived long enough to reach the collector's oldest
    # generation, and made its full passes (tens of milliseconds each) come several
    # times as often. The queue's waiters are used again, from call to call.
    rounds: list[list[object]] = []  # (strong references: no address is reused meanwhile)

    class Recording(_Engine):
        async def send(self, batch: list[Pending]) -> None:
            rounds[-1].extend(item.waiter for item in batch if item.waiter is not None)
            await super().send(batch)

    engine = Recording()
    queue = BatchQueue(engine.send, batch_size=10, senders=1)
    queue.bind()
    for _ in range(2):
        rounds.append([])
        engine.release, engine.first_taken = anyio.Event(), anyio.Event()
        items = [Pending("c", b"x", str(n)) for n in range(40)]
        until = anyio.current_time() + 3600
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(queue.submit, item, until)
            await engine.first_taken.wait()
            engine.release.set()
        assert all(item.done and item.waiter is None for item in items)
    first, second = ({id(waiter) for waiter in waiters} for waiters in rounds)
    assert len(first) >= 20, len(first)  # calls waited
    assert len(second) >= 20, len(second)
    # The second round's calls waited on the first round's waiters: no more waiters in all
    # than calls waiting at once (40), where a waiter per wait made one for each.
    assert len(first | second) < len(items), (len(first), len(second), len(first | second))
