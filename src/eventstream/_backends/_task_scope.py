"""A cancel scope for the one asyncio task of a streaming response, in 80 bytes.

anyio's cancel scope (two sets, a weak reference, delivery retries) costs
about 600 bytes, for as long as the connection stays open, idle or not. A
streaming response needs less of it: its own task cancelled when the client
is gone or at a deadline the hub moves. :class:`TaskScope` does that with
``Task.cancel()`` and, on leaving, ``Task.uncancel()`` (Python 3.11+), as
``asyncio.timeout`` does: the ``CancelledError`` it caused ends the block
quietly; one that someone else caused (the server, an enclosing anyio scope)
goes on.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

__all__ = ["TaskScope"]


class TaskScope:
    """Cancel the current asyncio task, now (:meth:`cancel`) or at :attr:`deadline`.

    A sync context manager around the code to cancel. Leaving the block
    swallows the cancellation this scope caused, unless another one is also
    pending on the task.

    Raises:
        RuntimeError: entered outside an asyncio task.
    """

    __slots__ = ("_cancelled", "_deadline", "_task", "_timer")

    def __init__(self) -> None:
        self._task: asyncio.Task[object] | None = None
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = False

    def __enter__(self) -> TaskScope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("TaskScope must be entered in an asyncio task")
        self._task = task
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        task, self._task = self._task, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._cancelled or task is None:
            return False
        # Ours only if nobody else cancelled the task too. (Python 3.11+: before,
        # the endpoint uses anyio's cancel scope.)
        remaining: int = task.uncancel()  # type: ignore[attr-defined]
        return remaining == 0 and isinstance(exc, asyncio.CancelledError)

    @property
    def deadline(self) -> float:
        """When the task is cancelled (the event loop's clock; ``math.inf``: never)."""
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if value != math.inf and task is not None and not self._cancelled:
            self._timer = task.get_loop().call_at(value, self.cancel)

    def cancel(self) -> None:
        """Cancel the task (once; a no-op outside the block). Call it from another task or a callback."""
        task = self._task
        if task is None or self._cancelled:
            return
        self._cancelled = True
        task.cancel()
