"""The feed connection's book of subscriptions, sans I/O: what was asked of the engine, what it answered.

:class:`FeedBook` holds the channels wanted (and the pattern), those the
engine confirmed on the current connection, those it refused, and the
commands whose replies are awaited, in order. :meth:`FeedBook.take` applies
one reply read from the feed's connection: a message is handed back for the
inbox; a confirmation or a refusal updates the book, and sets
:attr:`FeedBook.changes` so that the connection wakes those who wait for one.
"""

from __future__ import annotations

import logging
from collections import deque

from ._resp import ErrorReply, RespError

__all__ = ["FeedBook", "SentCommand"]

logger = logging.getLogger("eventstream")

#: The pushes that confirm a command: one per channel or pattern (un)subscribed, one per PING.
_CONFIRMATIONS = (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"pong")


class SentCommand:
    """A command whose replies are awaited: how many, and the channels a refusal concerns."""

    __slots__ = ("channels", "done", "left", "pattern", "subscribe")

    def __init__(self, left: int, channels: list[bytes], *, subscribe: bool, pattern: bool = False) -> None:
        self.left = left
        self.channels = channels
        self.subscribe = subscribe
        self.pattern = pattern
        #: Whether every reply came (or the connection it was sent on is gone).
        self.done = False


class FeedBook:
    """The subscriptions of one feed connection, across its successive connections to the engine.

    Args:
        engine: The engine's description (for logs).
    """

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._sent: deque[SentCommand] = deque()
        #: Channels to be subscribed (made again on each new connection). Dicts of None,
        #: not sets: a dict of bytes only is not tracked by the garbage collector, whose
        #: full passes would otherwise walk every channel subscribed.
        self.wanted: dict[bytes, None] = {}
        #: Channels the engine confirmed on the current connection.
        self.confirmed: dict[bytes, None] = {}
        #: Channels the engine refused (an error reply to their SUBSCRIBE), with its message.
        self.refused: dict[bytes, str] = {}
        #: The pattern subscribed to as well (made again on each new connection), if any;
        #: whether the engine confirmed it on this connection; why it refused it.
        self.pattern: bytes | None = None
        self.pattern_confirmed = False
        self.pattern_refused: str | None = None
        #: Whether confirmations or refusals came in the replies being read (waiters are woken once).
        self.changes = False

    def reset(self) -> None:
        """Forget what the previous connection was asked and confirmed (a connection made, or lost)."""
        for sent in self._sent:
            sent.done = True
        self._sent.clear()
        self.confirmed.clear()
        self.pattern_confirmed = False

    def sent(
        self, left: int, channels: list[bytes], *, subscribe: bool, pattern: bool = False
    ) -> SentCommand:
        """Note a command being sent: ``left`` replies to await; the channels (or pattern) it names.

        The note's ``done`` turns true once every reply came (setting :attr:`changes`).
        """
        sent = SentCommand(left, channels, subscribe=subscribe, pattern=pattern)
        self._sent.append(sent)
        return sent

    def pattern_refusal(self) -> str | None:
        """Why the engine refused the pattern (``None``: it did not)."""
        return self.pattern_refused

    def take(self, reply: object) -> tuple[bytes, bytes] | None:
        """Apply one reply read from the engine; return it as ``(channel, data)`` if it is a message.

        Raises:
            RespError: the reply answers no command sent, or is none the feed expects.
        """
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            channel, data = reply[1], reply[2]
            if isinstance(channel, bytes) and isinstance(data, bytes):
                return (channel, data)
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
            channel, data = reply[2], reply[3]
            if isinstance(channel, bytes) and isinstance(data, bytes):
                return (channel, data)
        if isinstance(reply, ErrorReply):
            sent = self._sent.popleft() if self._sent else None
            if sent is None:
                raise RespError(f"an error reply to no command: {reply.message}")
            sent.done = True
            self.changes = True  # (waiters of the command, and of its refusal)
            if sent.pattern:
                if sent.subscribe:
                    self.pattern_refused = reply.message
                    self.pattern = None
                return None
            if sent.subscribe:
                for channel in sent.channels:
                    self.refused[channel] = reply.message
                    self.wanted.pop(channel, None)
                logger.error(
                    "broker: the engine %s refused to subscribe the feed to %d channels: %s",
                    self._engine, len(sent.channels), reply.message,
                )  # fmt: skip
            return None
        if reply == b"PONG":  # (a PING while no channel is subscribed)
            reply = [b"pong", b""]
        if isinstance(reply, list) and len(reply) >= 2 and reply[0] in _CONFIRMATIONS:
            sent = self._sent[0] if self._sent else None
            if sent is None:
                raise RespError(f"a {reply[0]!r} confirmation of no command")
            sent.left -= 1
            if not sent.left:
                self._sent.popleft()
                sent.done = True
                self.changes = True
            channel = reply[1]
            if reply[0] == b"subscribe" and isinstance(channel, bytes):
                self.confirmed[channel] = None
                self.changes = True
            elif reply[0] == b"unsubscribe" and isinstance(channel, bytes):
                self.confirmed.pop(channel, None)
            elif reply[0] == b"psubscribe" and channel == self.pattern:
                self.pattern_confirmed = True
                self.changes = True
            return None
        raise RespError(f"an unexpected reply on the feed: {str(reply)[:100]}")
