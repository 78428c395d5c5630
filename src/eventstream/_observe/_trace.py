"""The hook that spans come through (``eventstream.otel.trace`` installs an OpenTelemetry one).

The library imports no tracing package: a stream's hub holds a
:class:`Tracing` object, ``None`` unless one was installed, and each place
that would make a span pays one ``is None`` check when tracing is off, and
one :attr:`Tracing.active` check when it is on but nothing would record
(OpenTelemetry without an SDK).

A publish runs inside its span; while it runs, :data:`TRACEPARENT` holds
that span's W3C ``traceparent`` (``""`` when the span is not sampled, so
nothing is carried), and a shared broker sends it with the event: the
process that delivers the event from the engine's feed starts its span as
a child of the publish's.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Protocol

__all__ = ["TRACEPARENT", "StreamSpan", "Tracing"]

#: The running publish's ``traceparent`` (``None``: no publish span here; ``""``: none to carry).
TRACEPARENT: ContextVar[str | None] = ContextVar("eventstream_traceparent", default=None)


class StreamSpan(Protocol):
    """The span of one stream's life."""

    def end(self, reason: str) -> None:
        """End it, with why the stream ended (one of ``END_REASONS``). Never raises."""


class Tracing(Protocol):
    """Makes the spans of one event stream. Its methods never raise."""

    @property
    def active(self) -> bool:
        """Whether spans would be recorded now: where not, no span is begun (nothing to pay for)."""

    def publish(self, channel: str, event_id: str | None) -> AbstractContextManager[object]:
        """The span a publish on ``channel`` runs in; it sets :data:`TRACEPARENT` meanwhile."""

    def deliver(self, channel: str, event_id: str, traceparent: str | None) -> AbstractContextManager[object]:
        """The span an event from the broker's feed is delivered in; ``traceparent``: the publish's."""

    def stream(self, template: str, channels: tuple[str, ...]) -> StreamSpan:
        """Start the span of a stream of the endpoint whose channel template is ``template``."""
