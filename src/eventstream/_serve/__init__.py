"""The request path: an event-stream request parsed once into a value (its channels checked by
``_channels``, which also checks the names publishes use), refused, held at a GRIP proxy, or
streamed (its connection: replay, ids, writes, keep-alives)."""

from ._channels import check_channel_name
from ._endpoint import EventStreamEndpoint, Serving, announce_members, serve
from ._health import HealthEndpoint, Readiness, answer_other, check_readiness

__all__ = [
    "EventStreamEndpoint",
    "HealthEndpoint",
    "Readiness",
    "Serving",
    "answer_other",
    "check_channel_name",
    "check_readiness",
    "announce_members",
    "serve",
]
