"""The Redis serialization protocol (RESP2), sans I/O: commands to bytes, bytes to replies.

Only what the broker's feed connection speaks: commands are arrays of bulk
strings; replies are simple strings, errors, integers, bulk strings and arrays
(``None`` for the null bulk string and array). The engine is read as untrusted
input: a line longer than :data:`MAX_LINE`, a bulk string longer than
``max_bulk``, an array longer than :data:`MAX_ITEMS` or nested deeper than
:data:`MAX_DEPTH`, a reply still unfinished past ``max_bulk`` and four
:data:`MAX_LINE` (the largest message and its few short fields), or a byte
that is not RESP raises :class:`RespError`; the connection is then closed,
never left half-parsed (nor held, nor parsed again and again, for ever).
"""

from __future__ import annotations

import re
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
#: The most items of one array (the feed's largest reply is a ``pmessage``: 4 items).
MAX_ITEMS: Final = 8
#: The deepest nesting of arrays (the feed's replies do not nest).
MAX_DEPTH: Final = 2


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

#: The head of the feed's common reply (see RespParser._pushed): a kind and a channel
#: (the lengths their headers give are checked after), then an integer or a data header.
_PUSHED = re.compile(
    rb"\*3\r\n\$([0-9]{1,2})\r\n([^\r\n]{0,32})\r\n\$([0-9]{1,4})\r\n([^\r\n]{0,1024})\r\n"
    rb"(?::([0-9]{1,19})|\$([0-9]{1,10}))\r\n"
)


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

    __slots__ = ("_buffer", "_max_bulk", "_max_pending", "_start")

    def __init__(self, *, max_bulk: int) -> None:
        self._buffer = bytearray()
        self._start = 0  # where the next reply starts (consumed bytes are dropped in bulk)
        self._max_bulk = max_bulk
        self._max_pending = max_bulk + 4 * MAX_LINE  # the most one unfinished reply may hold

    def feed(self, data: bytes) -> None:
        """Add bytes received from the engine."""
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_reply(self) -> Reply | _NeedData:
        """The next whole reply, or :data:`NEED_DATA`.

        Raises:
            RespError: the bytes are not RESP, or a limit was passed.
        """
        parsed = self._pushed(self._start)
        if parsed is None:
            parsed = self._parse(self._start, 0)
        if parsed is None:
            if len(self._buffer) - self._start > self._max_pending:
                raise RespError(f"a reply still unfinished after {self._max_pending} bytes")
            return NEED_DATA
        reply, self._start = parsed
        return reply

    def _pushed(self, start: int) -> tuple[Reply, int] | None:
        # The feed's common replies, each read with one match: an array of a kind, a
        # channel and an integer (a confirmation), or of a kind, a channel and data (a
        # message, its data taken by its length). None: any other shape (a kind or a
        # channel with CR or LF in it, too long a one), or not whole yet: then parsed in
        # full, with every check.
        buffer = self._buffer
        match = _PUSHED.match(buffer, start)
        if match is None:
            return None
        kind_length, kind, channel_length, channel, number, data_length = match.groups()
        if len(kind) != int(kind_length) or len(channel) != int(channel_length):
            return None
        if max(len(kind), len(channel)) > self._max_bulk:
            return None  # (refused by the full parse)
        end = match.end()
        if number is not None:
            return [bytes(kind), bytes(channel), int(number)], end
        length = int(data_length)
        if length > self._max_bulk or buffer[end + length : end + length + 2] != b"\r\n":
            return None
        return [bytes(kind), bytes(channel), bytes(buffer[end : end + length])], end + length + 2

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
        if kind == 0x24:  # $
            length = _integer(text)
            if length == -1:
                return None, after
            if not 0 <= length <= self._max_bulk:
                raise RespError(f"a bulk string of {length} bytes (at most {self._max_bulk})")
            end = after + length
            if len(buffer) < end + 2:
                return None
            if buffer[end : end + 2] != b"\r\n":
                raise RespError("a bulk string does not end with CRLF")
            return bytes(buffer[after:end]), end + 2
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
        if kind == 0x3A:  # :
            return _integer(text), after
        if kind == 0x2B:  # +
            return text, after
        if kind == 0x2D:  # -
            return ErrorReply(text.decode("utf-8", "replace")), after
        raise RespError(f"a reply starts with {bytes([kind])!r}, not a RESP2 type")


def _integer(text: bytes) -> int:
    if len(text) <= 20 and text.isdigit():  # (the common case: a length, a count)
        return int(text)
    digits = text[1:] if text[:1] == b"-" else text
    if not digits.isdigit() or len(digits) > 19:
        raise RespError(f"{text[:32]!r} is not an integer")
    return int(text)
