"""One event-stream request, read once from its ASGI scope into a :class:`StreamRequest`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .._grip import NEXT_LINK_PARAM, GripPublisher, GripRequest, SigCheck, has_dot_segments
from ..types import Scope
from ._channels import BadRequest, ChannelResolver, normalize_channels
from ._http import accepts_event_stream, header, query_param, raw_path, text_header

__all__ = ["StreamRequest", "parse_request"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """What a valid event-stream request asks for; the endpoint decides from it alone.

    Attributes:
        method: ``GET`` or ``HEAD``.
        channels: The channels to stream, checked and de-duplicated.
        last_event_id: The id the client resumes after (``Last-Event-ID``, or
            the ``lastEventId`` query parameter), decoded as UTF-8 (bytes
            that are not UTF-8 become lone surrogates, so the id matches
            nothing and the client gets ``stream-reset``), ``None`` when
            absent or empty.
        grip: What a request through a GRIP proxy says about itself, or
            ``None`` for a direct request.

    Raises:
        ValueError: a field contradicts the others (built by hand, not by
            :func:`parse_request`).
    """

    method: str
    channels: tuple[str, ...]
    last_event_id: str | None
    grip: GripRequest | None

    def __post_init__(self) -> None:
        if self.method not in ("GET", "HEAD"):
            raise ValueError(f"method must be GET or HEAD, not {self.method!r}")
        if not self.channels:
            raise ValueError("a stream request needs at least one channel")
        if self.last_event_id == "" or self.last_event_id == "error":
            raise ValueError(f"last_event_id {self.last_event_id!r} is not a position")

    @property
    def head(self) -> bool:
        """A ``HEAD`` request: answered with the stream's headers and no body."""
        return self.method == "HEAD"

    @property
    def trusted_next_link(self) -> bool:
        """The proxy's signed next-link request: its channels are the proxy's word (``Grip-Last``)."""
        return self.grip is not None and self.grip.trusted_next_link


async def parse_request(
    scope: Scope,
    channels: Iterable[str] | ChannelResolver,
    *,
    grip: GripPublisher | None,
    grip_prefix: str,
    grip_reliable: bool,
    max_channels: int,
    max_channel_name_length: int,
) -> StreamRequest:
    """Read and check one HTTP request for an event stream of ``channels``.

    The checks run in this order, and the first that fails raises: the
    method, ``Accept``, ``Last-Event-ID: error``, the ``Grip-Sig`` signature
    (when ``grip`` is configured), dot segments in the path (GRIP reliable
    mode), then the channels: those the proxy names in ``Grip-Last`` for its
    signed next-link requests, otherwise ``channels`` (resolved for this
    request when it is a :class:`ChannelResolver`).

    Raises:
        BadRequest: 405 for a method other than GET and HEAD, 406 when
            ``Accept`` excludes ``text/event-stream``, 403 for an invalid
            ``Grip-Sig``, 400 for ``Last-Event-ID: error`` (or
            ``?lastEventId=error``), a path with ``.`` or ``..`` segments
            through a proxy in reliable mode, or invalid channels.
        BadChannelsResult: the endpoint's channels callable returned no names
            (the app's fault: a server error).
        Exception: whatever the channels callable raises.

    Cancellation: only an async channels callable awaits; cancelling it
    leaves nothing behind.
    """
    method = scope.get("method", "GET")
    # Browsers send Last-Event-ID (UTF-8); polyfills send the lastEventId query parameter.
    last_event_id = text_header(scope, b"last-event-id")
    if last_event_id is None:
        last_event_id = query_param(scope, "lastEventId")
    if method not in ("GET", "HEAD"):
        raise BadRequest("Method not allowed: use GET", status=405)
    if not accepts_event_stream(header(scope, b"accept")):
        raise BadRequest("Not acceptable: this endpoint only serves text/event-stream", status=406)
    if last_event_id == "error":
        raise BadRequest("Last-Event-ID is 'error': the previous stream ended on an error")
    grip_request: GripRequest | None = None
    if grip is not None:
        verdict = grip.check_signature(header(scope, b"grip-sig"))
        if verdict is SigCheck.FORBIDDEN:
            raise BadRequest("Forbidden: the Grip-Sig signature is not valid", status=403)
        if verdict is not SigCheck.DIRECT:
            grip_request = GripRequest.parse(
                text_header(scope, b"grip-last"),
                marked=query_param(scope, NEXT_LINK_PARAM) is not None,
                query=scope.get("query_string", b""),
                signed=verdict is SigCheck.SIGNED,
            )
    if grip_request is not None and grip_reliable and has_dot_segments(raw_path(scope)):
        # The proxy would resolve the next link to another path (it removes dot segments).
        raise BadRequest("Bad request: the path has '.' or '..' segments")
    if grip_request is not None and grip_request.trusted_next_link:
        # The proxy's next-link request: its channels are those the proxy holds the
        # client on (Grip-Last), i.e. those of the original, authorized request. The
        # path adds nothing: the proxy normalised it, so it may name other channels.
        channels = grip_request.held_channels(grip_prefix)
    elif isinstance(channels, ChannelResolver):
        channels = await channels.resolve(scope)
    names = normalize_channels(channels, max_channels=max_channels, max_length=max_channel_name_length)
    # An empty id means "none" (as browsers treat it).
    return StreamRequest(method, names, last_event_id or None, grip_request)
