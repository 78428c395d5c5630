"""The part every TCP forwarder of the tests shares: a listener on 127.0.0.1, one thread per
direction of each connection, and a stop that closes everything and joins the threads."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from .servers import free_port


def close_socket(sock: socket.socket) -> None:
    """Shut ``sock`` down both ways (the peer sees the end at once) and close it."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def end_writing(sock: socket.socket) -> None:
    """Tell the peer of ``sock`` that nothing more comes (half-close), if it is still open."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class Forwarder:
    """Accepts on ``port`` and connects each client to ``127.0.0.1:{next_target()}``.

    Subclasses say what a connection does in :meth:`connected` (they start its
    threads with :meth:`spawn`) and what :meth:`stop` closes in :meth:`close_all`.
    """

    def __init__(self, port: int | None = None, backlog: int = 64) -> None:
        self.port = port or free_port()
        self._backlog = backlog
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def next_target(self) -> int:
        raise NotImplementedError

    def connected(self, client: socket.socket, upstream: socket.socket) -> None:
        raise NotImplementedError

    def close_all(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(self._backlog)
        self._listener = listener
        self.spawn(self._accept, listener)

    def stop(self) -> None:
        """Stop accepting, close every connection and join the threads (5 s each at most)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            close_socket(listener)
        self.close_all()
        for thread in self._threads:
            thread.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.next_target()))
            except OSError:
                client.close()
                continue
            self.connected(client, upstream)


F = TypeVar("F", bound=Forwarder)


@contextlib.contextmanager
def running(forwarder: F) -> Iterator[F]:
    """``forwarder`` started, and stopped on exit."""
    forwarder.start()
    try:
        yield forwarder
    finally:
        forwarder.stop()
