"""The engine's pub/sub feed: messages handed over by the feed's connection, for one reader.

The feed's connection (``_feedconn.py``) pushes each message, in order, as
it parses it; the inbox keeps them and wakes the one reader, which takes
them by the batch (a burst reaches the hub as a burst). While the reader
waits and nothing is held, a message is first offered to the reader's
:attr:`FeedInbox.direct`, which may take it in at once, in the pushing task:
a paced message then reaches subscribers a pass of the event loop sooner.

The inbox holds at most ``FEED_LIMIT`` messages and ``FEED_BYTES`` of them
(a message may weigh up to 64 MiB): when the reader falls behind
(a process that cannot keep up with its channels' publish rate, or many
subscribers that stall at once), the oldest are dropped rather than memory
growing without bound. Nothing is lost for good: each entry's sequence number
shows the gap, and the missing entries are read from the engine's history
(clients whose position history no longer holds get ``stream-reset``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import anyio
import anyio.lowlevel

__all__ = ["FEED_BYTES", "FEED_LIMIT", "FeedInbox"]

logger = logging.getLogger("eventstream")

#: Messages the inbox holds at most (the oldest are dropped beyond).
FEED_LIMIT = 65536
#: Bytes of messages (channel and data) the inbox holds at most (the oldest are dropped beyond).
FEED_BYTES = 256 * 1024 * 1024


class FeedInbox:
    """Pub/sub messages in arrival order, for one reader task.

    The feed's connection calls :meth:`push` on the event loop that reads it.
    """

    __slots__ = (
        "_arrived",
        "_held",
        "_messages",
        "_missed",
        "_waiting",
        "direct",
        "dropped",
        "limit",
        "max_bytes",
    )

    def __init__(self, limit: int | None = None, max_bytes: int | None = None) -> None:
        #: The most messages held (``FEED_LIMIT`` unless given).
        self.limit = FEED_LIMIT if limit is None else limit
        #: The most bytes of messages held (``FEED_BYTES`` unless given).
        self.max_bytes = FEED_BYTES if max_bytes is None else max_bytes
        #: Messages dropped so far because the inbox was full.
        self.dropped = 0
        self._messages: deque[tuple[bytes, bytes]] = deque()
        self._held = 0  # bytes of the messages held
        self._missed = False  # messages dropped, or lost with the connection, since taken
        self._arrived = anyio.Event()
        self._waiting = False  # the reader waits in wait(), and was not woken since
        #: Takes in a message that comes while the reader waits and none is held, in the
        #: pushing task; returns False if it did not (the message is then held).
        self.direct: Callable[[tuple[bytes, bytes]], bool] | None = None

    def push(self, message: tuple[bytes, bytes]) -> None:
        """Take one message, ``(channel, data)`` (never blocks; the oldest are dropped if full).

        While the reader waits and no message is held, :attr:`direct` is offered it
        first: what it takes in reaches subscribers without waking the reader (a
        pass of the event loop sooner), in order, since nothing is held before it.
        """
        messages = self._messages
        if self._waiting and not messages and self.direct is not None and self.direct(message):
            return
        self._held += len(message[0]) + len(message[1])
        while messages and (len(messages) >= self.limit or self._held > self.max_bytes):
            channel, data = messages.popleft()
            self._held -= len(channel) + len(data)
            if not self.dropped % self.limit:
                logger.warning(
                    "broker: the feed's reader is %d messages or %d MiB behind; dropping the "
                    "oldest (they are read from the engine's history)",
                    self.limit, self.max_bytes >> 20,
                )  # fmt: skip
            self.dropped += 1
            self._missed = True
        messages.append(message)
        self._waiting = False
        self._arrived.set()

    def lost(self) -> None:
        """Messages published while the feed's connection was down are missing (it is back)."""
        self._missed = True
        self._arrived.set()

    def take_missed(self) -> bool:
        """Whether messages went missing (dropped, or lost) since the last call."""
        missed, self._missed = self._missed, False
        return missed

    def __len__(self) -> int:
        return len(self._messages)

    async def wait(self) -> None:
        """Return once at least one message is waiting, or messages went missing.

        A missing message is reported until :meth:`take_missed` is called, so a
        caller that loops on this method calls it too (else it never blocks).

        Cancellation: always a cancellation point, even when a message is waiting
        already (it does not yield to other tasks then); nothing is taken: the
        messages stay for the next call.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        while not self._messages and not self._missed:
            self._waiting = True
            try:
                await self._arrived.wait()
            finally:
                self._waiting = False
            self._arrived = anyio.Event()

    def take(self, limit: int) -> list[tuple[bytes, bytes]]:
        """Remove and return up to ``limit`` waiting messages, oldest first."""
        messages = self._messages
        count = min(limit, len(messages))
        taken = [messages.popleft() for _ in range(count)]
        self._held = 0 if not messages else self._held - sum(len(c) + len(d) for c, d in taken)
        return taken
