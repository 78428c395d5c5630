"""The Redis serialization protocol (RESP2), sans I/O: commands to bytes, bytes to replies.

Only what the broker's feed connection speaks: commands are arrays of bulk
strings; replies are simple strings, errors, integers, bulk strings and arrays
(``None`` for the null bulk string and array). The engine is read as untrusted
input: a line longer than :data:`MAX_LINE`, a bulk string longer than
``max_bulk``, an array longer than :data:`MAX_ITEMS` or nested deeper than
:data:`MAX_DEPTH`, or a byte that is not RESP raises :class:`RespError`; the
connection is then closed, never left half-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_DEPTH",
    "MAX_ITEMS",
    "MAX_LINE",
    "NEED_DATA",
    "ErrorReply",
    "RespError",
    "RespParser",
    "command",
]

#: The longest header line (type byte to CRLF) read.
MAX_LINE: Final = 64 * 1024
#: The most items of one array.
MAX_ITEMS: Final = 1 << 20
#: The deepest nesting of arrays.
MAX_DEPTH: Final = 8


class RespError(ValueError):
    """The engine sent bytes that are not RESP, or beyond the parser's limits."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply (``-ERR ...``): the engine refused a command."""

    message: str


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


#: What :meth:`RespParser.next_reply` returns until a whole reply has arrived.
NEED_DATA: Final = _NeedData()

Reply = bytes | int | None | ErrorReply | list["Reply"]


def command(*parts: str | bytes) -> bytes:
    """The bytes of one command (an array of bulk strings); str parts are sent as UTF-8."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespParser:
    """Replies from bytes fed in as they arrive.

    Args:
        max_bulk: The longest bulk string accepted, in bytes.
    """

    __slots__ = ("_buffer", "_max_bulk")

    def __init__(self, *, max_bulk: int) -> None:
        self._buffer = bytearray()
        self._max_bulk = max_bulk

    def feed(self, data: bytes) -> None:
        """Add bytes received from the engine."""
        self._buffer += data

    def next_reply(self) -> Reply | _NeedData:
        """The next whole reply, or :data:`NEED_DATA`.

        Raises:
            RespError: the bytes are not RESP, or a limit was passed.
        """
        parsed = self._parse(0, 0)
        if parsed is None:
            return NEED_DATA
        reply, end = parsed
        del self._buffer[:end]
        return reply

    def _line(self, start: int) -> tuple[bytes, int] | None:
        buffer = self._buffer
        end = buffer.find(b"\r\n", start, start + MAX_LINE + 2)
        if end < 0:
            if len(buffer) - start > MAX_LINE:
                raise RespError(f"a reply line is longer than {MAX_LINE} bytes")
            return None
        return bytes(buffer[start + 1 : end]), end + 2

    def _parse(self, start: int, depth: int) -> tuple[Reply, int] | None:
        buffer = self._buffer
        if start >= len(buffer):
            return None
        kind = buffer[start]
        line = self._line(start)
        if line is None:
            return None
        text, after = line
        if kind == 0x2B:  # +
            return text, after
        if kind == 0x2D:  # -
            return ErrorReply(text.decode("utf-8", "replace")), after
        if kind == 0x3A:  # :
            return _integer(text), after
        if kind == 0x24:  # $
            length = _integer(text)
            if length == -1:
                return None, after
            if not 0 <= length <= self._max_bulk:
                raise RespError(f"a bulk string of {length} bytes (at most {self._max_bulk})")
            if len(buffer) < after + length + 2:
                return None
            if buffer[after + length : after + length + 2] != b"\r\n":
                raise RespError("a bulk string does not end with CRLF")
            return bytes(buffer[after : after + length]), after + length + 2
        if kind == 0x2A:  # *
            count = _integer(text)
            if count == -1:
                return None, after
            if not 0 <= count <= MAX_ITEMS:
                raise RespError(f"an array of {count} items (at most {MAX_ITEMS})")
            if depth >= MAX_DEPTH:
                raise RespError(f"arrays nested deeper than {MAX_DEPTH}")
            items: list[Reply] = []
            for _ in range(count):
                parsed = self._parse(after, depth + 1)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        raise RespError(f"a reply starts with {bytes([kind])!r}, not a RESP2 type")


def _integer(text: bytes) -> int:
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or len(digits) > 19:
        raise RespError(f"{text[:32]!r} is not an integer")
    return int(text)
