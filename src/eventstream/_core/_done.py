"""An awaitable that is done at once, for the hub's publishes that need not wait."""

from __future__ import annotations

from collections.abc import Generator
from typing import Final

__all__ = ["DONE"]


class _Done:
    """An awaitable that is done at once: awaiting it neither yields nor builds a coroutine."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return _EXHAUSTED


# An iterator that is already exhausted stays so: every await of DONE shares it.
_EXHAUSTED: Generator[None, None, None] = (None for _ in ())
next(_EXHAUSTED, None)
#: What ``Hub.publish`` returns when every subscriber had room.
DONE: Final = _Done()
