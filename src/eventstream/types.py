"""ASGI type aliases used by the public API, compatible with Starlette's and hypercorn's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from ._base import Grant
from ._sse import ServerSentEvent

__all__ = [
    "ASGIApp",
    "Authorize",
    "ChannelSpec",
    "EventLike",
    "Message",
    "Receive",
    "Scope",
    "Send",
]

# The same shapes as Starlette's and hypercorn's aliases, so that their
# scope, receive and send can be passed straight through.
#: An ASGI connection scope (``scope["type"]``, ``scope["path"]``, ...).
Scope = MutableMapping[str, Any]
#: An ASGI event or message (``{"type": "http.request", ...}``).
Message = MutableMapping[str, Any]
#: An ASGI ``receive`` callable.
Receive = Callable[[], Awaitable[Message]]
#: An ASGI ``send`` callable.
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


#: ``EventStream(authorize=...)``: takes the request scope and its channels,
#: returns (or awaits to) whether the request may stream them: a bool, or a
#: :class:`~eventstream.auth.Grant` (yes, until ``expires_at``); raises
#: :class:`~eventstream.auth.Unauthorized` for a 401.
Authorize = Callable[[Scope, list[str]], bool | Grant | Awaitable[bool | Grant]]

#: What a publish accepts: an event, or a mapping of its fields.
EventLike = ServerSentEvent | Mapping[str, Any]

_ChannelNames = str | Iterable[str]

#: What ``EventStream.__call__`` accepts: a channel name (each ``{token}`` is
#: filled from ``scope["path_params"]``), a list of them, or a callable that
#: computes the channels from the request scope (sync or async).
ChannelSpec = str | Iterable[str] | Callable[[Scope], _ChannelNames | Awaitable[_ChannelNames]]
