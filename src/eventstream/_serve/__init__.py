"""The request path: an event-stream request parsed once into a value, refused, held at a GRIP
proxy, or streamed (its connection: replay, ids, writes, keep-alives)."""

from ._endpoint import EventStreamEndpoint, Serving, serve

__all__ = ["EventStreamEndpoint", "Serving", "serve"]
