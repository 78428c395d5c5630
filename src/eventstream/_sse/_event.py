"""Events and their bytes: :class:`ServerSentEvent` is checked and encoded once, when it is built.

Every byte of an event the library writes comes from here (the ``id:`` line
of an event that gets its id later included: :func:`with_id`).
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "FORBIDDEN_IN_FIELD",
    "MAX_RETRY",
    "ServerSentEvent",
    "encode",
    "header_problem",
    "keep_received_id",
    "with_id",
]

FORBIDDEN_IN_FIELD: Final = ("\r", "\n", "\0")

#: The longest ``retry`` (ms) an event may give and a decoder reports: 2**31 - 1, about
#: 24.8 days, the longest delay JavaScript's ``setTimeout`` waits. A decoder clamps a
#: longer one to it.
MAX_RETRY: Final = 2**31 - 1

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
    for char in FORBIDDEN_IN_FIELD:
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
            wire = body + b"\n" if id is None else with_id(body, id)
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


def with_id(body: bytes, event_id: str) -> bytes:
    """The wire bytes of an event whose fields but ``id`` are ``body`` (as an event built without an id
    has them), with ``event_id`` as its ``id:`` line: for ids given when the event is published or sent.

    ``event_id`` must be one :class:`ServerSentEvent` accepts (the callers make them).
    """
    return b"".join((body, b"id: ", event_id.encode("utf-8"), b"\n\n"))  # the fastest of the spellings


def keep_received_id(event: ServerSentEvent, event_id: str) -> None:
    """Give ``event`` (just decoded, without an id) the id a stream sent, one an event built here refuses.

    The decoder keeps ids as received (WHATWG); a client refuses to resume from such an id.
    """
    _SLOTS[3](event, event_id)
    _SLOTS[6](event, with_id(event._body, event_id))
