"""Which channels a token grants: templates filled from its claims, and prefixes.

A pattern is a channel name that may hold ``{claim}`` fields (``user-{sub}``)
and may end with ``*`` (``room-*``: any channel that starts with ``room-``
and has more after it). Only the pattern's own text can make a prefix: a
claim's value fills a field only when it is a plain word (letters, digits,
``_ @ + = -`` and single dots inside), so ``sub = "*"``, ``"a,b"`` or
``"a/../b"`` grant nothing rather than more. Nor may it hold the character
that follows its field, nor, for a field that follows another one and a
single separator (``{org}-{sub}``), that separator: with ``user-{sub}-*``
the sub ``bob-x`` would be granted ``user-bob-x-...``, which is ``bob``'s,
and ``{org}-{sub}`` would make ``a-b-c`` of org ``a``, sub ``b-c`` and of
org ``a-b``, sub ``c``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ChannelPattern", "granted", "patterns_from_claim"]

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a claim's value may be to fill a field: no separator, wildcard, path or control character.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9_@+=-]+(?:\.[A-Za-z0-9_@+=-]+)*")
_MAX_VALUE = 128
_MAX_CLAIM_PATTERNS = 256


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """One granted pattern: ``text`` with ``{claim}`` fields, a prefix when it ends with ``*``.

    Raises:
        ValueError: ``text`` is empty, is only ``*``, has a ``*`` before its end,
            a ``{`` or ``}`` that is not part of a ``{claim}`` field, a field
            just before its final ``*`` (``user-{sub}*`` would grant the sub
            ``bob`` the channel ``user-bobby``), or two fields with nothing
            between them.
        TypeError: ``text`` is not a str.
    """

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"a channel pattern must be a str, not {type(self.text).__name__}")
        body = self.text.removesuffix("*")
        if not body:
            raise ValueError(f"channel pattern {self.text!r} grants every channel")
        if "*" in body:
            raise ValueError(f"channel pattern {self.text!r}: '*' may only end a pattern")
        if "{" in _FIELD.sub("", body) or "}" in _FIELD.sub("", body):
            raise ValueError(f"channel pattern {self.text!r}: '{{' and '}}' only enclose a claim's name")
        # Where a value ends must show: `user-{sub}*` would give the sub bob `user-bobby`, and
        # `{org}{sub}` the same channel to org a, sub bc and to org ab, sub c.
        if self.text.endswith("}*"):
            raise ValueError(
                f"channel pattern {self.text!r}: a field must not end a prefix (bob would get bobby's "
                "channels): put a separator before the '*', as in 'user-{sub}-*'"
            )
        if "}{" in body:
            raise ValueError(f"channel pattern {self.text!r}: two fields need a separator between them")

    @property
    def fields(self) -> frozenset[str]:
        """The names of the claims the pattern's ``{claim}`` fields are filled from."""
        return frozenset(_FIELD.findall(self.text))

    @property
    def prefix(self) -> bool:
        """Whether the pattern grants every channel that starts with its filled text."""
        return self.text.endswith("*")

    def fill(self, claims: Mapping[str, Any]) -> str | None:
        """The pattern's text (without a final ``*``) with its fields filled from ``claims``.

        ``None`` when a field's claim is missing or is not a plain word (a str,
        or an int, of at most 128 characters), or holds the character that
        follows its field in the pattern, or, when its field follows another
        field and one character (``{org}-{sub}``), that character (``user-{sub}-*``
        refuses the sub ``bob-x``, ``{org}-{sub}`` the org ``a-b`` and the sub
        ``b-c``): the pattern then grants nothing.
        """
        body = self.text.removesuffix("*")
        if "{" not in body:
            return body
        parts: list[str] = []
        done = 0
        for match in _FIELD.finditer(body):
            raw = claims.get(match[1])
            text = str(raw) if isinstance(raw, int) and not isinstance(raw, bool) else raw
            if not isinstance(text, str) or len(text) > _MAX_VALUE or not _SAFE_VALUE.fullmatch(text):
                return None
            if any(separator in text for separator in _separators(body, match)):
                return None
            parts += (body[done : match.start()], text)
            done = match.end()
        return "".join(parts) + body[done:]


def _separators(body: str, match: re.Match[str]) -> str:
    # What the value of field `match` may not hold, or two claims' values could make one channel:
    # the character after the field, and the one before it when another field comes just before.
    start, end = match.span()
    before = body[start - 1] if start >= 2 and body[start - 2] == "}" else ""
    return body[end : end + 1] + before


def patterns_from_claim(value: object) -> list[ChannelPattern]:
    """The patterns a token's channels claim lists (a list of str, or one str).

    Entries that are not valid patterns are skipped, and so are those past
    the 256th. A claim's patterns are the issuer's word, so they may end with
    ``*``; their ``{...}`` fields are filled from the same token's claims.
    """
    if isinstance(value, str):
        value = [value]
    entries: list[object] = value if isinstance(value, list) else []
    patterns = []
    for entry in entries[:_MAX_CLAIM_PATTERNS]:
        try:
            patterns.append(ChannelPattern(entry))  # type: ignore[arg-type]
        except (ValueError, TypeError):
            continue
    return patterns


def granted(patterns: Sequence[ChannelPattern], claims: Mapping[str, Any], channels: Iterable[str]) -> bool:
    """Whether ``patterns``, filled from ``claims``, grant every one of ``channels``."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        filled = pattern.fill(claims)
        if filled is None:
            continue
        if pattern.prefix:
            prefixes.append(filled)
        else:
            exact.add(filled)
    return all(
        name in exact or any(name.startswith(start) and len(name) > len(start) for start in prefixes)
        for name in channels
    )
