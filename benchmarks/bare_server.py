"""The ceiling: a bare asyncio socket server, no ASGI, no framework.

    python -m benchmarks.bare_server PORT

Serves the same routes as :mod:`benchmarks.apps` over HTTP/1.1 with chunked
bodies (as the ASGI servers do). Each event is encoded once (chunk framing
included) and written with one ``transport.write()`` per subscriber, which is
one ``send()`` system call while the socket has room.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from .apps import payload, publish_loop, publish_request, user_of

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def chunk(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(body), body)


class Server:
    def __init__(self) -> None:
        # One set of writers per channel (None: the shared one, else a user's).
        self.subscribers: dict[int | None, set[asyncio.StreamWriter]] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        url = urlsplit(target)
        if url.path == "/events":
            await self.stream(reader, writer, user_of({"query_string": url.query.encode()}))
            return
        if url.path == "/publish" and method == "POST":
            count, size, rate, users = publish_request(url.query)
            started = time.perf_counter()
            if users:
                await publish_loop(
                    count * users, size, rate * users, lambda i: self.publish(i // users, size, i % users)
                )
            else:
                await publish_loop(count, size, rate, lambda seq: self.publish(seq, size, None))
            body: dict[str, object] = {"published": count, "seconds": time.perf_counter() - started}
        else:
            body = {"subscribers": sum(map(len, self.subscribers.values())), "traced": {}}
        data = json.dumps(body).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (len(data), data)
        )
        await writer.drain()
        writer.close()

    async def stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, user: int | None
    ) -> None:
        writer.write(STREAM_HEAD + chunk(b": open\n\n"))
        self.subscribers.setdefault(user, set()).add(writer)
        try:
            await reader.read()  # until the client goes
        except ConnectionError:
            pass
        finally:
            self.subscribers[user].discard(writer)
            writer.close()

    async def publish(self, seq: int, size: int, user: int | None) -> None:
        data = chunk(f"data: {payload(seq, size)}\n\n".encode())
        for writer in self.subscribers.get(user, ()):
            if not writer.is_closing():
                writer.write(data)
        await asyncio.sleep(0)


async def main(port: int) -> None:
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=4096)
    async with listener:
        await listener.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
