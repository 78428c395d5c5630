"""The reusable waiter: woken, or out at its deadline, which moves; one shared clock on asyncio."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import sniffio

from eventstream._backends import Waiter, current_waiter

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def timer_nursery(timed: bool) -> AsyncIterator[Any]:
    """Where waiters run their timers: a trio nursery (cancelled on leaving), or none (asyncio; untimed)."""
    if not timed or sniffio.current_async_library() != "trio":
        yield None
        return
    import trio

    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


async def woken_wait(waiter: Waiter, deadline: float) -> bool:
    """``waiter.wait(deadline)``, woken by another task once every task is blocked."""
    async with anyio.create_task_group() as tg:

        async def wake_soon() -> None:
            await anyio.wait_all_tasks_blocked()
            waiter.wake()

        tg.start_soon(wake_soon)
        woken = await waiter.wait(deadline)
    return woken


def timed_waiter(nursery: Any) -> Waiter:
    waiter = current_waiter()
    if nursery is not None:
        waiter.start_timer(nursery)
    return waiter


async def test_a_wake_ends_the_wait_with_true_and_the_deadline_with_false() -> None:
    waiter = current_waiter()
    async with anyio.create_task_group() as tg:
        results: list[bool] = []

        async def wait() -> None:
            results.append(await waiter.wait(math.inf))

        tg.start_soon(wait)
        await anyio.wait_all_tasks_blocked()
        waiter.wake()
    assert results == [True]
    deadline = waiter.time() + 0.05
    assert await waiter.wait(deadline) is False
    assert waiter.time() >= deadline - 0.002  # a loop may run a timer within its clock's resolution
    waiter.close()


@pytest.mark.parametrize("timed", [True, False], ids=["timer", "scope"])
async def test_waiters_with_many_deadlines_each_run_out_at_their_own(timed: bool) -> None:
    async with timer_nursery(timed) as nursery:
        await run_out_at_many_deadlines(nursery)


async def run_out_at_many_deadlines(nursery: Any) -> None:
    start = anyio.current_time()
    # Out of order, some equal, some waiters woken before their deadline.
    offsets = [0.09, 0.03, 0.06, 0.03, 0.12, 0.01, 0.06, 0.2, 0.15]
    woken = {2, 7}
    outcomes: dict[int, tuple[bool, float]] = {}
    waiters = [timed_waiter(nursery) for _ in offsets]

    async def wait(index: int) -> None:
        waiter = waiters[index]
        result = await waiter.wait(start + offsets[index])
        outcomes[index] = (result, waiter.time())
        waiter.close()

    async with anyio.create_task_group() as tg:
        for index in range(len(offsets)):
            tg.start_soon(wait, index)
        await anyio.wait_all_tasks_blocked()
        for index in woken:
            waiters[index].wake()
    for index, offset in enumerate(offsets):
        result, at = outcomes[index]
        if index in woken:
            assert result is True
        else:
            assert result is False
            assert at >= start + offset - 0.002


@pytest.mark.parametrize("timed", [True, False], ids=["timer", "scope"])
async def test_a_deadline_moved_later_is_kept_and_an_earlier_one_too(timed: bool) -> None:
    async with timer_nursery(timed) as nursery:
        await move_deadlines(timed_waiter(nursery))


async def move_deadlines(waiter: Waiter) -> None:
    start = waiter.time()
    # A wait armed for 0.05 s is woken; the next wait's deadline is later: not out at 0.05 s.
    assert await woken_wait(waiter, start + 0.05) is True
    assert await waiter.wait(start + 0.15) is False
    assert waiter.time() >= start + 0.15 - 0.002
    # After a far deadline, a near one: out at the near one.
    assert await woken_wait(waiter, waiter.time() + 3600) is True
    near = waiter.time() + 0.05
    with anyio.fail_after(5):
        assert await waiter.wait(near) is False
    assert waiter.time() >= near - 0.002
    waiter.close()


@pytest.mark.parametrize("timed", [True, False], ids=["timer", "scope"])
async def test_a_cancelled_wait_ends_at_once_and_the_waiter_waits_again(timed: bool) -> None:
    async with timer_nursery(timed) as nursery:
        waiter = timed_waiter(nursery)
        with anyio.move_on_after(0.02) as scope:
            await waiter.wait(waiter.time() + 3600)
        assert scope.cancelled_caught
        deadline = waiter.time() + 0.02
        assert await waiter.wait(deadline) is False
        # Woken, after a wait that ran out.
        assert await woken_wait(waiter, waiter.time() + 3600) is True
        waiter.close()


async def test_closed_waiters_leave_nothing_due_on_the_clock(anyio_backend_name: str) -> None:
    waiters: list[Waiter] = [current_waiter() for _ in range(1000)]

    async def wait_and_close(waiter: Waiter) -> None:
        with anyio.move_on_after(0):
            await waiter.wait(waiter.time() + 3600)
        waiter.close()

    async with anyio.create_task_group() as tg:
        for waiter in waiters:
            tg.start_soon(wait_and_close, waiter)
    fresh = current_waiter()
    if anyio_backend_name == "asyncio":  # one clock for the loop's waiters
        clock = waiters[0]._clock  # type: ignore[attr-defined]
        assert fresh._clock is clock  # type: ignore[attr-defined]
        # Closed waiters are swept off its heap, not kept for an hour.
        assert len(clock._heap) <= 128
    # A new waiter still runs out at its deadline.
    assert await fresh.wait(fresh.time() + 0.02) is False
    fresh.close()


async def test_a_deadline_re_armed_when_due_does_not_hold_back_an_earlier_one() -> None:
    start = anyio.current_time()
    mover, other = current_waiter(), current_waiter()
    ended: dict[str, float] = {}

    async def move() -> None:
        # Armed for 0.02 s, woken, then waiting until 0.5 s: re-armed when 0.02 s comes due.
        assert await woken_wait(mover, start + 0.02) is True
        assert await mover.wait(start + 0.5) is False
        ended["mover"] = anyio.current_time()

    async def wait_other() -> None:
        assert await other.wait(start + 0.1) is False
        ended["other"] = anyio.current_time()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(move)
            tg.start_soon(wait_other)
    assert start + 0.1 - 0.002 <= ended["other"] < start + 0.4  # not held back until 0.5 s
    assert ended["mover"] >= start + 0.5 - 0.002
    mover.close()
    other.close()


# -- asyncio: the waiter is the future its task awaits ------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_cancelled_while_waiting_gets_its_message_and_nothing_more() -> None:
    import asyncio

    waiter = current_waiter()
    stray: list[str] = []

    async def wait_then_carry_on() -> None:
        with pytest.raises(asyncio.CancelledError) as raised:
            await waiter.wait(math.inf)
        assert raised.value.args == ("going away",)
        if sys.version_info >= (3, 11):
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        # The one cancellation was used up: later awaits are not cancelled again.
        for _ in range(3):
            await asyncio.sleep(0)
        assert await woken_wait(waiter, waiter.time() + 3600) is True
        stray.append("carried on")

    task = asyncio.get_running_loop().create_task(wait_then_carry_on())
    await anyio.wait_all_tasks_blocked()
    assert task.cancel("going away")
    with anyio.fail_after(5):
        await task
    assert stray == ["carried on"]
    waiter.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancel_scope_leaves_no_stray_cancellation_after_its_waiter() -> None:
    # anyio keeps cancelling a task in a cancelled scope while it waits on a
    # future that is not done; the waiter must stop being that future once
    # the task has left the scope.
    waiter, other = current_waiter(), current_waiter()
    after: list[bool] = []

    async def wait_in_scope() -> None:
        with anyio.CancelScope() as scope:
            scope_box.append(scope)
            await waiter.wait(math.inf)
        after.append(await woken_wait(other, other.time() + 3600))
        for _ in range(5):
            await anyio.sleep(0)
        after.append(True)

    scope_box: list[anyio.CancelScope] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_in_scope)
            await anyio.wait_all_tasks_blocked()
            scope_box[0].cancel()
    assert scope_box[0].cancelled_caught
    assert after == [True, True]
    waiter.close()
    other.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_task_wakes_to_a_result_once_even_if_woken_and_expired_together() -> None:
    waiter = current_waiter()
    results: list[bool] = []

    async def wait() -> None:
        results.append(await waiter.wait(waiter.time() + 0.01))
        results.append(await waiter.wait(waiter.time() + 0.01))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await anyio.wait_all_tasks_blocked()
            waiter.wake()
            waiter.wake()  # a second wake of the same wait does nothing
    assert results == [True, False]
    waiter.close()
