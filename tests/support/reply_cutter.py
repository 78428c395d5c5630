"""A TCP relay to a Redis-protocol engine that can lose the reply to one request.

``arm(marker, times)``: the next request (client to engine bytes) holding
``marker`` at least ``times`` times is forwarded to the engine whole; the
replies to the requests before it are forwarded, its own reply is dropped,
and the connection is cut. The engine has run the request; the client never
learns its outcome. Requests and replies are counted by reading the
protocol (RESP2/RESP3), so pipelined requests are told apart. Other
connections (a pub/sub feed through the same relay) are left alone.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from .forwarder import Forwarder, close_socket, end_writing, running


def message_end(buffer: bytes, start: int = 0) -> int | None:
    """Where the RESP message starting at ``start`` ends, or None if it is not complete yet."""
    line_end = buffer.find(b"\r\n", start)
    if line_end < 0:
        return None
    kind, head, end = buffer[start : start + 1], buffer[start + 1 : line_end], line_end + 2
    if kind in b"$=!":  # bulk string, verbatim string, bulk error
        length = int(head)
        if length < 0:
            return end
        return end + length + 2 if len(buffer) >= end + length + 2 else None
    if kind in b"*~>%|":  # array, set, push, map, attribute
        count = int(head) * (2 if kind in b"%|" else 1)
        for _ in range(max(0, count)):
            found = message_end(buffer, end)
            if found is None:
                return None
            end = found
        return message_end(buffer, end) if kind == b"|" else end
    return end  # a simple string, error, number, null, boolean, double


class _Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        #: The index of the request whose reply is lost (set before it reaches the engine).
        self.cut_at: int | None = None

    def close(self) -> None:
        close_socket(self.client)
        close_socket(self.upstream)


class ReplyCutter(Forwarder):
    """Forwards ``port`` to ``127.0.0.1:target``; :meth:`arm` loses one reply."""

    def __init__(self, target: int) -> None:
        super().__init__(backlog=16)
        self.target = target
        self._connections: list[_Connection] = []
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._times = 1
        #: The engine bytes dropped by each cut (the start of each lost reply).
        self.dropped: list[bytes] = []
        #: Set once a cut was done.
        self.cut_done = threading.Event()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def arm(self, marker: bytes, times: int = 1) -> None:
        """Lose the reply to the next request that holds ``marker`` at least ``times`` times."""
        with self._lock:
            self._marker = marker
            self._times = times
            self.cut_done.clear()

    def next_target(self) -> int:
        return self.target

    def close_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def connected(self, client: socket.socket, upstream: socket.socket) -> None:
        connection = _Connection(client, upstream)
        with self._lock:
            self._connections.append(connection)
        self.spawn(self._requests, connection)
        self.spawn(self._replies, connection)

    def _requests(self, connection: _Connection) -> None:
        pending, count = b"", 0
        try:
            while data := connection.client.recv(65536):
                pending += data
                while (end := message_end(pending)) is not None:
                    request, pending = pending[:end], pending[end:]
                    with self._lock:
                        marker = self._marker
                        if marker is not None and request.count(marker) >= self._times:
                            self._marker = None
                            connection.cut_at = count  # before the engine has all of it
                    count += 1
                connection.upstream.sendall(data)
        except OSError:
            pass
        finally:
            end_writing(connection.upstream)

    def _replies(self, connection: _Connection) -> None:
        pending, count = b"", 0
        try:
            while data := connection.upstream.recv(65536):
                pending += data
                start = 0
                while count != connection.cut_at and (end := message_end(pending, start)) is not None:
                    start, count = end, count + 1
                connection.client.sendall(pending[:start])
                pending = pending[start:]
                if count == connection.cut_at and pending:
                    self.dropped.append(pending)  # the start of the lost reply
                    connection.close()
                    self.cut_done.set()
                    return
        except OSError:
            pass
        finally:
            end_writing(connection.client)


@contextlib.contextmanager
def reply_cutter(target: int) -> Iterator[ReplyCutter]:
    """A started :class:`ReplyCutter` to ``127.0.0.1:target``, stopped on exit."""
    with running(ReplyCutter(target)) as cutter:
        yield cutter
