"""Channel names: validation, ``{token}`` templates and per-request resolution."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from typing import Any

from .types import ChannelSpec, Scope

__all__ = ["BadRequest", "ChannelResolver", "check_channel_name", "normalize_channels"]

_TOKEN = re.compile(r"\{([^{}]*)\}")
# Control characters would corrupt logs and headers; , ; and " cannot appear in
# a Grip-Channel header, so a name a GRIP proxy could not carry is refused too.
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f,;"]')


class BadRequest(Exception):
    """A request the endpoint answers with a 4xx status and a plain-text reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def check_channel_name(name: object, max_length: int) -> str:
    """Return ``name`` if it is a valid channel name.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: ``name`` is empty, longer than ``max_length``, has
            leading or trailing white space, or contains a control character,
            ``,``, ``;`` or ``"``.
    """
    if not isinstance(name, str):
        raise TypeError(f"a channel name must be a str, not {type(name).__name__}")
    if not name:
        raise ValueError("a channel name must not be empty")
    if len(name) > max_length:
        raise ValueError(f"channel name is {len(name)} characters long; the limit is {max_length}")
    if name != name.strip():
        raise ValueError(f"channel name {name!r} has leading or trailing white space")
    if _FORBIDDEN.search(name):
        raise ValueError(f"channel name {name!r} contains a control character, ',', ';' or '\"'")
    return name


def normalize_channels(names: Iterable[str], *, max_channels: int, max_length: int) -> tuple[str, ...]:
    """Trim, check and de-duplicate the channels of one request.

    Raises:
        BadRequest: no channel is left, there are too many, or one is invalid.
    """
    result: dict[str, None] = {}
    for raw in names:
        if not isinstance(raw, str):
            raise TypeError(f"a channel name must be a str, not {type(raw).__name__}")
        name = raw.strip()
        if not name:
            continue
        try:
            check_channel_name(name, max_length)
        except ValueError as exc:
            raise BadRequest(f"Invalid channel: {exc}") from None
        result[name] = None
        if len(result) > max_channels:
            raise BadRequest(f"Too many channels: at most {max_channels} per request")
    if not result:
        raise BadRequest("No channels specified")
    return tuple(result)


class ChannelResolver:
    """Computes the channels of a request from what was given to ``EventStream(...)``."""

    def __init__(self, spec: ChannelSpec) -> None:
        self._templates: tuple[str, ...] | None = None
        self._func: Callable[[Scope], Any] | None = None
        if isinstance(spec, str):
            self._templates = (spec,)
        elif callable(spec):
            self._func = spec
        else:
            templates = tuple(spec)
            for template in templates:
                if not isinstance(template, str):
                    raise TypeError(
                        f"channels must be str, an iterable of str or a callable; got an item {template!r}"
                    )
            self._templates = templates
        self.spec = spec

    async def resolve(self, scope: Scope) -> Iterable[str]:
        """The raw channel names for the request ``scope``.

        Raises:
            BadRequest: a ``{token}`` has no route parameter.
        """
        if self._func is not None:
            result = self._func(scope)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, str):
                return (result,)
            return tuple(result)
        assert self._templates is not None
        params = scope.get("path_params") or {}
        return tuple(_fill(template, params) for template in self._templates)


def _fill(template: str, params: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match[1]
        try:
            return str(params[token])
        except (KeyError, TypeError):
            raise BadRequest(f"No route parameter {token!r} for channel {template!r}") from None

    return _TOKEN.sub(replace, template) if "{" in template else template
