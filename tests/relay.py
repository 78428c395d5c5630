"""A TCP relay on 127.0.0.1 that a test can stop and start, to cut client connections.

Given several targets, it spreads connections round-robin across them (a load balancer).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator, Sequence

from .servers import free_port


class Relay:
    """Forwards connections on ``port`` to ``127.0.0.1:target``; ``stop()`` cuts them all.

    ``target`` may be a list of ports: each new connection goes to the next one.
    """

    def __init__(self, target: int | Sequence[int], port: int | None = None) -> None:
        self.targets = [target] if isinstance(target, int) else list(target)
        self._next_target = itertools.cycle(self.targets)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def target(self) -> int:
        """The first target; setting it sends every new connection there."""
        return self.targets[0]

    @target.setter
    def target(self, port: int) -> None:
        self.targets = [port]
        self._next_target = itertools.cycle(self.targets)

    def set_targets(self, ports: Sequence[int]) -> None:
        """Send new connections round-robin to ``ports`` (open connections stay)."""
        self.targets = list(ports)
        self._next_target = itertools.cycle(self.targets)

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", next(self._next_target)))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    def _pipe(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                destination.shutdown(socket.SHUT_WR)


@contextlib.contextmanager
def relay(target: int | Sequence[int]) -> Iterator[Relay]:
    instance = Relay(target)
    instance.start()
    try:
        yield instance
    finally:
        instance.stop()
