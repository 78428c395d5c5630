"""Sending concurrent requests together: batches, and who sends them.

Calls that make the same kind of request at the same time (publishes, reads
of channels' histories) queue their items; a few of them (the senders) each
send a batch of what is queued in one request, the others wait for their
item's outcome. A sender stops once its own item is done and asks a waiting
call to take over, so no caller keeps sending for others forever. Requests
of several senders are pipelined on one connection, which the engine runs in
order. No task is started: the callers do the sending.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from .._backends import Waiter, waiter_factory
from .._observe._trace import TRACEPARENT

__all__ = ["BatchQueue", "Pending", "Queued", "Waiters"]


class Queued:
    """One call's item waiting for its batch; the sender marks it done (and sets its outcome)."""

    __slots__ = ("done", "error", "leads", "waiter")

    def __init__(self) -> None:
        #: The waiting call's waiter, while it waits (made then: most never wait).
        self.waiter: Waiter | None = None
        self.leads = False
        self.done = False
        #: A BrokerError from the engine (or, from a bug, any exception).
        self.error: Exception | None = None

    def wake(self) -> None:
        """Wake the call waiting for this item (done, or asked to send); a no-op if none waits."""
        waiter = self.waiter
        if waiter is not None:
            waiter.wake()

    async def wait(self, waiters: Waiters, until: float = math.inf) -> None:
        """Wait for :meth:`wake`, or until ``until`` (the event loop's clock), on a waiter of
        ``waiters``; nothing may be awaited between queueing and this."""
        waiter = self.waiter = waiters.take()
        try:
            await waiter.wait(until)
        finally:
            self.waiter = None  # (a late wake of this item must not reach the waiter's next user)
            waiters.give_back(waiter)


class Waiters:
    """The waiters of one queue's waiting calls, used again from call to call.

    A waiter made per wait lived on after it: asyncio's clock holds each
    waiter's deadline until it comes (a call's deadline is seconds away), so
    under a flood of new streams thousands a second lived long enough to
    reach the garbage collector's oldest generation, and made its full
    passes come several times as often. A waiter used again keeps one entry
    there (a later deadline costs nothing: see ``_backends``).
    """

    __slots__ = ("_free", "_new")

    #: Waiters kept for the next calls at most (the others are closed).
    KEPT = 256

    def __init__(self, new: Callable[[], Waiter]) -> None:
        self._new = new
        self._free: list[Waiter] = []

    def take(self) -> Waiter:
        """A waiter that no call uses."""
        return self._free.pop() if self._free else self._new()

    def give_back(self, waiter: Waiter) -> None:
        """``waiter``'s wait is over: another call may use it."""
        if len(self._free) < self.KEPT:
            self._free.append(waiter)
        else:
            waiter.close()


class Pending(Queued):
    """One publish waiting for its batch; the sender fills in its outcome."""

    __slots__ = ("body", "channel", "deadline", "epoch", "id", "prev_id", "seq", "traceparent")

    def __init__(self, channel: str, body: bytes, event_id: str | None, deadline: float = math.inf) -> None:
        super().__init__()
        self.channel = channel
        self.body = body
        self.id = event_id
        #: When (``time.monotonic()``) its call gives up: the sender fails it then, sent or not.
        self.deadline = deadline
        self.epoch = ""
        self.seq = 0
        self.prev_id = ""
        #: tracing: the publish span's traceparent, sent with the event (see _wire.py).
        self.traceparent = TRACEPARENT.get()


#: The kind of item a queue holds.
Item = TypeVar("Item", bound=Queued)


def _cancelled_sender() -> RuntimeError:
    return RuntimeError(
        "the call sending this item's batch was cancelled by its event loop (shutting down?): "
        "it may or may not have been sent"
    )


def _unbound() -> Waiter:
    raise RuntimeError("BatchQueue.bind() was not called in this event loop")


class BatchQueue(Generic[Item]):
    """Queued items and the calls sending them in batches of up to ``batch_size``."""

    def __init__(
        self, send: Callable[[list[Item]], Awaitable[None]], *, batch_size: int, senders: int
    ) -> None:
        #: Sends one batch and marks every item done (with its outcome); must not raise.
        self._send = send
        self.batch_size = batch_size
        self.senders = senders
        self._pending: list[Item] = []
        self._senders = 0
        self._waiters = Waiters(_unbound)

    def bind(self) -> None:
        """Make waiters for the calling event loop from now on (call when the broker starts)."""
        self._waiters = Waiters(waiter_factory())

    async def submit(self, item: Item, until: float = math.inf) -> None:
        """Return once ``item`` was sent (``item.done``; its outcome is on it), or at ``until``
        (the event loop's clock) if it is still queued then: withdrawn, not done.

        Cancellation: an item still waiting is withdrawn (not sent); a call
        that is sending a batch for others finishes sending it first. A call
        made in a cancelled scope is cancelled before anything is queued (a
        loop of calls that are each sent at once still sees cancellation).
        """
        if self._senders < self.senders:
            # It sends (shielded) at once: see cancellation first. (A waiting
            # call sees it in item.wait(); it raises only if cancelled, so
            # nothing changed meanwhile.)
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._pending.append(item)
            self._senders += 1
            await self._send_until_done(item)
        else:
            self._pending.append(item)
            # Enough calls are sending: one of them sends this one, or asks
            # this call to send (wake without done) when it stops.
            try:
                await item.wait(self._waiters, until)
            except BaseException:  # cancelled while waiting
                if item in self._pending:
                    self._pending.remove(item)  # not sent
                if item.leads:  # asked to send: pass that on
                    self._hand_on()
                raise
            if not item.done and not item.leads:  # its time ran out: withdrawn (if still queued)
                if item in self._pending:
                    self._pending.remove(item)
                return
            if not item.done:  # asked to send, in the place of the call that asked
                await self._send_until_done(item)
            elif item.leads:  # asked, but another sender took it meanwhile: pass that on
                self._hand_on()

    async def _send_until_done(self, item: Item) -> None:
        # Send batches (one request each) until this call's own item is
        # done, then ask a waiting call to go on: no caller sends for others
        # forever. Up to `senders` calls send at once; their batches are
        # pipelined on one connection, which the engine runs in order.
        # Shielded: waiting calls depend on it (bounded by the send's own
        # time limit: publish_timeout, or a read's request_timeout).
        try:
            with anyio.CancelScope(shield=True):
                while not item.done:
                    if self._pending:
                        batch, self._pending = (
                            self._pending[: self.batch_size],
                            self._pending[self.batch_size :],
                        )
                        try:
                            await self._send(batch)
                        except BaseException as exc:  # a bug, or asyncio's task.cancel() (the
                            # shield stops anyio's cancellation only): fail the batch, strand no waiter
                            error = exc if isinstance(exc, Exception) else _cancelled_sender()
                            for queued in batch:
                                if not queued.done:
                                    queued.error, queued.done = error, True
                                    queued.wake()
                            raise
                    else:  # in another call's batch, in flight
                        await item.wait(self._waiters)
        finally:
            self._hand_on()

    def _hand_on(self) -> None:
        # A sender stops: the oldest waiting call takes its place (the place stays taken
        # meanwhile: the calls queued until it runs go in its batch, not in batches of
        # their own); none waiting, the place is free.
        for successor in self._pending:
            if not successor.leads:  # (one asked already has a place)
                successor.leads = True
                successor.wake()
                return
        self._senders -= 1
