"""The incremental decoder of a ``text/event-stream`` body (WHATWG rules), sans I/O."""

from __future__ import annotations

import codecs
import collections
import enum
from typing import Final, Literal

from ._event import FORBIDDEN_IN_FIELD, MAX_RETRY, ServerSentEvent, header_problem, keep_received_id

__all__ = ["NEED_DATA", "SSEDecoder"]

_MAX_RETRY_DIGITS: Final = len(str(MAX_RETRY))
#: What a data line counts in :attr:`SSEDecoder.buffered` besides its characters (its LF when joined
#: included). A line costs a list slot (8 bytes) and, unless empty or one Latin-1 character (shared
#: objects), a str of its own (49 to 76 bytes before its characters): 88 bytes for one 4-byte
#: character. At 24, no line costs more than 4 bytes per unit counted (88 / 25), as a long line of
#: 4-byte characters, the worst case a limit on characters allowed, costs; counting 1 let a million
#: empty lines hold 8 MB and a million 4-byte characters on lines of their own 44 MB.
_LINE_COST: Final = 24
#: An unfinished line's last piece shorter than this takes the next piece in (a copy of at most this
#: many characters more): each piece kept apart is then at least this long, its 84 bytes of list slot
#: and header under a tenth of a byte a character, however small the chunks the server sends.
_SHORT_PIECE: Final = 1024


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData.NEED_DATA
"""Returned by :meth:`SSEDecoder.next_event` when more bytes are needed."""


class SSEDecoder:
    """An incremental decoder of a ``text/event-stream`` body.

    Feed it bytes as they arrive with :meth:`feed`; take complete events with
    :meth:`next_event` until it returns :data:`NEED_DATA`. Chunks may be cut
    anywhere, even inside a UTF-8 sequence or between CR and LF.

    The rules are WHATWG's: lines end with CRLF, LF or CR; a leading
    byte-order mark is skipped; lines starting with ``:`` are comments; one
    space after the colon is dropped; several ``data:`` lines join with LF; an
    ``id`` containing NUL is ignored; ``retry`` is only taken when it is all
    ASCII digits (one above :data:`MAX_RETRY` is taken as :data:`MAX_RETRY`:
    no field value makes :meth:`feed` raise); an event without any ``data``
    line is not dispatched; the bytes after the last blank line are not an
    event. Invalid UTF-8 is replaced with U+FFFD.

    Decoded events are :class:`ServerSentEvent` objects built with ``text=``:
    ``event`` is ``None`` when the stream named no type (a browser reports
    ``message``), ``id`` is the id given in that event (``None`` when it gave
    none; :attr:`last_event_id` keeps the id a browser would report), and
    ``retry`` the reconnection time given in that event. Ids are kept as
    received, even one :class:`ServerSentEvent` refuses to build (a space at
    an end, a control character, which no HTTP header can carry back):
    :class:`~eventstream.client.EventSource` stops with an error rather than
    resume from one. An ``event`` field
    containing NUL is ignored, as :class:`ServerSentEvent` refuses it.

    :attr:`last_event_id` follows the WHATWG "dispatch the event" steps: it
    moves when :meth:`next_event` hands out an event (to the id a browser's
    ``MessageEvent.lastEventId`` would hold), never for an ``id:`` line whose
    event has not ended with its blank line (a stream cut there loses nothing
    when the client resumes from it), nor for events still waiting to be
    taken. An event with an ``id`` but no ``data`` is not dispatched, yet its
    id is taken once the events before it have been, as browsers do.

    Args:
        last_event_id: The id to start from, for a decoder that reads the
            stream of a reconnection: the ``Last-Event-ID`` that was sent. A
            browser keeps its last event id across reconnections; an event
            without an ``id:`` line leaves it as it is.

    Raises:
        TypeError: ``last_event_id`` is not a str.
        ValueError: ``last_event_id`` contains CR, LF or NUL (no stream can
            set such an id).
    """

    def __init__(self, last_event_id: str = "") -> None:
        if not isinstance(last_event_id, str):
            raise TypeError(f"last_event_id must be a str, not {type(last_event_id).__name__}")
        if any(char in last_event_id for char in FORBIDDEN_IN_FIELD):
            raise ValueError(f"last_event_id must not contain CR, LF or NUL characters: {last_event_id!r}")
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []  # the unfinished line, in pieces
        self._pending_size = 0
        self._data_size = 0
        self._started = False
        self._skip_lf = False
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None
        self._retry: int | None = None
        self._id_buffer = last_event_id  # WHATWG's "last event ID buffer"
        # Each ended event, with the last event ID buffer when it ended; None
        # stands for an event with no data: not dispatched, but its id counts.
        self._ready: collections.deque[tuple[ServerSentEvent | None, str]] = collections.deque()
        self.last_event_id: str = last_event_id
        """The id a browser would send in ``Last-Event-ID`` after the events taken so far."""
        self.retry: int | None = None
        """The last reconnection time (ms) the stream asked for, or ``None``."""

    def feed(self, data: bytes) -> None:
        """Add bytes received from the stream. Complete events become available.

        Never raises on what the bytes hold. All the events they end are built
        at once: a reader that does not trust the stream feeds it in bounded
        pieces, each once the events before are taken, as
        :class:`~eventstream.client.EventSource` does.
        """
        text = self._utf8.decode(data)
        if not self._started and text:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if "\r" not in text and "\n" not in text:
            # No line ends: keep the piece (joining every time would be quadratic).
            if text:
                pending = self._pending
                if pending and len(pending[-1]) < _SHORT_PIECE:
                    pending[-1] += text
                else:
                    pending.append(text)
                self._pending_size += len(text)
            return
        buffer = "".join(self._pending) + text if self._pending else text
        start = 0
        length = len(buffer)
        # Each search result is kept until passed, so the buffer is scanned once.
        cr = buffer.find("\r")
        lf = buffer.find("\n")
        while start < length:
            if 0 <= cr < start:
                cr = buffer.find("\r", start)
            if 0 <= lf < start:
                lf = buffer.find("\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                end, nxt = lf, lf + 1
            else:
                end, nxt = cr, cr + 1
                if nxt < length:
                    if buffer[nxt] == "\n":
                        nxt += 1
                else:
                    self._skip_lf = True
            self._line(buffer[start:end])
            start = nxt
        rest = buffer[start:]
        self._pending = [rest] if rest else []
        self._pending_size = len(rest)

    @property
    def buffered(self) -> int:
        """What the event being received holds: the characters of its data lines and unfinished line.

        Each data line counts 24 more, for what it costs besides its characters:
        however the event is cut into lines, it holds at most about 4 bytes of
        memory per unit counted. A client reading from a server it does not
        trust can bound this, as nothing else limits the size of one event.
        """
        return self._pending_size + self._data_size

    def next_event(self) -> ServerSentEvent | Literal[_NeedData.NEED_DATA]:
        """Return the next complete event, or :data:`NEED_DATA`; update :attr:`last_event_id`."""
        while self._ready:
            event, self.last_event_id = self._ready.popleft()
            if event is not None:
                return event
        return NEED_DATA

    def _line(self, line: str) -> None:
        if not line:
            self._dispatch()
            return
        if line[0] == ":":
            return
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._data_size += len(value) + _LINE_COST
        elif name == "event":
            self._event = value if "\0" not in value else self._event
        elif name == "id":
            if "\0" not in value:
                self._id = value
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            digits = value.lstrip("0")  # int() of thousands of digits would raise
            self._retry = MAX_RETRY if len(digits) > _MAX_RETRY_DIGITS else min(int(digits or "0"), MAX_RETRY)
            self.retry = self._retry

    def _dispatch(self) -> None:
        event, data, id_, retry = self._event, self._data, self._id, self._retry
        self._event, self._data, self._id, self._retry = None, [], None, None
        self._data_size = 0
        # WHATWG: the last event ID string is set from the buffer first, then an
        # event without data is dropped. The buffer is kept for the next event.
        if not data:
            if self._id_buffer != (self._ready[-1][1] if self._ready else self.last_event_id):
                self._ready.append((None, self._id_buffer))
            return
        if id_ is None or header_problem(id_) is None:
            decoded = ServerSentEvent(event=event or None, text="\n".join(data), id=id_, retry=retry)
        else:  # kept as received (WHATWG), though an event built with it would be refused
            decoded = ServerSentEvent(event=event or None, text="\n".join(data), retry=retry)
            keep_received_id(decoded, id_)
        self._ready.append((decoded, self._id_buffer))
