"""A response body's ``Content-Encoding`` (none, gzip or deflate) undone a bounded piece at a time."""

from __future__ import annotations

import zlib
from typing import Final

import httpx

__all__ = ["ACCEPT_ENCODING", "CODINGS", "Body", "codings"]

#: The content codings this client decodes (a piece at a time), and asks for.
CODINGS: Final = ("gzip", "x-gzip", "deflate")
ACCEPT_ENCODING: Final = "gzip, deflate"


def codings(response: httpx.Response) -> list[str]:
    """The codings of ``response``'s ``Content-Encoding`` (lower case), ``identity`` left out."""
    value = response.headers.get("content-encoding", "")
    return [c for c in (part.strip().lower() for part in value.split(",")) if c not in ("", "identity")]


class Body:
    """Undoes a response's ``Content-Encoding`` (none, gzip or deflate) a bounded piece at a time.

    httpx's own decoders hand out all that a received chunk expands to: a few
    KiB of gzip can be hundreds of MiB. Here each :meth:`take` gives at most
    ``limit`` bytes; the rest of the input waits, compressed.
    """

    def __init__(self, coding: str | None) -> None:
        self._coding = coding
        self._zlib = None if coding is None else self._decompressor(raw=False)
        self._input = b""
        self._full = False  # the last take filled its limit: zlib may hold more output
        self._started = False

    def _decompressor(self, *, raw: bool) -> zlib._Decompress:
        if self._coding == "deflate":
            return zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS | 16)

    def give(self, raw: bytes) -> None:
        """Add bytes received (only called once :meth:`take` returned ``b""``)."""
        self._input += raw

    def take(self, limit: int) -> bytes:
        """At most ``limit`` bytes of body, ``b""`` when more input is needed.

        Raises:
            httpx.DecodingError: the body is not valid gzip or deflate.
        """
        if self._zlib is None:
            piece, self._input = self._input[:limit], self._input[limit:]
            return piece
        out = b""
        while not out and (self._input or self._full):
            try:
                out = self._zlib.decompress(self._input, limit)
            except zlib.error as exc:
                if self._coding != "deflate" or self._started:
                    raise httpx.DecodingError(f"the {self._coding} body is corrupt: {exc}") from exc
                self._zlib = self._decompressor(raw=True)  # deflate without its zlib wrapper, as httpx
                self._started = True
                continue
            self._started = True
            self._input = self._zlib.unconsumed_tail
            self._full = len(out) == limit
            if self._zlib.eof:
                rest = self._zlib.unused_data
                if rest and self._coding != "deflate":  # another gzip member follows
                    self._zlib = self._decompressor(raw=False)
                self._input = rest if self._coding != "deflate" else b""
                self._full = False
        return out
