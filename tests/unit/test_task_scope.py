"""TaskScope, the asyncio-only cancel scope of a streaming response: entered only in a task,
cancelling once, and a no-op once left. (asyncio only: it is the asyncio path of the library;
trio's responses use trio's own scopes.)"""

from __future__ import annotations

import asyncio
import math
import sys

import pytest

from eventstream._backends._task_scope import TaskScope

# Task.uncancel() came with Python 3.11; before, the library uses anyio's cancel scope instead.
pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskScope needs Python 3.11")


def test_outside_a_task_it_refuses_to_enter() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        entered = loop.create_future()

        def callback() -> None:  # a callback of the loop runs in no task
            try:
                TaskScope().__enter__()
            except RuntimeError as exc:
                entered.set_result(str(exc))
            else:
                entered.set_result("entered")

        loop.call_soon(callback)
        assert await entered == "TaskScope must be entered in an asyncio task"

    asyncio.run(main())


def test_it_cancels_once_and_not_after_the_block() -> None:
    async def main() -> None:
        scope = TaskScope()
        with scope:
            scope.cancel()
            scope.cancel()  # once: a second call cancels nothing more
            with pytest.raises(asyncio.CancelledError):
                await asyncio.sleep(10)
            raise asyncio.CancelledError  # what the block does with the cancellation it got
        # Left: the cancellation was the scope's own, swallowed; the task was uncancelled once.
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0  # type: ignore[attr-defined]  # Python 3.11+
        scope.cancel()  # a no-op outside the block
        await asyncio.sleep(0)
        assert scope.deadline == math.inf

    asyncio.run(main())


def test_a_deadline_cancels_the_block() -> None:
    async def main() -> bool:
        scope = TaskScope()
        loop = asyncio.get_running_loop()
        with scope:
            scope.deadline = loop.time() + 0.01
            await asyncio.sleep(10)
            return False
        return scope.deadline != math.inf

    assert asyncio.run(asyncio.wait_for(main(), 5))
