"""The fan-out core: channels, subscribers and their bounded buffers.

Each subscriber owns a bounded anyio memory object stream of published
entries (the event encoded once, shared by every subscriber). A publish
offers the entry to every subscriber of the channel with ``send_nowait``.
What happens to a subscriber whose buffer is full is the slow-consumer
policy:

``disconnect`` (default)
    Full subscribers are waited on, all together, under one deadline
    (``send_timeout``); one still full at the deadline is disconnected: its
    stream ends after what it holds, the client reconnects and resumes from
    history. A stalled client delays a publish by at most ``send_timeout``.
``drop-oldest``
    The oldest event in the full buffer is dropped to make room, and the
    client gets ``stream-reset`` before its next events. Publishers never wait.
``block``
    Pure backpressure: the publish waits, without deadline, until every
    subscriber has room. One stalled client stalls the channel.
"""

from __future__ import annotations

import contextlib
import math
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._history import HistoryEntry

if TYPE_CHECKING:
    from ._grip import GripProxyStatistics

SlowConsumerPolicy = Literal["disconnect", "drop-oldest", "block"]
_YIELD_EVERY = 32
_POLICIES = ("disconnect", "drop-oldest", "block")

__all__ = ["EventStreamStatistics", "Hub", "Subscriber"]


@dataclass(frozen=True)
class EventStreamStatistics:
    """A snapshot of an :class:`~eventstream.EventStream`'s state and counters."""

    #: Open subscriptions (one per streaming connection).
    subscribers: int
    #: Subscribers per channel, for channels that have any.
    channels: Mapping[str, int]
    #: Calls to ``publish_event`` (one per event and channel).
    events_published: int
    #: Events written to clients, counted once per client.
    events_delivered: int
    #: Subscribers disconnected because their buffer stayed full past ``send_timeout``.
    subscribers_dropped: int
    #: Events dropped from full buffers under the ``drop-oldest`` policy.
    events_dropped: int = 0
    #: Counters per GRIP proxy, when GRIP is configured.
    grip: tuple[GripProxyStatistics, ...] = field(default=())


class Subscriber:
    """One connection's subscription: its channels and its buffer of encoded events."""

    __slots__ = ("_send", "cancel_scope", "channels", "receive", "reset_pending")

    def __init__(self, channels: tuple[str, ...], buffer_size: int) -> None:
        self.channels = channels
        send, receive = anyio.create_memory_object_stream[HistoryEntry](buffer_size)
        self._send: MemoryObjectSendStream[HistoryEntry] = send
        #: Read by the connection that owns this subscription.
        self.receive: MemoryObjectReceiveStream[HistoryEntry] = receive
        #: Set by the connection; the hub shortens its deadline when evicting.
        self.cancel_scope: anyio.CancelScope | None = None
        #: Events were dropped from the buffer (drop-oldest): send stream-reset first.
        self.reset_pending = False


class Hub:
    """Channels and their subscribers. Not thread-safe: use it from one event loop."""

    def __init__(
        self, *, buffer_size: int, send_timeout: float, policy: SlowConsumerPolicy = "disconnect"
    ) -> None:
        if policy not in _POLICIES:
            raise ValueError(f"slow_consumer must be one of {', '.join(_POLICIES)}, not {policy!r}")
        self.policy = policy
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ValueError(f"buffer_size must be an int >= 1, not {buffer_size!r}")
        if not send_timeout > 0 or math.isinf(send_timeout):
            raise ValueError(f"send_timeout must be a positive number of seconds, not {send_timeout!r}")
        self.buffer_size = buffer_size
        self.send_timeout = float(send_timeout)
        self._channels: dict[str, dict[Subscriber, None]] = {}
        self._subscribers: set[Subscriber] = set()
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._events_dropped = 0
        self._since_yield = 0
        self.closed = False

    # -- subscriptions ---------------------------------------------------

    def subscribe(self, channels: Iterable[str]) -> Subscriber:
        """Register a new subscriber on ``channels`` (already validated, no duplicates).

        Raises:
            anyio.ClosedResourceError: the hub has been closed.
        """
        if self.closed:
            raise anyio.ClosedResourceError("the event stream has been closed")
        subscriber = Subscriber(tuple(channels), self.buffer_size)
        for channel in subscriber.channels:
            self._channels.setdefault(channel, {})[subscriber] = None
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber`` from its channels and close its buffer. Idempotent."""
        if subscriber not in self._subscribers:
            return
        self._subscribers.discard(subscriber)
        for channel in subscriber.channels:
            members = self._channels.get(channel)
            if members is not None:
                members.pop(subscriber, None)
                if not members:
                    del self._channels[channel]
        subscriber._send.close()

    def _evict(self, subscriber: Subscriber) -> None:
        self._dropped += 1
        self.unsubscribe(subscriber)
        scope = subscriber.cancel_scope
        if scope is not None:
            # Let the connection flush what it holds, but not forever: its
            # client has already failed to keep up for send_timeout seconds.
            scope.deadline = min(scope.deadline, anyio.current_time() + self.send_timeout)

    def count_delivered(self, count: int) -> None:
        self._delivered += count

    def subscriber_count(self, channel: str | None = None) -> int:
        """Subscribers of ``channel``, or of the whole hub when it is ``None``."""
        if channel is None:
            return len(self._subscribers)
        return len(self._channels.get(channel, ()))

    def statistics(self) -> EventStreamStatistics:
        return EventStreamStatistics(
            subscribers=len(self._subscribers),
            channels=types.MappingProxyType({name: len(members) for name, members in self._channels.items()}),
            events_published=self._published,
            events_delivered=self._delivered,
            subscribers_dropped=self._dropped,
            events_dropped=self._events_dropped,
        )

    def close(
        self, grace: float | None = None, final: HistoryEntry | None = None, now: float | None = None
    ) -> list[Subscriber]:
        """Refuse new subscribers and end every subscription after its buffer is written.

        ``final`` is added to every buffer that has room; connections still
        writing ``grace`` seconds later are cancelled. Returns the subscribers
        it ended (their connections close their ``receive`` when they are done).
        """
        ended = list(self._subscribers)
        self.closed = True
        deadline = None
        if grace is not None:
            deadline = (anyio.current_time() if now is None else now) + grace
        for subscriber in ended:
            if final is not None:
                with contextlib.suppress(
                    anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
                ):
                    subscriber._send.send_nowait(final)  # best effort: a full buffer skips it
            self.unsubscribe(subscriber)
            scope = subscriber.cancel_scope
            if deadline is not None and scope is not None:
                scope.deadline = min(scope.deadline, deadline)
        return ended

    # -- publishing ------------------------------------------------------

    async def publish(self, channel: str, payload: HistoryEntry) -> None:
        """Put ``payload`` in the buffer of every subscriber of ``channel``.

        Returns once every subscriber that is still connected holds it.
        Subscribers whose buffer stays full for ``send_timeout`` seconds are
        disconnected. Cancelling the call may leave the payload in some
        buffers and not in others.
        """
        self._published += 1
        members = self._channels.get(channel)
        if not members:
            # Nobody listens: constant time, whatever else is connected.
            await self._checkpoint()
            return
        full: list[Subscriber] | None = None
        gone: list[Subscriber] | None = None
        for subscriber in members:
            try:
                subscriber._send.send_nowait(payload)
            except anyio.WouldBlock:
                if self.policy == "drop-oldest":
                    self._drop_oldest(subscriber, payload)
                    continue
                if full is None:
                    full = []
                full.append(subscriber)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                if gone is None:
                    gone = []
                gone.append(subscriber)
        if gone:
            for subscriber in gone:
                self.unsubscribe(subscriber)
        if full:
            await self._wait_for_room(full, payload)
        else:
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        # Every publish checks for cancellation, but yields to other tasks only
        # every _YIELD_EVERY publishes: a burst then reaches subscribers' buffers
        # before their connections wake, and each connection wakes once for many
        # events instead of once per event. A publisher that never waits still
        # lets the rest of the program run.
        self._since_yield += 1
        if self._since_yield >= _YIELD_EVERY:
            self._since_yield = 0
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()

    def _drop_oldest(self, subscriber: Subscriber, payload: HistoryEntry) -> None:
        try:
            subscriber.receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            pass
        else:
            self._events_dropped += 1
        subscriber.reset_pending = True
        try:
            subscriber._send.send_nowait(payload)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._events_dropped += 1

    async def _wait_for_room(self, full: list[Subscriber], payload: HistoryEntry) -> None:
        pending = set(full)

        async def wait_one(subscriber: Subscriber) -> None:
            try:
                await subscriber._send.send(payload)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.unsubscribe(subscriber)
            pending.discard(subscriber)

        with anyio.move_on_after(math.inf if self.policy == "block" else self.send_timeout):
            async with anyio.create_task_group() as tg:
                for subscriber in full:
                    tg.start_soon(wait_one, subscriber)
        for subscriber in pending:
            self._evict(subscriber)
