"""A stream whose bytes go to a function as they arrive (``_backends/_pushed.py``), over real sockets.

The broker's feed reads this way. On asyncio the function runs in the
transport's callback, the pass of the event loop that read the bytes (no task
wakes for them), where anyio's calls still work; on trio the delivering task
calls it after each read. Either way: every byte in order, what came before
the delivery included, and a clear end.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from eventstream._backends._pushed import connect_first, connect_pushed, deliver

from ..support.helpers import wait_until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[anyio.abc.ByteStream, anyio.abc.SocketStream]]:
    """A pushed stream to a listener on 127.0.0.1, and the listener's side of it."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        accepted: list[anyio.abc.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listener.listeners[0].accept())  # type: ignore[attr-defined]

        async with anyio.create_task_group() as tg:
            tg.start_soon(accept)
            stream = await connect_pushed("127.0.0.1", port, None)
        async with accepted[0] as server, stream:
            yield stream, server


async def has(got: bytearray, expected: bytes) -> bool:
    return bytes(got) == expected


async def test_every_byte_reaches_the_sink_in_order_what_came_before_the_delivery_included() -> None:
    got = bytearray()
    with anyio.fail_after(10):
        async with connected() as (stream, server):
            await server.send(b"+OK\r\n")
            assert await stream.receive() == b"+OK\r\n"  # read as any stream, first
            await server.send(b"before ")
            ended: list[BaseException] = []

            async def delivering() -> None:
                try:
                    await deliver(stream, got.extend)
                except anyio.EndOfStream as exc:
                    ended.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(delivering)
                for word in (b"one ", b"two ", b"three"):
                    await server.send(word)
                await wait_until(lambda: has(got, b"before one two three"))
                await server.aclose()  # the peer ends the stream: the delivery ends with EndOfStream
            assert len(ended) == 1
    assert bytes(got) == b"before one two three"


async def test_the_sink_runs_as_the_bytes_are_read_and_anyio_works_there(anyio_backend: str) -> None:
    calls: list[bool] = []

    def sink(data: bytes) -> None:
        # anyio's calls find the running library (else the delivery would raise)
        anyio.Event().set()
        anyio.current_time()
        calls.append(asyncio.current_task() is not None if anyio_backend == "asyncio" else True)

    with anyio.fail_after(10):
        async with connected() as (stream, server), anyio.create_task_group() as tg:
            tg.start_soon(deliver, stream, sink)
            await server.send(b"x")

            async def called() -> bool:
                return bool(calls)

            await wait_until(called)
            tg.cancel_scope.cancel()
    # On asyncio in the transport's callback, no task woken for it; on trio in the delivering task.
    assert calls == [anyio_backend != "asyncio"]


async def test_a_sink_that_raises_ends_the_delivery_with_its_error_and_the_connection() -> None:
    def sink(data: bytes) -> None:
        raise ValueError(f"not what was expected: {data!r}")

    with anyio.fail_after(10):
        async with connected() as (stream, server):
            await server.send(b"junk")
            with pytest.raises(ValueError, match="junk"):
                await deliver(stream, sink)
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await server.receive()  # the listener's side sees the connection end


async def test_a_delivery_cancelled_leaves_what_comes_next_to_the_next_one() -> None:
    got = bytearray()
    with anyio.fail_after(10):
        async with connected() as (stream, server):
            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver, stream, got.extend)
                await server.send(b"first ")
                await wait_until(lambda: has(got, b"first "))
                tg.cancel_scope.cancel()
            await server.send(b"second")  # nobody delivers: it waits
            async with anyio.create_task_group() as tg:
                tg.start_soon(deliver, stream, got.extend)
                await wait_until(lambda: has(got, b"first second"))
                tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param("asyncio", id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param("trio", id="trio"),
    ],
)
async def test_a_flood_is_handed_over_a_pass_s_worth_at_a_time() -> None:
    # A loop may read megabytes in one pass (uvloop: up to 32 reads of 256 kB): handed to the
    # function at once, a hostile engine's flood would hold the loop that long, pass after pass.
    passes = 0
    per_pass: dict[int, int] = {}
    flood = b"x" * (4 * 1024 * 1024)

    def sink(data: bytes) -> None:
        per_pass[passes] = per_pass.get(passes, 0) + len(data)

    async def count_passes() -> None:
        nonlocal passes
        while True:
            await anyio.lowlevel.checkpoint()
            passes += 1

    async def all_in() -> bool:
        return sum(per_pass.values()) == len(flood)

    with anyio.fail_after(20):
        async with connected() as (stream, server), anyio.create_task_group() as tg:
            tg.start_soon(count_passes)
            tg.start_soon(deliver, stream, sink)
            await server.send(flood)
            await wait_until(all_in)
            tg.cancel_scope.cancel()
    assert max(per_pass.values()) <= 2 * 65536
    assert len(per_pass) >= len(flood) // (2 * 65536)


async def test_nobody_listening_is_an_os_error() -> None:
    with anyio.fail_after(10):
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with pytest.raises(OSError, match="connect"):  # (closed: nobody listens there now)
            await connect_pushed("127.0.0.1", port, None)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # (on trio anyio connects)
async def test_of_a_host_s_addresses_the_first_that_answers_is_connected() -> None:
    loop = asyncio.get_running_loop()
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as gone:
        refused = gone.extra(anyio.abc.SocketAttribute.local_port)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        with anyio.fail_after(10):
            sock = await connect_first(
                loop, [(socket.AF_INET, ("127.0.0.1", refused)), (socket.AF_INET, ("127.0.0.1", port))]
            )
        with sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        with anyio.fail_after(10), pytest.raises(OSError, match="cannot connect"):
            await connect_first(loop, [(socket.AF_INET, ("127.0.0.1", refused))] * 2)


async def read_to_end(stream: anyio.abc.ByteStream) -> bytes:
    data = bytearray()
    try:
        while True:
            data += await stream.receive()
    except anyio.EndOfStream:
        return bytes(data)


async def test_read_as_any_stream_up_to_max_bytes_then_its_end() -> None:
    with anyio.fail_after(10):
        async with connected() as (stream, server):
            await server.send(b"abcdef")
            await server.aclose()
            first = await stream.receive(2)
            rest = await read_to_end(stream)
    assert (first, rest) == (b"ab", b"cdef")


async def test_what_came_before_the_end_is_delivered_before_the_end() -> None:
    got = bytearray()

    async def ended(stream: anyio.abc.ByteStream) -> bool:
        protocol = getattr(stream, "_protocol", None)  # (asyncio: the end has been read)
        return protocol is None or protocol.ended.done()

    with anyio.fail_after(10):
        async with connected() as (stream, server):
            await server.send(b"last words")
            await server.aclose()
            await wait_until(lambda: ended(stream))
            with pytest.raises(anyio.EndOfStream):
                await deliver(stream, got.extend)
    assert bytes(got) == b"last words"


async def test_a_send_waits_for_room_and_the_peer_gets_every_byte() -> None:
    sent = b"y" * (16 * 1024 * 1024)  # (more than the sockets' buffers hold)
    got = bytearray()
    with anyio.fail_after(20):
        async with connected() as (stream, server):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stream.send, sent)
                while len(got) < len(sent):
                    got += await server.receive()
            await stream.send_eof()  # the peer sees the end of what was sent
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            await stream.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
    assert got == sent


async def test_sending_and_closing() -> None:
    with anyio.fail_after(10):
        async with connected() as (stream, server):
            await stream.send(b"PING\r\n")
            assert await server.receive() == b"PING\r\n"
            await stream.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await stream.send(b"PING\r\n")
            with pytest.raises(anyio.ClosedResourceError):
                await deliver(stream, lambda data: None)
