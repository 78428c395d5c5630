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
timeout more is dropped and made anew. Messages published while it was down are missing: the
follower sees the gap in the sequence numbers (or the periodic check does) and
reads them from history.
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import Collection

import anyio
import anyio.abc
import anyio.lowlevel

from .._base import BrokerError
from ._endpoint import FeedEndpoint
from ._feed import FeedInbox
from ._resp import NEED_DATA, ErrorReply, RespError, RespParser, command

__all__ = ["FeedConnection"]

logger = logging.getLogger("eventstream")

#: Channels one SUBSCRIBE or UNSUBSCRIBE names at most (a longer set takes several).
_PER_COMMAND = 1024
#: The longest feed message accepted (the engine's own pub/sub output limit is smaller by default).
_MAX_MESSAGE = 64 * 1024 * 1024
#: What a lost connection raises (reading, sending, or the engine's bytes not RESP).
_LOST = (
    BrokerError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    RespError,
)
#: The pushes that confirm a command: one per channel or pattern (un)subscribed, one per PING.
_CONFIRMATIONS = (b"subscribe", b"unsubscribe", b"psubscribe", b"punsubscribe", b"pong")


class _Refused(BrokerError):
    """The engine refused the credentials, or its certificate is not trusted (trying again would not help)."""


class _Sent:
    """A command whose replies are awaited: how many, and the channels a refusal concerns."""

    __slots__ = ("channels", "left", "pattern", "subscribe")

    def __init__(self, left: int, channels: list[bytes], *, subscribe: bool, pattern: bool = False) -> None:
        self.left = left
        self.channels = channels
        self.subscribe = subscribe
        self.pattern = pattern


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
        self._parser = RespParser(max_bulk=_MAX_MESSAGE)
        self._send_lock = anyio.Lock()
        self._sent: deque[_Sent] = deque()
        #: Channels to be subscribed (made again on each new connection). Dicts of None,
        #: not sets: a dict of bytes only is not tracked by the garbage collector, whose
        #: full passes would otherwise walk every channel subscribed.
        self.wanted: dict[bytes, None] = {}
        #: Channels the engine confirmed on the current connection.
        self.confirmed: dict[bytes, None] = {}
        #: Channels the engine refused (an error reply to their SUBSCRIBE), with its message.
        self._refused: dict[bytes, str] = {}
        #: The pattern subscribed to as well (made again on each new connection), if any;
        #: whether the engine confirmed it on this connection; why it refused it.
        self.pattern: bytes | None = None
        self.pattern_confirmed = False
        self._pattern_refused: str | None = None
        self._changed = anyio.Event()
        #: Whether confirmations or refusals came in the replies being read (waiters are woken once).
        self._changes = False
        #: Whether bytes came since the idle watcher last looked.
        self._heard = False
        #: Connections made so far (the first included).
        self.connections = 0

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
                except _Refused:
                    raise
                except BrokerError as exc:
                    failure = exc
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 1.0)
        raise failure

    async def _open(self) -> None:
        endpoint = self._endpoint
        self._parser = RespParser(max_bulk=_MAX_MESSAGE)  # (nothing of a connection before)
        try:
            with anyio.fail_after(self._timeout):
                stream: anyio.abc.ByteStream
                if self._ssl is None:
                    stream = await anyio.connect_tcp(endpoint.host, endpoint.port)
                else:
                    stream = await anyio.connect_tcp(
                        endpoint.host, endpoint.port, ssl_context=self._ssl, tls_standard_compatible=False
                    )
                try:
                    if endpoint.password is not None:
                        login = (
                            [endpoint.username, endpoint.password]
                            if endpoint.username
                            else [endpoint.password]
                        )
                        await stream.send(command("AUTH", *login))
                        reply = await self._read_reply(stream)
                        if reply != b"OK":
                            detail = reply.message if isinstance(reply, ErrorReply) else "an unexpected reply"
                            raise _Refused(self._engine, f"the login was refused: {detail}")
                except BaseException:
                    await anyio.aclose_forcefully(stream)
                    raise
        except TimeoutError:
            raise BrokerError(self._engine, "connecting timed out") from None
        except ssl.SSLCertVerificationError as exc:
            raise _Refused(
                self._engine, f"cannot connect: its TLS certificate is not trusted ({exc})"
            ) from exc
        except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, RespError) as exc:
            raise BrokerError(self._engine, f"cannot connect: {type(exc).__name__}: {exc}") from exc
        self._stream = stream
        self.connections += 1
        self._sent.clear()
        self.confirmed.clear()
        self.pattern_confirmed = False
        if self.pattern is not None:
            await self._send_pattern(self.pattern, subscribe=True)
        wanted = sorted(self.wanted)
        for start in range(0, len(wanted), _PER_COMMAND):
            await self._send_subscribe(wanted[start : start + _PER_COMMAND], subscribe=True)

    async def _read_reply(self, stream: anyio.abc.ByteStream) -> object:
        # One reply, while logging in (before the reading loop runs).
        while (reply := self._parser.next_reply()) is NEED_DATA:
            self._parser.feed(await stream.receive())
        return reply

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
                delay = 0.05
                await self._read_watched(self._stream)
            except _LOST as exc:
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
        self._sent.clear()
        self.confirmed.clear()
        self.pattern_confirmed = False
        self._wake()

    async def _read_watched(self, stream: anyio.abc.ByteStream | None) -> None:
        # Read, while a watcher pings the engine when the connection is idle.
        assert stream is not None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch, stream)
            try:
                await self._read(stream)
            except _LOST as exc:
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
            async with self._send_lock:
                self._sent.append(_Sent(1, [], subscribe=False))
                with contextlib.suppress(*_LOST):
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
        parser = self._parser
        while True:
            data = await stream.receive()
            self._heard = True
            parser.feed(data)
            while (reply := parser.next_reply()) is not NEED_DATA:
                self._take(reply)
            if self._changes:
                self._changes = False
                self._wake()
            # (Bytes already received return at once: let other tasks run between chunks.)
            await anyio.lowlevel.checkpoint()

    def _take(self, reply: object) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            channel, data = reply[1], reply[2]
            if isinstance(channel, bytes) and isinstance(data, bytes):
                self._inbox.push((channel, data))
                return
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
            channel, data = reply[2], reply[3]
            if isinstance(channel, bytes) and isinstance(data, bytes):
                self._inbox.push((channel, data))
                return
        if isinstance(reply, ErrorReply):
            sent = self._sent.popleft() if self._sent else None
            if sent is None:
                raise RespError(f"an error reply to no command: {reply.message}")
            if sent.pattern:
                if sent.subscribe:
                    self._pattern_refused = reply.message
                    self.pattern = None
                    self._changes = True
                return
            if sent.subscribe:
                for channel in sent.channels:
                    self._refused[channel] = reply.message
                    self.wanted.pop(channel, None)
                logger.error(
                    "broker: the engine %s refused to subscribe the feed to %d channels: %s",
                    self._engine, len(sent.channels), reply.message,
                )  # fmt: skip
                self._changes = True
            return
        if reply == b"PONG":  # (a PING while no channel is subscribed)
            reply = [b"pong", b""]
        if isinstance(reply, list) and len(reply) >= 2 and reply[0] in _CONFIRMATIONS:
            sent = self._sent[0] if self._sent else None
            if sent is None:
                raise RespError(f"a {reply[0]!r} confirmation of no command")
            sent.left -= 1
            if not sent.left:
                self._sent.popleft()
            channel = reply[1]
            if reply[0] == b"subscribe" and isinstance(channel, bytes):
                self.confirmed[channel] = None
                self._changes = True
            elif reply[0] == b"unsubscribe" and isinstance(channel, bytes):
                self.confirmed.pop(channel, None)
            elif reply[0] == b"psubscribe" and channel == self.pattern:
                self.pattern_confirmed = True
                self._changes = True
            return
        raise RespError(f"an unexpected reply on the feed: {str(reply)[:100]}")

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- subscribing --------------------------------------------------------------------

    async def _send_subscribe(self, channels: list[bytes], *, subscribe: bool) -> None:
        stream = self._stream
        if stream is None or not channels:
            return
        verb = "SUBSCRIBE" if subscribe else "UNSUBSCRIBE"
        async with self._send_lock:
            if subscribe:  # (one given up meanwhile is not made: its UNSUBSCRIBE may be on the wire)
                channels = [channel for channel in channels if channel in self.wanted]
                if not channels:
                    return
            self._sent.append(_Sent(len(channels), channels, subscribe=subscribe))
            # (A connection lost: the reading loop sees it, and subscribes again.)
            with contextlib.suppress(*_LOST):
                await stream.send(command(verb, *channels))

    async def subscribe(self, channels: Collection[bytes]) -> None:
        """Subscribe to ``channels``; return once the engine confirmed every one (on this connection).

        Raises:
            BrokerError: the engine refused them (an ACL), or a channel is not
                confirmed within the request timeout (the channels stay wanted:
                call :meth:`unsubscribe` to give them up).
        """
        new = [channel for channel in channels if channel not in self.wanted]
        for channel in channels:
            self._refused.pop(channel, None)
        self.wanted.update(dict.fromkeys(new))
        for start in range(0, len(new), _PER_COMMAND):
            await self._send_subscribe(new[start : start + _PER_COMMAND], subscribe=True)
        try:
            with anyio.fail_after(self._timeout):
                while True:
                    refused = [self._refused.pop(channel) for channel in channels if channel in self._refused]
                    if refused:
                        raise BrokerError(
                            self._engine, f"the engine refused the feed's subscribe: {refused[0]}"
                        )
                    if all(channel in self.confirmed for channel in channels):
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
        gone = [channel for channel in channels if channel in self.wanted]
        for channel in gone:
            del self.wanted[channel]
            # (Unconfirmed at once: a subscribe sent after this waits for its own confirmation.)
            self.confirmed.pop(channel, None)
        for start in range(0, len(gone), _PER_COMMAND):
            await self._send_subscribe(gone[start : start + _PER_COMMAND], subscribe=False)

    async def _send_pattern(self, pattern: bytes, *, subscribe: bool) -> None:
        stream = self._stream
        if stream is None:
            return
        async with self._send_lock:
            self._sent.append(_Sent(1, [pattern], subscribe=subscribe, pattern=True))
            with contextlib.suppress(*_LOST):
                await stream.send(command("PSUBSCRIBE" if subscribe else "PUNSUBSCRIBE", pattern))

    async def subscribe_pattern(self, pattern: bytes) -> None:
        """Subscribe to ``pattern`` too; return once the engine confirmed it (on this connection).

        Raises:
            BrokerError: the engine refused it (an ACL grants a pattern only as written), or
                did not confirm it within the request timeout (it is then given up).
        """
        self.pattern = pattern
        self.pattern_confirmed = False
        self._pattern_refused = None
        await self._send_pattern(pattern, subscribe=True)
        try:
            with anyio.fail_after(self._timeout):
                while not self.pattern_confirmed:
                    refused = self._pattern_refusal()
                    if refused is not None:
                        raise BrokerError(self._engine, f"the engine refused the feed's pattern: {refused}")
                    await self._changed.wait()
        except TimeoutError:
            await self.unsubscribe_pattern()
            reason = f"the feed's pattern was not confirmed within {self._timeout:g} s"
            raise BrokerError(self._engine, reason) from None

    def _pattern_refusal(self) -> str | None:
        return self._pattern_refused

    async def unsubscribe_pattern(self) -> None:
        """Give up the pattern (not waiting for the engine's confirmation)."""
        pattern, self.pattern = self.pattern, None
        self.pattern_confirmed = False
        if pattern is not None:
            await self._send_pattern(pattern, subscribe=False)

    def __repr__(self) -> str:
        return f"FeedConnection({self._engine!r}, {len(self.wanted)} channels)"
