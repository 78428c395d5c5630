"""The Server-Sent Events wire format, sans I/O.

This module turns :class:`ServerSentEvent` objects into bytes and bytes back
into events. It performs no I/O and imports no concurrency library, so it can
be used by any client or server, and tested one byte at a time.

Encoding::

    >>> encode(ServerSentEvent(event="message", data={"name": "John"}))
    b'event: message\\ndata: {"name":"John"}\\n\\n'

Decoding follows the WHATWG HTML "event stream interpretation" rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html)::

    decoder = SSEDecoder()
    decoder.feed(chunk)
    while (event := decoder.next_event()) is not NEED_DATA:
        ...
"""

from __future__ import annotations

import codecs
import collections
import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["MAX_RETRY", "NEED_DATA", "SSEDecoder", "ServerSentEvent", "encode"]

_FORBIDDEN_IN_FIELD: Final = ("\r", "\n", "\0")

#: The longest ``retry`` (ms) an event may give and a decoder reports: 2**31 - 1, about
#: 24.8 days, the longest delay JavaScript's ``setTimeout`` waits. A decoder clamps a
#: longer one to it.
MAX_RETRY: Final = 2**31 - 1
_MAX_RETRY_DIGITS: Final = len(str(MAX_RETRY))

# What an HTTP header value cannot hold (RFC 9110 field-value, as h11 and h2 check it):
# a control character other than a tab inside, or a space or tab at either end.
_NOT_IN_HEADER: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")


def header_problem(event_id: str) -> str | None:
    """Why ``event_id`` cannot be sent back in a ``Last-Event-ID`` header, or ``None`` if it can.

    Non-ASCII characters can (as UTF-8); control characters other than a tab
    inside, and a space or tab at either end, cannot: HTTP clients refuse
    to send them.
    """
    match = _NOT_IN_HEADER.search(event_id)
    if match is None:
        return None
    if match[0] in " \t":
        return f"it starts or ends with {match[0]!r}"
    return f"it contains the control character {match[0]!r}"


# A UTF-16 surrogate pair held as two code points, or a lone surrogate.
_SURROGATES: Final = re.compile(r"[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]")


def _surrogate_to_json(match: re.Match[str]) -> str:
    text = match[0]
    if len(text) == 2:  # a pair: the character it stands for, as JavaScript reads it
        return chr(0x10000 + ((ord(text[0]) - 0xD800) << 10) + (ord(text[1]) - 0xDC00))
    return f"\\u{ord(text):04x}"  # a lone surrogate: escaped, as JSON.stringify writes it


# Same text as JavaScript's JSON.stringify(value): no whitespace, non-ASCII
# characters left as they are. NaN and Infinity are not JSON; JSON.stringify
# would silently turn them into null, we refuse them instead. One encoder for
# every call (json.dumps with options builds one per call; encode() keeps no
# state between calls, so it is safe from any thread).
_json_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _well_formed(json_text: str) -> str:
    # JSON.stringify escapes a lone surrogate (\ud800), which UTF-8 cannot carry.
    # Surrogates can only be inside JSON strings, where an escape is valid.
    return _SURROGATES.sub(_surrogate_to_json, json_text)


class _NoData(enum.Enum):
    NO_DATA = "NO_DATA"

    def __repr__(self) -> str:
        return "<no data>"


_NO_DATA: Final = _NoData.NO_DATA
"""The default of ``ServerSentEvent.data``: the event carries one empty ``data:`` line."""


def _check_field(name: str, value: object, *, allow_empty: bool) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, not {type(value).__name__}")
    for char in _FORBIDDEN_IN_FIELD:
        if char in value:
            raise ValueError(
                f"{name} must not contain CR, LF or NUL characters (found {char!r} in {value!r})"
            )
    if not allow_empty and not value:
        raise ValueError(f"{name} must not be empty; use None for the default")


def _check_id(name: str, value: object) -> None:
    _check_field(name, value, allow_empty=True)
    assert isinstance(value, str)
    problem = header_problem(value)
    if problem is not None:
        raise ValueError(
            f"{name} {value!r} cannot be sent back in a Last-Event-ID header: {problem}"
            " (no control characters but tabs inside, no space or tab at either end)"
        )


@dataclass(frozen=True, kw_only=True, slots=True, init=False)
class ServerSentEvent:
    """One Server-Sent Event. Frozen; every field is checked when it is built.

    Args:
        event: The event type (``event:`` field). ``None`` means the browser's
            default type, ``message``.
        data: Any JSON-serialisable value, ``None`` included (sent as
            ``null``). It is encoded as JavaScript's ``JSON.stringify`` does:
            compact, on one ``data:`` line, non-ASCII characters as they are
            and a lone surrogate escaped (``\\ud800``).
        text: Text sent as it is, for clients that do not want JSON. A text
            with line breaks (CR, LF or CRLF) becomes several ``data:`` lines;
            the client sees them joined by LF. Give ``data`` or ``text``, not
            both; with neither the event carries one empty ``data:`` line
            (browsers dispatch no event without one).
        id: The event id (``id:`` field), echoed by browsers in
            ``Last-Event-ID`` when they reconnect: so it must be a valid HTTP
            header value (non-ASCII characters are, as UTF-8).
        retry: The reconnection delay in milliseconds the client should use,
            at most :data:`MAX_RETRY`.

    Raises:
        ValueError: ``event`` or ``id`` contains CR, LF or NUL (they would let
            one field inject others, so they are refused, never stripped);
            ``id`` holds another control character but a tab, or starts or
            ends with a space or tab (a client could not send it back in
            ``Last-Event-ID``, so it could never resume after that event);
            ``event`` is empty; ``retry`` is not an integer from 0 to
            :data:`MAX_RETRY`; both
            ``data`` and ``text`` are given; ``data`` holds NaN or infinity;
            ``event``, ``id`` or ``text`` holds a lone surrogate, which UTF-8
            cannot encode.
        TypeError: ``data`` is not JSON-serialisable, or a field has the
            wrong type.

    The wire form is computed once, when the event is built, and shared by
    every subscriber it is sent to: see :func:`encode`.
    """

    event: str | None = None
    data: Any = _NO_DATA
    text: str | None = None
    id: str | None = None
    retry: int | None = None
    _body: bytes = field(init=False, repr=False, compare=False, default=b"")
    _wire: bytes = field(init=False, repr=False, compare=False, default=b"")

    def __init__(
        self,
        *,
        event: str | None = None,
        data: Any = _NO_DATA,
        text: str | None = None,
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        # Written out, not generated: a frozen dataclass's __init__ sets each of the
        # seven slots through object.__setattr__, most of the cost of building an
        # event; the slots' own descriptors (_SLOTS, below the class) take a third.
        head = ""
        if event is not None:
            _check_field("event", event, allow_empty=False)
            head = f"event: {event}\n"
        if id is not None:
            _check_id("id", id)
        if retry is not None:
            if isinstance(retry, bool) or not isinstance(retry, int) or not 0 <= retry <= MAX_RETRY:
                raise ValueError(
                    f"retry must be an int (milliseconds) from 0 to {MAX_RETRY} (MAX_RETRY), not {retry!r}"
                )
            head += f"retry: {retry}\n"
        if text is not None:
            if data is not _NO_DATA:
                raise ValueError("give either data (sent as JSON) or text (sent as is), not both")
            if not isinstance(text, str):
                raise TypeError(f"text must be a str or None, not {type(text).__name__}")
            if "\n" in text or "\r" in text:
                lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
                body_text = head + "".join([f"data: {line}\n" for line in lines])
            else:  # one line: the usual case
                body_text = f"{head}data: {text}\n"
        elif data is not _NO_DATA:
            body_text = f"{head}data: {_json_dumps(data)}\n"
        else:
            body_text = head + "data: \n"
        set_event, set_data, set_text, set_id, set_retry, set_body, set_wire = _SLOTS
        set_event(self, event)
        set_data(self, data)
        set_text(self, text)
        set_id(self, id)
        set_retry(self, retry)
        try:
            body = body_text.encode("utf-8")
            wire = body + b"\n" if id is None else b"%bid: %b\n\n" % (body, id.encode("utf-8"))
        except UnicodeEncodeError:
            body, id_line = self._encode_surrogates(body_text)
            wire = body + id_line + b"\n"
        set_body(self, body)
        set_wire(self, wire)

    def _encode_surrogates(self, text: str) -> tuple[bytes, bytes]:
        # The rare path: some field holds a surrogate code point. In JSON data it
        # is escaped as JSON.stringify does; anywhere else it cannot be sent.
        for name in ("event", "id", "text"):
            value = getattr(self, name)
            if value is not None and _SURROGATES.search(value):
                raise ValueError(
                    f"{name} contains a surrogate code point ({value!r}), which UTF-8 cannot encode"
                )
        body = _well_formed(text).encode("utf-8")
        return body, b"" if self.id is None else b"id: " + self.id.encode("utf-8") + b"\n"

    @property
    def payload(self) -> str:
        """The text a browser's ``MessageEvent.data`` holds for this event."""
        if self.text is not None:
            return self.text.replace("\r\n", "\n").replace("\r", "\n")
        if self.data is not _NO_DATA:
            return _well_formed(_json_dumps(self.data))
        return ""

    def json(self) -> Any:
        """The payload parsed as JSON (``data`` itself when the event was built with it).

        Raises:
            ValueError: the payload is not valid JSON (an event built with
                neither ``data`` nor ``text`` has an empty payload).
        """
        if self.data is not _NO_DATA:
            return self.data
        return json.loads(self.payload)


# The slots' descriptors, in the order ServerSentEvent.__init__ sets them.
_SLOTS: Final = tuple(
    ServerSentEvent.__dict__[name].__set__
    for name in ("event", "data", "text", "id", "retry", "_body", "_wire")
)


def encode(event: ServerSentEvent) -> bytes:
    """Return the wire bytes of ``event``, ending with the blank line that dispatches it.

    Fields come in the order ``event``, ``retry``, ``data``, ``id``. The bytes
    are computed when the event is built, so this costs nothing.
    """
    return event._wire


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
        if any(char in last_event_id for char in _FORBIDDEN_IN_FIELD):
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
                self._pending.append(text)
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
        """Characters held for the event being received: its data lines and its unfinished line.

        A client reading from a server it does not trust can bound this, as
        nothing else limits the size of one event.
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
            self._data_size += len(value) + 1
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
            _SLOTS[3](decoded, id_)
            _SLOTS[6](decoded, b"%bid: %b\n\n" % (decoded._body, id_.encode("utf-8")))
        self._ready.append((decoded, self._id_buffer))
