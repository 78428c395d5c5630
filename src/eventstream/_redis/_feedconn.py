"""The broker's pub/sub connection, read on the event loop: one socket, RESP2, messages to an inbox.

The feed does not go through valkey-glide: glide's runtime subscribe costs
time in proportion to every channel the client is subscribed to (about 5 to
18 ms of CPU per request with 10,000 channels), and the feed subscribes and
unsubscribes channels as their subscribers come and go. This connection
costs what a request carries, and hands messages to the inbox on the event
loop's own thread.

:class:`FeedConnection` keeps the set of channels wanted. It (re)connects with
capped, jittered backoff, logs in, subscribes to every channel wanted, and
reads: each ``message`` goes to the inbox, each confirmation marks its
channel subscribed (on this connection). A connection idle for
``idle_seconds`` is sent a ``PING``; one that stays silent for a request
timeout more is dropped and made anew. Messages published while it was down are missing: once
it is back, the inbox says so (:meth:`FeedInbox.lost`) and the periodic check runs at once,
reading them from history (the follower also sees a gap in the sequence numbers).

Opening the socket and logging in: ``_feedopen.py``; the book of what was
asked of the engine and what it answered, and what each reply means:
``_feedbook.py``.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Collection

import anyio
import anyio.abc

from .._backends._pushed import deliver
from .._base import BrokerError
from ._endpoint import FeedEndpoint
from ._feed import FeedInbox
from ._feedbook import FeedBook, SentCommand
from ._feedopen import LOST, MAX_MESSAGE, Refused, open_feed
from ._resp import NEED_DATA, RespParser, command

__all__ = ["FeedConnection"]

logger = logging.getLogger("eventstream")

#: Channels one SUBSCRIBE or UNSUBSCRIBE names at most (a longer set takes several).
_PER_COMMAND = 1024


class FeedConnection:
    """The feed's pub/sub connection; run it in a task group with :meth:`run` after :meth:`connect`.

    Args:
        endpoint: Where the engine listens, and how to log in.
        inbox: Where each message goes, as ``(channel, data)``.
        engine: The engine's description (for errors and logs).
        request_timeout: Seconds connecting (and logging in) may take.
        idle_seconds: Seconds of silence after which the engine is sent a ``PING``.
    """

    def __init__(
        self,
        endpoint: FeedEndpoint,
        inbox: FeedInbox,
        *,
        engine: str,
        request_timeout: float,
        idle_seconds: float = 5.0,
    ) -> None:
        self._endpoint = endpoint
        self._inbox = inbox
        self._engine = engine
        self._timeout = request_timeout
        self._idle = idle_seconds
        self._ssl = endpoint.ssl_context()
        self._stream: anyio.abc.ByteStream | None = None
        self._parser = RespParser(max_bulk=MAX_MESSAGE)
        self._send_lock = anyio.Lock(fast_acquire=True)  # (each holder sends: a checkpoint)
        self._book = FeedBook(engine)
        self._changed = anyio.Event()
        #: Whether bytes came since the idle watcher last looked.
        self._heard = False
        #: Connections made so far (the first included).
        self.connections = 0

    @property
    def wanted(self) -> dict[bytes, None]:
        """Channels to be subscribed (made again on each new connection)."""
        return self._book.wanted

    @property
    def connected(self) -> bool:
        """Whether the connection is up (not being made again)."""
        return self._stream is not None

    # -- connecting --------------------------------------------------------------------

    async def connect(self, within: float) -> None:
        """Make the first connection, trying again until ``within`` seconds have passed.

        Raises:
            BrokerError: the engine could not be reached in time, or refused the login.
        """
        failure = BrokerError(self._engine, "connecting timed out")
        delay = 0.05
        with anyio.move_on_after(within):
            while True:
                try:
                    await self._open()
                    return
                except Refused:
                    raise
                except BrokerError as exc:
                    failure = exc
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 1.0)
        raise failure

    async def _open(self) -> None:
        stream, self._parser = await open_feed(
            self._endpoint, self._ssl, engine=self._engine, request_timeout=self._timeout
        )
        self._stream = stream
        self.connections += 1
        book = self._book
        book.reset()
        if book.pattern is not None:
            await self._send_pattern(book.pattern, subscribe=True)
        wanted = sorted(book.wanted)
        for start in range(0, len(wanted), _PER_COMMAND):  # (all at once: nothing reads replies yet)
            await self._send_command(wanted[start : start + _PER_COMMAND], subscribe=True)

    async def aclose(self) -> None:
        """Close the connection (:meth:`run` must have stopped)."""
        stream, self._stream = self._stream, None
        if stream is not None:
            await anyio.aclose_forcefully(stream)

    # -- reading ------------------------------------------------------------------------

    async def run(self) -> None:
        """Read the feed until cancelled, connecting again (with backoff) whenever it is lost.

        Cancellation: stops reading; the connection stays open until :meth:`aclose`.
        """
        delay = 0.05
        while True:
            try:
                if self._stream is None:
                    await self._open()
                    logger.warning("broker: the feed is connected again to the engine %s", self._engine)
                    self._inbox.lost()  # (what was published meanwhile is read from history)
                delay = 0.05
                await self._read_watched(self._stream)
            except LOST as exc:
                if self._stream is not None:
                    logger.warning(
                        "broker: the feed's connection to the engine %s was lost (%s: %s); connecting again",
                        self._engine, type(exc).__name__, exc,
                    )  # fmt: skip
                await self.aclose()
                self._lost()
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 2.0)

    def _lost(self) -> None:
        self._book.reset()
        self._wake()

    async def _read_watched(self, stream: anyio.abc.ByteStream | None) -> None:
        # Read, while a watcher pings the engine when the connection is idle.
        assert stream is not None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, stream)
            try:
                await self._read(stream)
            except LOST as exc:
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _watch(self, stream: anyio.abc.ByteStream) -> None:
        # After an idle period without a byte from the engine: a PING; still
        # silent a request timeout later: the connection is closed (the reading
        # fails, and connects again).
        while True:
            self._heard = False
            await anyio.sleep(self._idle)
            if self._heard:
                continue
            # (An engine that stopped reading holds the send: given up at the timeout too.)
            with anyio.move_on_after(self._timeout):
                async with self._send_lock:
                    self._book.sent(1, [], subscribe=False)
                    with contextlib.suppress(*LOST):
                        await stream.send(command("PING"))
            await anyio.sleep(self._timeout)
            if not self._heard:
                logger.warning(
                    "broker: the engine %s did not answer the feed's PING within %g s",
                    self._engine,
                    self._timeout,
                )
                await anyio.aclose_forcefully(stream)
                return

    async def _read(self, stream: anyio.abc.ByteStream) -> None:
        # Each chunk is taken in as it comes: on asyncio in the transport's callback, in
        # the pass of the event loop that read it (``_backends/_pushed.py``).
        await deliver(stream, self._take)

    def _take(self, data: bytes) -> None:
        self._heard = True
        parser, book, inbox = self._parser, self._book, self._inbox
        parser.feed(data)
        while (reply := parser.next_reply()) is not NEED_DATA:
            message = book.take(reply)
            if message is not None:
                inbox.push(message)
        if book.changes:
            book.changes = False
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- subscribing --------------------------------------------------------------------

    async def _send_subscribe(self, channels: list[bytes], *, subscribe: bool) -> None:
        # Many channels go a command of _PER_COMMAND at a time, each sent once the engine
        # answered the one before: the feed's messages published meanwhile wait behind one
        # command's replies, not behind tens of thousands (a whole feed taken or given up).
        previous: SentCommand | None = None
        for start in range(0, len(channels), _PER_COMMAND):
            if previous is not None and not previous.done:
                with anyio.move_on_after(self._timeout):  # (silent: the watcher ends the connection)
                    while not previous.done:
                        await self._changed.wait()
            previous = await self._send_command(channels[start : start + _PER_COMMAND], subscribe=subscribe)

    async def _send_command(self, channels: list[bytes], *, subscribe: bool) -> SentCommand | None:
        stream = self._stream
        if stream is None or not channels:
            return None
        verb = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
        async with self._send_lock:
            if subscribe:  # (one given up meanwhile is not made: its UNSUBSCRIBE may be on the wire)
                channels = [channel for channel in channels if channel in self._book.wanted]
                if not channels:
                    return None
            sent = self._book.sent(len(channels), channels, subscribe=subscribe)
            # (A connection lost: the reading loop sees it, and subscribes again.)
            with contextlib.suppress(*LOST):
                await stream.send(command(verb, *channels))
            return sent

    async def subscribe(self, channels: Collection[bytes]) -> None:
        """Subscribe to ``channels``; return once the engine confirmed every one (on this connection).

        Raises:
            BrokerError: the engine refused them (an ACL), or a channel is not
                confirmed within the request timeout (the channels stay wanted:
                call :meth:`unsubscribe` to give them up).
        """
        book = self._book
        new = [channel for channel in channels if channel not in book.wanted]
        for channel in channels:
            book.refused.pop(channel, None)
        book.wanted.update(dict.fromkeys(new))
        await self._send_subscribe(new, subscribe=True)
        try:
            with anyio.fail_after(self._timeout):
                while True:
                    refused = [book.refused.pop(channel) for channel in channels if channel in book.refused]
                    if refused:
                        raise BrokerError(
                            self._engine, f"the engine refused the feed's subscribe: {refused[0]}"
                        )
                    if all(channel in book.confirmed for channel in channels):
                        return
                    await self._changed.wait()
        except TimeoutError:
            raise BrokerError(
                self._engine, f"the feed's subscribe was not confirmed within {self._timeout:g} s"
            ) from None

    async def unsubscribe(self, channels: Collection[bytes]) -> None:
        """Give up ``channels``: no longer wanted, and unsubscribed if connected (not waiting for the engine).

        Cancellation: the request may or may not have been sent.
        """
        book = self._book
        gone = [channel for channel in channels if channel in book.wanted]
        for channel in gone:
            del book.wanted[channel]
            # (Unconfirmed at once: a subscribe sent after this waits for its own confirmation.)
            book.confirmed.pop(channel, None)
        await self._send_subscribe(gone, subscribe=False)

    async def _send_pattern(self, pattern: bytes, *, subscribe: bool) -> None:
        stream = self._stream
        if stream is None:
            return
        async with self._send_lock:
            self._book.sent(1, [pattern], subscribe=subscribe, pattern=True)
            with contextlib.suppress(*LOST):
                await stream.send(command("PSUBSCRIBE" if subscribe else "PUNSUBSCRIBE", pattern))

    async def subscribe_pattern(self, pattern: bytes) -> None:
        """Subscribe to ``pattern`` too; return once the engine confirmed it (on this connection).

        Raises:
            BrokerError: the engine refused it (an ACL grants a pattern only as written), or
                did not confirm it within the request timeout (it is then given up).
        """
        book = self._book
        book.pattern = pattern
        book.pattern_confirmed = False
        book.pattern_refused = None
        await self._send_pattern(pattern, subscribe=True)
        try:
            with anyio.fail_after(self._timeout):
                while not book.pattern_confirmed:
                    refused = book.pattern_refusal()
                    if refused is not None:
                        raise BrokerError(self._engine, f"the engine refused the feed's pattern: {refused}")
                    await self._changed.wait()
        except TimeoutError:
            await self.unsubscribe_pattern()
            reason = f"the feed's pattern was not confirmed within {self._timeout:g} s"
            raise BrokerError(self._engine, reason) from None

    async def unsubscribe_pattern(self) -> None:
        """Give up the pattern (not waiting for the engine's confirmation)."""
        book = self._book
        pattern, book.pattern = book.pattern, None
        book.pattern_confirmed = False
        if pattern is not None:
            await self._send_pattern(pattern, subscribe=False)

    def __repr__(self) -> str:
        return f"FeedConnection({self._engine!r}, {len(self.wanted)} channels)"
