"""One node of the tests' private Redis Cluster (see :mod:`tests.support.redis_cluster`): its
process, ports and folder, and a plain RESP2 connection to it for the cluster's checks (a
connection per command; an error reply raises :class:`ReplyError`)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeAlias

from .servers import stop_process

#: A node's reply as read from the wire (RESP2): simple and bulk strings as bytes, integers,
#: nil as None, arrays as lists.
Reply: TypeAlias = "bytes | int | list[Reply] | None"


class ReplyError(Exception):
    """A node answered with an error (``-ERR ...``, ``-MOVED ...``)."""


def _read_reply(stream: BinaryIO) -> Reply:
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("the node closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise ReplyError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        return None if int(rest) < 0 else stream.read(int(rest) + 2)[:-2]
    if kind == b"*":
        return None if int(rest) < 0 else [_read_reply(stream) for _ in range(int(rest))]
    raise ConnectionError(f"not a reply: {line!r}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, then released)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@dataclass(frozen=True)
class SeenNode:
    """One line of a node's ``CLUSTER NODES``: how that node sees a member of the cluster."""

    port: int
    flags: frozenset[str]
    primary_id: str | None
    slots: tuple[tuple[int, int], ...]

    @classmethod
    def parse(cls, line: str) -> SeenNode:
        parts = line.split()
        ranges = []
        for item in parts[8:]:
            if not item.startswith("["):  # "[slot->-id]": a slot being imported or migrated
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first)))
        return cls(
            port=int(parts[1].split("@")[0].rpartition(":")[2] or 0),
            flags=frozenset(parts[2].split(",")),
            primary_id=None if parts[3] == "-" else parts[3],
            slots=tuple(ranges),
        )


@dataclass(eq=False)
class ClusterNode:
    """One redis-server of the cluster; :meth:`stop` and :meth:`start` keep its ports and folder
    (so its ``nodes.conf``: it rejoins the cluster as the same node)."""

    directory: Path
    port: int
    bus_port: int
    #: More redis-server options, e.g. ("--appendfsync", "always").
    options: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    #: Its cluster node id (``CLUSTER MYID``), known once it has started.
    node_id: str = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it answers; raises ``RuntimeError`` if it exits first
        (its port was taken) or does not answer within ``timeout`` seconds."""
        assert not self.running
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--cluster-port", str(self.bus_port),
                "--bind", "127.0.0.1", "--dir", str(self.directory), "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--appendonly", "yes", "--save", "", "--repl-diskless-sync-delay", "0",
                "--logfile", str(self.directory / "redis.log"), "--daemonize", "no",
                "--protected-mode", "yes", *self.options,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        # Ours answering, not another process that holds the port, and done loading its
        # append-only file (until then PING answers LOADING).
        while self.info("server").get("process_id") != str(self.process.pid) or not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; its log ends:\n{self.log()[-3000:]}")
            time.sleep(0.02)  # polling readiness under a deadline
        node_id = self.call("CLUSTER", "MYID")
        assert isinstance(node_id, bytes)
        self.node_id = node_id.decode()

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """SIGTERM (redis then writes its append-only file) or SIGKILL; wait for the exit."""
        if self.process is not None:
            stop_process(self.process, timeout, kill=kill)

    def call(self, *args: str | int | bytes, timeout: float = 5.0) -> Reply:
        """Send one command on a connection of its own; raises :class:`ReplyError` on an error
        reply and ``OSError`` when the node cannot be reached."""
        command = [arg if isinstance(arg, bytes) else str(arg).encode() for arg in args]
        request = b"*%d\r\n" % len(command) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in command)
        with socket.create_connection(("127.0.0.1", self.port), timeout) as sock:
            sock.sendall(request)
            with sock.makefile("rb") as stream:
                return _read_reply(stream)

    def ping(self) -> bool:
        with contextlib.suppress(OSError, ReplyError):
            return self.call("PING", timeout=1.0) == b"PONG"
        return False

    def command(self, *args: str) -> bytes:
        """Run one command on this node with redis-cli (no redirection; an error reply is output too)."""
        cli = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--raw", *args]
        return subprocess.run(cli, capture_output=True, timeout=10, check=True).stdout

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` (``"cluster"``: ``CLUSTER INFO``) as a mapping; empty when the node
        cannot be reached."""
        try:
            command = ["CLUSTER", "INFO"] if section == "cluster" else ["INFO", section]
            text = self.call(*command, timeout=1.0)
        except (OSError, ReplyError):
            return {}
        assert isinstance(text, bytes)
        lines = text.decode().splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and not line.startswith("#"))

    def synced_to(self) -> int | None:
        """The port of its primary if it is a replica in sync (``master_link_status:up``)."""
        replication = self.info("replication")
        if replication.get("role") != "slave" or replication.get("master_link_status") != "up":
            return None
        return int(replication["master_port"])

    def view(self) -> list[SeenNode]:
        """This node's ``CLUSTER NODES``, parsed."""
        text = self.call("CLUSTER", "NODES")
        assert isinstance(text, bytes)
        return [SeenNode.parse(line) for line in text.decode().splitlines() if line.strip()]
