"""Channel names: validation, ``{token}`` templates and per-request resolution."""

from __future__ import annotations

import inspect
import re
import reprlib
from collections.abc import Callable, Iterable
from typing import Any

from ..types import ChannelSpec, Scope

__all__ = ["BadChannelsResult", "BadRequest", "ChannelResolver", "check_channel_name", "normalize_channels"]

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


class BadChannelsResult(Exception):
    """A channels callable returned something that is not channel names (a server error)."""


def _describe(func: Callable[..., Any]) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if isinstance(qualname, str):
        return f"{module}.{qualname}" if isinstance(module, str) else qualname
    return repr(func)


class ChannelResolver:
    """Computes the channels of a request from what was given to ``stream(channels)``.

    Names and templates are checked here, once, when the endpoint is built: a
    ``{token}`` stands for any valid text, so what is left must be a valid
    channel list. A callable is checked on each request.

    Raises:
        TypeError: ``spec`` is neither a str, an iterable of str nor a callable.
        ValueError: the names give no channel, too many, or an invalid one.
    """

    @property
    def label(self) -> str:
        """Its spec as written, for a metrics label: the names and templates joined by ``,``, or the
        channels callable's name; never anything of a request."""
        if self._func is not None:
            return _describe(self._func)
        assert self._templates is not None
        return ",".join(self._templates)

    def __init__(self, spec: ChannelSpec, *, max_channels: int, max_length: int) -> None:
        self._templates: tuple[str, ...] | None = None
        self._func: Callable[[Scope], Any] | None = None
        self.spec: ChannelSpec = spec
        if isinstance(spec, str):
            templates: tuple[str, ...] = (spec,)
        elif callable(spec):
            self._func = spec
            return
        elif isinstance(spec, Iterable) and not isinstance(spec, bytes | bytearray | memoryview):
            templates = tuple(spec)
        else:
            raise TypeError(
                "channels must be a channel name, an iterable of names or a callable "
                f"that takes the scope and returns names, not {type(spec).__name__}"
            )
        for template in templates:
            if not isinstance(template, str):
                raise TypeError(f"a channel name must be a str, not {type(template).__name__}: {template!r}")
        try:
            # A token is filled from the route: check what surrounds it with a stand-in.
            normalize_channels(
                (_TOKEN.sub("x", template) for template in templates),
                max_channels=max_channels,
                max_length=max_length,
            )
        except BadRequest as exc:
            raise ValueError(f"channels {reprlib.repr(spec)}: {exc.reason}") from None
        self._templates = templates

    async def resolve(self, scope: Scope) -> Iterable[str]:
        """The raw channel names for the request ``scope``.

        Raises:
            BadRequest: a ``{token}`` has no route parameter.
            BadChannelsResult: the callable returned neither a str nor an
                iterable of str (the message names the callable).
        """
        func = self._func
        if func is not None:
            result = func(scope)
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, str):
                return (result,)
            if isinstance(result, Iterable) and not isinstance(result, bytes | bytearray | memoryview):
                names = tuple(result)
                if all(isinstance(name, str) for name in names):
                    return names
            raise BadChannelsResult(
                f"the channels callable {_describe(func)} returned {reprlib.repr(result)}: "
                "expected a channel name or an iterable of names"
            )
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
