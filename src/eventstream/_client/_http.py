"""One request of an ``EventSource``: redirects followed by origin, the answer checked; the errors
the server causes."""

from __future__ import annotations

from typing import Final

import anyio
import httpx

from ._body import CODINGS, codings

__all__ = [
    "INCURABLE",
    "EventSourceError",
    "cannot_resume",
    "check_response",
    "open_stream",
    "origin",
    "too_large",
]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class EventSourceError(Exception):
    """The server refused the stream, or sent what cannot be read or resumed; :class:`EventSource` stops.

    Attributes:
        url: The URL that answered (after redirects).
        status_code: The HTTP status of the answer.
        content_type: Its ``Content-Type`` header, or ``None``.
    """

    def __init__(self, message: str, *, url: str, status_code: int, content_type: str | None) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.content_type = content_type


#: Errors that end the source: reconnecting cannot cure them.
INCURABLE: Final = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.TooManyRedirects,
    httpx.InvalidURL,  # a redirect to a Location httpx cannot read (see open_stream)
)


def origin(url: httpx.URL) -> tuple[str, str, int]:
    """The origin of ``url``: scheme, host and port (the default one when it names none)."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0)


async def open_stream(
    client: httpx.AsyncClient,
    start: httpx.URL,
    *,
    headers: httpx.Headers,
    plain_headers: httpx.Headers,
    last_event_id: str,
    timeouts: httpx.Timeout,
) -> httpx.Response:
    """Send the request for ``start`` (streamed), following redirects as the client's settings say.

    Redirects are followed here, not by httpx: ``headers``, ``Last-Event-ID``
    (``last_event_id``, unless empty) and the client's auth go to the origin
    of ``start`` only; another origin gets ``plain_headers``. The response is
    not checked (see :func:`check_response`).

    Raises:
        EventSourceError: a redirect to a URL that is not ``http://`` or ``https://``.
        httpx.TooManyRedirects: more than the client's ``max_redirects``.
        httpx.InvalidURL: a redirect whose ``Location`` httpx cannot read as a
            URL (httpx raises ``RemoteProtocolError`` for it, whether the client
            follows redirects or not).
        httpx.HTTPError: as ``client.send``.
    """
    url = start
    for _ in range(client.max_redirects + 1):
        home = origin(url) == origin(start)
        if home:
            sent = headers.copy()
            if last_event_id:  # as browsers send it: UTF-8, whatever the characters
                sent = httpx.Headers([*sent.raw, (b"last-event-id", last_event_id.encode())])
        else:
            sent = plain_headers
        request = client.build_request("GET", url, headers=sent, timeout=timeouts)
        if not home:
            request.headers.pop("authorization", None)  # from the client's own headers, as httpx does
        auth = httpx.USE_CLIENT_DEFAULT if home else None
        try:
            response = await client.send(request, stream=True, auth=auth, follow_redirects=False)
        except httpx.RemoteProtocolError as exc:
            if _is_bad_location(exc):  # a TransportError, else taken for a network error: retried for ever
                raise httpx.InvalidURL(
                    f"{url} answered a redirect whose Location is not a URL: {exc.__context__}"
                ) from exc
            raise
        if not client.follow_redirects or response.next_request is None:
            return response
        with anyio.CancelScope(shield=True):
            await response.aclose()
        url = response.next_request.url  # where httpx would go: its rules for Location
        if url.scheme not in ("http", "https"):
            raise EventSourceError(
                f"{response.url} answered {response.status_code} {response.reason_phrase} to"
                f" {response.headers['location']!r}, not an http:// or https:// URL",
                url=str(response.url),
                status_code=response.status_code,
                content_type=response.headers.get("content-type"),
            )
    raise httpx.TooManyRedirects(
        f"more than {client.max_redirects} redirects (the client's max_redirects)", request=request
    )


def _is_bad_location(exc: httpx.RemoteProtocolError) -> bool:
    """Whether ``exc`` is httpx's report of a redirect's ``Location`` it could not parse.

    httpx (``AsyncClient._redirect_url``) raises it ``from None`` while
    handling the ``InvalidURL``, which stays its ``__context__``.
    """
    return isinstance(exc.__context__, httpx.InvalidURL) and str(exc).startswith(
        "Invalid URL in location header"
    )


def check_response(response: httpx.Response, *, following: bool) -> None:
    """Accept ``response`` as an event stream, or say why not.

    Raises:
    EventSourceError: its status is not 200 (``following``: whether the
        client follows redirects, for the message), its ``Content-Type``
        is not ``text/event-stream``, or its ``Content-Encoding`` is not
        one this client decodes.
    """
    status, content_type = response.status_code, response.headers.get("content-type")
    found = codings(response)
    if status == 204:
        message = f"{response.url} answered 204 No Content: the server asks the client to stop"
    elif status != 200:
        message = f"{response.url} answered {status} {response.reason_phrase}, not 200"
        if response.has_redirect_location and not following:
            message += " (the httpx client given has follow_redirects=False)"
    elif not _is_event_stream(content_type):
        message = f"{response.url} answered Content-Type {content_type!r}, not text/event-stream"
    elif len(found) > 1 or (found and found[0] not in CODINGS):
        message = (
            f"{response.url} answered Content-Encoding {response.headers['content-encoding']!r}:"
            " this client decodes gzip or deflate"
        )
    else:
        return
    raise EventSourceError(message, url=str(response.url), status_code=status, content_type=content_type)


def too_large(response: httpx.Response, limit: int) -> EventSourceError:
    """The error for an event of ``response`` that grew past ``limit`` (``max_event_size``) unended."""
    return EventSourceError(
        f"{response.url} sent an event past max_event_size ({limit}) without ending it",
        url=str(response.url),
        status_code=response.status_code,
        content_type=response.headers.get("content-type"),
    )


def cannot_resume(
    answered: tuple[str, int, str | None], last_event_id: str, problem: str
) -> EventSourceError:
    """The error for an id that no ``Last-Event-ID`` header can carry (``problem`` says why).

    ``answered``: the URL, status and ``Content-Type`` of the response that sent it.
    """
    url, status, content_type = answered
    return EventSourceError(
        f"{url} sent the id {last_event_id!r}, which cannot be sent back in a"
        f" Last-Event-ID header ({problem}): the stream cannot be resumed",
        url=url,
        status_code=status,
        content_type=content_type,
    )


def _is_event_stream(content_type: str | None) -> bool:
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"
