"""A TCP relay on 127.0.0.1 that a test can stop and start, to cut client connections.

Given several targets, it spreads connections round-robin across them (a load balancer).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Iterator, Sequence

from .forwarder import Forwarder, close_socket, end_writing, running


class Relay(Forwarder):
    """Forwards connections on ``port`` to ``127.0.0.1:target``; ``stop()`` cuts them all.

    ``cut()`` cuts the open connections but keeps accepting new ones (to the
    current ``target``, which a test may change). ``cut_after_line(marker)``
    arms a cut inside the server's byte stream: the next server-to-client
    data holding ``marker`` is forwarded up to the end of the line containing
    it, then that connection is cut (for instance right after an event's
    ``id:`` line, before the blank line that would end the event).
    ``cuts_inside`` counts the cuts done that way.

    ``target`` may be a list of ports: each new connection goes to the next one.

    ``hold()`` stops forwarding without cutting anything (an engine that
    accepts but never answers); ``release()`` forwards what was held.
    """

    def __init__(self, target: int | Sequence[int], port: int | None = None) -> None:
        super().__init__(port)
        self.targets = [target] if isinstance(target, int) else list(target)
        self._next_target = itertools.cycle(self.targets)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.cuts_inside = 0
        self.connections = 0
        #: (connection number, from the server) of the directions held.
        self._held: set[tuple[int, bool]] = set()
        #: The held directions that have data waiting.
        self._waiting: set[tuple[int, bool]] = set()
        self._released = threading.Condition(self._lock)

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

    def next_target(self) -> int:
        return next(self._next_target)

    def close_all(self) -> None:
        self.release()
        self.cut()

    def cut(self) -> None:
        """Cut every open connection; new ones are still accepted while started."""
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            close_socket(sock)

    def hold(self, connection: int | None = None, *, replies_only: bool = False) -> None:
        """Forward nothing more on connection ``connection`` (numbered from 0 as accepted; every
        open one if None) until :meth:`release`; with ``replies_only``, requests still reach the
        server but its replies wait in the relay."""
        with self._lock:
            numbers = range(self.connections) if connection is None else (connection,)
            for number in numbers:
                self._held.add((number, True))
                if not replies_only:
                    self._held.add((number, False))

    def holds_reply(self, connection: int) -> bool:
        """Whether the server answered on ``connection`` and the relay holds that answer."""
        with self._lock:
            return (connection, True) in self._waiting

    def release(self) -> None:
        """Forward again what was held, and what comes."""
        with self._lock:
            self._held.clear()
            self._released.notify_all()

    def cut_after_line(self, marker: bytes) -> None:
        """Arm one cut after the end of the next server line containing ``marker``."""
        with self._lock:
            self._marker = marker

    def connected(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            self._sockets.update((client, upstream))
            number = self.connections
            self.connections += 1
        self.spawn(self._pipe, client, upstream, False, number)
        self.spawn(self._pipe, upstream, client, True, number)

    def _take_cut(self, data: bytes) -> int | None:
        """Where to cut ``data`` (after the armed marker's line), disarming; or None."""
        with self._lock:
            if self._marker is None:
                return None
            at = data.find(self._marker)
            end = data.find(b"\n", at + len(self._marker)) if at >= 0 else -1
            if end < 0:
                return None
            self._marker = None
            self.cuts_inside += 1
            return end + 1

    def _pipe(
        self, source: socket.socket, destination: socket.socket, from_server: bool = False, number: int = -1
    ) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    while (number, from_server) in self._held:
                        self._waiting.add((number, from_server))
                        self._released.wait()
                    self._waiting.discard((number, from_server))
                cut = self._take_cut(data) if from_server else None
                if cut is None:
                    destination.sendall(data)
                    continue
                destination.sendall(data[:cut])
                for sock in (source, destination):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return
        except OSError:
            pass
        finally:
            end_writing(destination)


@contextlib.contextmanager
def relay(target: int | Sequence[int]) -> Iterator[Relay]:
    with running(Relay(target)) as instance:
        yield instance
