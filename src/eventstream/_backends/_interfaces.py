"""What each backend's waiter and disconnect watch provide, as protocols (no backend imported here).

The backends (``_asyncio.py``, ``_trio.py``) implement them; ``_waiter.py`` and
``_disconnect.py`` choose the backend's implementation and say what it promises.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

__all__ = ["Connection", "Waiter", "Watch"]


class Waiter(Protocol):
    """One task's reusable wake-up, with a deadline that moves (see ``_waiter.py``)."""

    def time(self) -> float:
        """The event loop's clock (the one deadlines are on)."""

    def wake(self) -> None:
        """Wake the waiting task, if any (it then returns ``True`` from :meth:`wait`)."""

    def wait(self, deadline: float) -> Awaitable[bool]:
        """Wait until woken (``True``) or until ``deadline`` (``False``; ``math.inf``: never).

        Cancellation: the wait ends at once; the waiter can wait again.
        """

    def start_timer(self, nursery: Any) -> None:
        """On trio, run this waiter's deadlines in a task of ``nursery`` (cheaper than a scope per wait).

        On asyncio nothing to do: one clock per event loop runs them.
        """

    def close(self) -> None:
        """Release the timer. The waiter must not be used afterwards."""


class _Hub(Protocol):
    def drop_if_overdue(self, subscriber: Any) -> None:
        """Drop ``subscriber`` if it was left behind ``send_timeout`` ago."""


class Connection(Protocol):
    """What the watch needs of the response (``_connection.Connection``)."""

    @property
    def hub(self) -> _Hub: ...

    @property
    def subscriber(self) -> Any: ...

    #: The response's last message is being sent: a disconnect no longer cancels anything.
    completing: bool


class Watch(Protocol):
    """Between :meth:`start` and :meth:`stop`, the client's disconnect cancels :attr:`scope`.

    The scope is also the subscriber's (the hub moves its deadline to drop a
    client that takes nothing). Start it in the response's task, and stop it
    there with what the response raised: ``async with`` does that, and so does
    :meth:`Connection.run <eventstream._serve._connection.Connection.run>` by hand
    (``async with`` keeps its bound ``__aexit__`` alive, 64 bytes, for as long
    as the connection is open).

    Raises:
        Exception: from :meth:`stop`, what ``receive()`` raised other than
            ``OSError`` (the server's fault; ``OSError`` means the client is gone).

    Cancellation: cancelling the enclosing scope cancels the response as
    usual; the pending ``receive()`` is cancelled by :meth:`stop`.
    """

    #: An anyio (asyncio) or trio cancel scope: ``deadline``, ``cancel()``.
    scope: Any

    async def __aenter__(self) -> Watch: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        """:meth:`stop` with what the block raised."""

    async def start(self, keep_alive: bool = False) -> Any:
        """Start watching (what ``async with`` does on entering); returns :attr:`scope`.

        ``keep_alive``: :meth:`start_timer` will be called (on trio, the
        watcher then waits for each message in a cancel scope, for the timer).
        """

    def start_timer(self, waiter: Waiter) -> None:
        """Run ``waiter``'s deadlines beside the response until :meth:`stop`.

        On trio, in the watcher task when ``receive()`` may be cancelled
        safely, else in a timer task of the nursery; on asyncio, the event
        loop's clock runs them.
        """

    async def stop(self, exc: BaseException | None) -> bool:
        """Stop watching (what ``async with`` does on leaving, ``exc`` raised in the block).

        Returns whether ``exc`` is swallowed (the cancellation the watch caused).
        """
