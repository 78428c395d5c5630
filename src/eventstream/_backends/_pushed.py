"""A TCP (or TLS) stream whose bytes can be handed to a function as they arrive.

:func:`connect_pushed` opens one: an ordinary anyio byte stream (``send``,
``receive``), for instance to log in. :func:`deliver` then hands every chunk
that comes to a plain function, until the connection is lost.

On asyncio the function runs in the transport's own callback, in the pass of
the event loop that read the bytes; a reading task would only wake a pass
later, and under load a pass of the loop takes milliseconds (the broker's feed
reads this way: a live message reaches its subscribers' queues a pass
sooner). There it runs in a copy of the delivering task's context, told that
asyncio runs (anyio's calls work there as in the task). On trio, and on any
other stream, the delivering task reads and calls it after each read.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import socket
import ssl
from collections.abc import Callable
from typing import Any, NoReturn, cast

import anyio
import anyio.abc
import anyio.lowlevel

from ._library import declare_running_library

__all__ = ["connect_first", "connect_pushed", "deliver"]

#: What a stream buffers before :func:`deliver` at most, as anyio's own streams do (one read).
_BUFFERED = 65536
#: What the function is handed in one pass of the event loop at most: past it, reading pauses
#: until the next pass (a loop may read megabytes in one pass: uvloop reads up to 32 times
#: 256 kB), and what was read beyond it waits for that pass. A flood on the connection then
#: holds the loop for one chunk's handling per pass, as a reading task would.
_PER_PASS = 65536
#: Seconds between the starts of two connection attempts to an address each (RFC 8305).
_NEXT_ADDRESS_AFTER = 0.25

Sink = Callable[[bytes], None]


async def connect_pushed(host: str, port: int, ssl_context: ssl.SSLContext | None) -> anyio.abc.ByteStream:
    """Connect to ``host``:``port`` (with TLS, checking the certificate against ``host``, when
    ``ssl_context`` is given).

    Raises:
        OSError: the connection failed (``ssl.SSLError`` for TLS, its
            ``SSLCertVerificationError`` for a certificate not trusted).

    Cancellation: nothing stays open.
    """
    native = anyio.lowlevel.current_token().native_token
    if not isinstance(native, asyncio.AbstractEventLoop):
        if ssl_context is None:
            return await anyio.connect_tcp(host, port)
        return await anyio.connect_tcp(host, port, ssl_context=ssl_context, tls_standard_compatible=False)
    addresses = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    sock = await connect_first(native, [(family, address) for family, _, _, _, address in addresses])
    try:
        transport, protocol = await native.create_connection(
            _Protocol, sock=sock, ssl=ssl_context, server_hostname=host if ssl_context is not None else None
        )
    except BaseException:
        sock.close()
        raise
    return _AsyncioPushed(transport, protocol)


async def connect_first(loop: asyncio.AbstractEventLoop, addresses: list[tuple[int, Any]]) -> socket.socket:
    """A socket connected to the first of ``addresses`` (``(family, address)`` each) that answers.

    They are tried in turn, each started :data:`_NEXT_ADDRESS_AFTER` after the one
    before, or at once when that one failed (RFC 8305): an address that drops
    packets delays the next by that much, not by the system's connect timeout.
    The first connected wins; the others are closed.

    Raises:
        OSError: none could be connected (the last one's error in its text).

    Cancellation: no socket stays open.
    """
    connected: list[socket.socket] = []
    errors: list[OSError] = []
    left = len(addresses)

    async def set_later(event: anyio.Event) -> None:
        await anyio.sleep(_NEXT_ADDRESS_AFTER)
        event.set()

    async def attempt(family: int, address: Any, turn: anyio.Event, next_turn: anyio.Event) -> None:
        nonlocal left
        await turn.wait()
        tg.start_soon(set_later, next_turn)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            errors.append(exc)
            left -= 1
            next_turn.set()  # (the next address at once)
            if not left:
                tg.cancel_scope.cancel()  # (every one failed: no timer to wait for)
            return
        except BaseException:
            sock.close()
            raise
        connected.append(sock)
        tg.cancel_scope.cancel()

    try:
        async with anyio.create_task_group() as tg:
            turn = anyio.Event()
            turn.set()
            for family, address in addresses:
                next_turn = anyio.Event()
                tg.start_soon(attempt, family, address, turn, next_turn)
                turn = next_turn
    except BaseException:
        for sock in connected:
            sock.close()
        raise
    for extra in connected[1:]:
        extra.close()
    if not connected:
        raise OSError(f"cannot connect: {errors[-1] if errors else 'no address'}")
    return connected[0]


async def deliver(stream: anyio.abc.ByteStream, sink: Sink) -> NoReturn:
    """Hand every chunk ``stream`` receives to ``sink``, in order, until the connection is lost.

    Raises:
        anyio.EndOfStream: the peer closed the connection.
        anyio.BrokenResourceError: the connection failed.
        anyio.ClosedResourceError: the stream was closed.
        Exception: what ``sink`` raised (the connection is then closed).

    Cancellation: stops delivering; what comes next waits for the next reader.
    """
    if isinstance(stream, _AsyncioPushed):
        await stream.deliver(sink)
    while True:
        data = await stream.receive()
        try:
            sink(data)
        except Exception:
            await anyio.aclose_forcefully(stream)
            raise


class _Protocol(asyncio.Protocol):
    """The transport's side: buffers, or hands over, what is read; tells how the connection ended."""

    def __init__(self) -> None:
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        #: What each chunk goes to while delivering (in ``context``), instead of the buffer.
        self.sink: Sink | None = None
        self.context: contextvars.Context | None = None
        #: What the sink raised (the connection is then closed).
        self.failure: Exception | None = None
        self.loop = asyncio.get_running_loop()
        #: Done when the connection is over: None for an end of stream, else what broke it.
        self.ended: asyncio.Future[Exception | None] = self.loop.create_future()
        self.readable: asyncio.Future[None] | None = None
        self.drained: asyncio.Future[None] | None = None
        #: Bytes handed over since reading last paused; reading paused until the next pass.
        self.taken = 0
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # (uvloop's TLS one is not a subclass)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None and not self.chunks:
            self._hand_over(data)
            return
        self._keep(bytes(data))  # (no sink yet, or behind what waits for the next pass)
        if self.sink is None and self.buffered >= _BUFFERED:
            self.transport.pause_reading()
        self._wake_reader()

    def _keep(self, data: bytes, *, first: bool = False) -> None:
        if first:
            self.chunks.appendleft(data)
        else:
            self.chunks.append(data)
        self.buffered += len(data)

    def _hand_over(self, data: bytes) -> None:
        # Up to what is left of this pass's budget; the rest waits, first, for the next pass.
        sink, context = self.sink, self.context
        if sink is None or context is None:
            self._keep(bytes(data))
            return
        room = _PER_PASS - self.taken
        if len(data) > room:
            self._keep(bytes(data[room:]), first=True)
            data = data[:room]
        self.taken += len(data)
        try:
            context.run(sink, data)
        except Exception as exc:  # (for deliver to raise)
            self.failure = exc
            self.transport.abort()
            return
        if self.taken >= _PER_PASS and not self.paused:
            self.paused = True
            self.transport.pause_reading()
            self.loop.call_soon(self.pump)

    def pump(self) -> None:
        """Hand over what waits, up to a pass's budget; read on if it is not spent."""
        self.paused = False
        self.taken = 0
        while self.chunks and self.sink is not None and self.failure is None and not self.paused:
            chunk = self.chunks.popleft()
            self.buffered -= len(chunk)
            self._hand_over(chunk)
        if not self.paused and self.sink is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        self._end(None)
        return False  # (the transport closes itself)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc)
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        if self.drained is None:
            self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        drained, self.drained = self.drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _end(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)
        self._wake_reader()

    def _wake_reader(self) -> None:
        readable, self.readable = self.readable, None
        if readable is not None and not readable.done():
            readable.set_result(None)


class _AsyncioPushed(anyio.abc.ByteStream):
    """asyncio: a byte stream over a transport of its own (see the module's docstring)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False

    def _raise_ended(self) -> NoReturn:
        protocol = self._protocol
        if protocol.failure is not None:
            raise protocol.failure
        if self._closed:
            raise anyio.ClosedResourceError
        exc = protocol.ended.result() if protocol.ended.done() else None
        if exc is None:
            raise anyio.EndOfStream
        raise anyio.BrokenResourceError from exc

    async def receive(self, max_bytes: int = 65536) -> bytes:
        protocol = self._protocol
        if not protocol.chunks:
            while not protocol.chunks:
                if protocol.ended.done() or self._closed:
                    self._raise_ended()
                protocol.readable = protocol.loop.create_future()
                await protocol.readable
        else:
            await anyio.lowlevel.checkpoint()
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            protocol.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.buffered < _BUFFERED and not self._transport.is_closing():
            self._transport.resume_reading()
        return chunk

    async def deliver(self, sink: Sink) -> NoReturn:
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        context = contextvars.copy_context()
        context.run(declare_running_library)  # (anyio's calls in the sink find asyncio at once)
        protocol.sink, protocol.context = sink, context
        try:
            protocol.pump()  # what came before (a pass's worth), then what comes
            await asyncio.shield(protocol.ended)
            while protocol.chunks and protocol.failure is None:  # what came before the end
                chunk = protocol.chunks.popleft()
                protocol.buffered -= len(chunk)
                context.run(sink, chunk)
            self._raise_ended()
        finally:
            protocol.sink = protocol.context = None

    async def send(self, item: bytes) -> None:
        # Written before any checkpoint: cancelled there, it is on its way all the same.
        if self._closed:
            raise anyio.ClosedResourceError
        if self._transport.is_closing():
            raise anyio.BrokenResourceError
        self._transport.write(item)
        drained = self._protocol.drained
        if drained is None:
            await anyio.lowlevel.checkpoint()
            return
        await asyncio.shield(drained)
        if self._protocol.ended.done():  # (lost before its bytes left)
            raise anyio.BrokenResourceError

    async def send_eof(self) -> None:
        self._transport.write_eof()

    async def aclose(self) -> None:
        self._closed = True
        transport = self._transport
        if transport.is_closing():
            return
        transport.close()
        try:
            await anyio.lowlevel.checkpoint()
        finally:
            transport.abort()
