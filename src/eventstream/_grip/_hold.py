"""Answering requests that came through a GRIP proxy: hold instructions and the next link.

A request through the proxy is parsed once into a :class:`GripRequest`;
:func:`hold_response` then builds the answer (headers and body) without I/O.

Reliable mode's security rests on two rules:

- The next link is a query-only relative reference (``?...&grip-next-link=1``):
  it names the path the proxy already requested, so it cannot leave the
  origin (a path starting with ``//`` is not copied into it) and carries no
  path of the client's choosing. Its query is percent-encoded, so nothing in
  it can end the link or the header.
- A next-link request signed by the proxy is served the channels the proxy
  says the client holds (``Grip-Last``), which are the channels of the
  original, authorized request. Its path adds nothing: proxies normalise dot
  segments when they resolve the link (``/a/pub/../secret`` becomes
  ``/a/secret``), so the path may name other channels than the original.
  Requests whose path has dot segments are refused in reliable mode anyway,
  because the proxy would fetch their next link somewhere else.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from .._core import HistoryStore, origin_id, replay, resume_positions
from .._sse import STREAM_RESET, stream_open

__all__ = ["NEXT_LINK_PARAM", "GripRequest", "has_dot_segments", "hold_headers", "hold_response", "next_link"]

NEXT_LINK_PARAM = "grip-next-link"
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what text_header makes of bytes that are not UTF-8
# URI characters that cannot end a Link value or a header (no ',', ';', quotes, '<', '>').
_SAFE_LINK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+=:@/?%]+")
# Kept as they are in the next link's query: unreserved characters, '&', '=',
# '+' and valid percent-escapes. Everything else is percent-encoded.
_QUERY_KEPT = re.compile(rb"%[0-9A-Fa-f]{2}|[A-Za-z0-9\-._~&=+]")
_QUERY_BYTE = re.compile(rb"%[0-9A-Fa-f]{2}|.", re.DOTALL)


def parse_grip_last(value: str | None) -> dict[str, str]:
    """``Grip-Last`` values (``events-a; last-id=7``, one per channel, maybe joined by ``,``) by channel.

    Malformed items, and channels whose name has bytes that were not UTF-8
    (lone surrogates), are skipped; an id with such bytes is kept (it
    matches nothing: the client gets ``stream-reset``).
    """
    result: dict[str, str] = {}
    if value is None:
        return result
    for item in value.split(","):
        name, *params = item.split(";")
        name = name.strip()
        if _NOT_UTF8.search(name):
            continue
        for param in params:
            key, _, last_id = param.strip().partition("=")
            if name and key.strip() == "last-id":
                result[name] = last_id.strip().strip('"')
    return result


@dataclass(frozen=True)
class GripRequest:
    """What a request through a GRIP proxy says about itself, parsed once (with the request).

    Attributes:
        signed: Its ``Grip-Sig`` validated with a proxy's verify key.
        next_link: It is the proxy fetching a next link: it has the
            ``grip-next-link`` query parameter and a ``Grip-Last`` header
            (which a client's request through the proxy cannot carry: the
            proxy strips ``Grip-*`` request headers).
        grip_last: The proxy's channels (prefixed) and the id of the last
            event the client has on each, from ``Grip-Last``.
        query: The request's raw query string, which the next link repeats.
    """

    signed: bool
    next_link: bool
    grip_last: Mapping[str, str] = field(default_factory=dict)
    query: bytes = b""

    @classmethod
    def parse(cls, grip_last: str | None, *, marked: bool, query: bytes, signed: bool) -> GripRequest:
        """From the request's ``Grip-Last`` header (decoded as by ``text_header``), whether its query
        has the ``grip-next-link`` parameter (``marked``), its raw query, and its signature's verdict."""
        next_link = grip_last is not None and marked
        return cls(signed, next_link, parse_grip_last(grip_last) if next_link else {}, query)

    @property
    def trusted_next_link(self) -> bool:
        """A next-link request the proxy signed: its ``Grip-Last`` is the proxy's word."""
        return self.signed and self.next_link

    def held_channels(self, prefix: str) -> list[str]:
        """The channels (``prefix`` removed) the proxy says the client holds, in its order.

        Channels without ``prefix`` are not this app's and are left out.
        """
        return [name[len(prefix) :] for name in self.grip_last if name.startswith(prefix)]


def has_dot_segments(path: bytes) -> bool:
    """Whether the request ``path`` (raw) has a ``.`` or ``..`` segment, literal or percent-encoded."""
    path = path.split(b"?", 1)[0]
    return any(unquote_to_bytes(segment) in (b".", b"..") for segment in path.split(b"/"))


def next_link(query: bytes) -> str:
    """The next link: the request's own ``query``, percent-encoded, marked with ``grip-next-link=1``.

    A query-only relative reference: the proxy resolves it against the
    path it requested, so the link can name neither another host nor a
    path of the client's choosing.
    """
    kept = []
    for pair in query.split(b"&") if query else ():
        name = pair.split(b"=", 1)[0].replace(b"+", b" ")
        if not pair or unquote_to_bytes(name) == NEXT_LINK_PARAM.encode():
            continue
        kept.append(_encode_query(pair))
    kept.append(f"{NEXT_LINK_PARAM}=1")
    return "?" + "&".join(kept)


def _encode_query(part: bytes) -> str:
    return "".join(
        chunk.decode("ascii") if _QUERY_KEPT.fullmatch(chunk) else "".join(f"%{byte:02X}" for byte in chunk)
        for chunk in _QUERY_BYTE.findall(part)
    )


def hold_response(
    request: GripRequest,
    names: Sequence[str],
    *,
    last_event_id: str | None,
    retry: int | None,
    history: HistoryStore | None,
    epoch: str,
    prefix: str,
    reliable: bool,
    keep_alive: bytes,
    keep_alive_interval: float | None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The GRIP headers and the body that make the proxy hold the client on ``names``.

    The body is what the client must see first: ``stream-open`` (not on a
    next link: the stream is already open), then ``stream-reset`` if history
    cannot tell what the client missed, or the missed events: after the
    position of ``last_event_id`` on every channel, or, on a next link, after
    the id the proxy gives per channel (``Grip-Last``), both read by
    :func:`~eventstream._core.resume_positions`. In reliable
    mode each channel carries the id of its last event (``prev-id``) and the
    answer a next link where the proxy fetches what it missed.
    """
    body = b""
    # Where the client stands on each channel: from its Last-Event-ID (one id for
    # every channel), or from the proxy, per channel (Grip-Last, on a next link).
    positions: dict[str, int] | None = {}
    if not request.next_link:
        body = stream_open(retry)
        if last_event_id is not None:
            positions = resume_positions(history, epoch, names, last_event_id)
    channels: list[tuple[str, str | None]] = []
    wanted: dict[str, int] = {}
    reset = positions is None
    first_prev_id = origin_id(epoch)  # the "previous id" of a channel's first event
    for name in names:
        last = history.last(name) if history is not None else None
        prev_id = last.id if last is not None else first_prev_id
        channels.append((prefix + name, prev_id if reliable else None))
        if positions is None:
            continue
        if request.next_link:
            known = request.grip_last.get(prefix + name)
            if known is None or known == prev_id:
                continue  # the client has the channel's newest event
            position = resume_positions(history, epoch, [name], known)
            seq = None if position is None else position[name]
        else:
            seq = positions.get(name)
            if seq is None:
                continue  # no Last-Event-ID: a new client
        if seq is None:
            reset = True
        else:
            wanted[name] = seq
    entries, complete = replay(history, wanted)
    if reset or not complete:
        body += STREAM_RESET
    body += b"".join(entry.wire for entry in entries)
    link = next_link(request.query) if reliable else None
    headers = hold_headers(channels, keep_alive, keep_alive_interval, link)
    return headers, body


def _keep_alive_value(data: bytes) -> str:
    # Pushpin trims the value and cuts it at the first ';', and its cstring
    # format only knows \\ \r \n \xHH: use cstring when that is safe, base64 otherwise.
    text = data.decode("utf-8")
    safe = ";" not in text and all(c in "\r\n" or (c >= " " and c != "\x7f") for c in text)
    if safe:
        escaped = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
        if escaped == escaped.strip():
            return f"{escaped}; format=cstring"
    return f"{base64.b64encode(data).decode('ascii')}; format=base64"


def hold_headers(
    channels: Sequence[str | tuple[str, str | None]],
    keep_alive: bytes | None,
    keep_alive_interval: float | None,
    next_link: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The GRIP instruction headers that make a proxy hold a stream on ``channels``.

    A channel may come with the id of the last event the client has
    (``prev-id``); that needs ``next_link``, where the proxy fetches what it
    missed (reliable mode).

    Raises:
        ValueError: ``next_link`` has a character that is not allowed in a
            URI, or one that would end the link (``,``, ``;``, ``<``, ``>``,
            quotes, white space, control characters): percent-encode it.
    """
    if next_link is not None and not _SAFE_LINK.fullmatch(next_link):
        raise ValueError(f"next link {next_link!r} is not a percent-encoded URI reference")
    values = []
    for channel in channels:
        name, prev_id = (channel, None) if isinstance(channel, str) else channel
        values.append(name if prev_id is None else f"{name}; prev-id={prev_id}")
    headers = [
        (b"grip-hold", b"stream"),
        (b"grip-channel", ", ".join(values).encode("utf-8")),
    ]
    if next_link is not None:
        headers.append((b"grip-link", f"<{next_link}>; rel=next".encode("latin-1")))
    if keep_alive is not None and keep_alive_interval is not None:
        timeout = max(1, round(keep_alive_interval))
        value = f"{_keep_alive_value(keep_alive)}; timeout={timeout}"
        headers.append((b"grip-keep-alive", value.encode("utf-8")))
    return headers
