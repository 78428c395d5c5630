"""The engine's pub/sub feed: messages handed over by valkey-glide's callback.

The feed client is configured with :meth:`FeedInbox.push` as its pub/sub
callback. glide calls it for each message, in order, on the thread that reads
its responses: the event loop's own thread, unless an event loop in another
thread started glide's reader first; then the message is handed over to this
loop. The inbox keeps messages in order and wakes the one reader.

Why not glide's ``get_pubsub_message()``: it resolves its future with
``call_soon_threadsafe`` without checking whether the awaiting task was
cancelled meanwhile, so cancelling a reader that waits on it (at exit) could
raise ``InvalidStateError`` in an event loop callback and lose the message it
carried. Waiting on the inbox is an anyio event: cancellation is clean.

The inbox holds at most ``FEED_LIMIT`` messages: when the reader falls behind
(a process that cannot keep up with the whole publish rate, or many
subscribers that stall at once), the oldest are dropped rather than memory
growing without bound. Nothing is lost for good: each entry's sequence number
shows the gap, and the missing entries are read from the engine's history
(clients whose position history no longer holds get ``stream-reset``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["FEED_LIMIT", "FeedInbox"]

logger = logging.getLogger("eventstream")

#: Messages the inbox holds at most (the oldest are dropped beyond).
FEED_LIMIT = 65536


class FeedInbox:
    """Pub/sub messages in arrival order, for one reader task.

    Build it in the task (event loop) that reads it; give :meth:`push` to glide
    as the feed client's callback.
    """

    __slots__ = ("_arrived", "_messages", "_thread", "_token", "dropped", "limit")

    def __init__(self, limit: int | None = None) -> None:
        #: The most messages held (``FEED_LIMIT`` unless given).
        self.limit = FEED_LIMIT if limit is None else limit
        #: Messages dropped so far because the inbox was full.
        self.dropped = 0
        self._messages: deque[Any] = deque()
        self._arrived = anyio.Event()
        self._thread = threading.get_ident()
        self._token = anyio.lowlevel.current_token()

    def push(self, message: Any, context: object = None) -> None:
        """Take one message (glide's pub/sub callback; never raises, never blocks the loop's thread)."""
        if threading.get_ident() == self._thread:
            self._take(message)
        else:
            # Another event loop's thread reads glide's responses: hand over.
            anyio.from_thread.run_sync(self._take, message, token=self._token)

    def _take(self, message: Any) -> None:
        messages = self._messages
        if len(messages) >= self.limit:
            messages.popleft()
            if not self.dropped % self.limit:
                logger.warning(
                    "broker: the feed's reader is %d messages behind; dropping the oldest "
                    "(they are read from the engine's history)",
                    self.limit,
                )
            self.dropped += 1
        messages.append(message)
        self._arrived.set()

    def __len__(self) -> int:
        return len(self._messages)

    async def wait(self) -> None:
        """Return once at least one message is waiting.

        Cancellation: nothing is taken; the messages stay for the next call.
        """
        while not self._messages:
            await self._arrived.wait()
            self._arrived = anyio.Event()

    def take(self, limit: int) -> list[Any]:
        """Remove and return up to ``limit`` waiting messages, oldest first."""
        messages = self._messages
        count = min(limit, len(messages))
        return [messages.popleft() for _ in range(count)]
