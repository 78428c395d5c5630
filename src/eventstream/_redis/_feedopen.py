"""Opening the feed's pub/sub connection: the socket (TCP or TLS), the login, and what a failure means.

:func:`open_feed` connects to the feed's endpoint and logs in, within a
request timeout. A failure that trying again would not mend (the login
refused, the engine's certificate not trusted) raises :class:`Refused`; any
other raises :class:`~eventstream.BrokerError`, and the connection tries
again. :data:`LOST` lists what a connection that was lost raises later, while
it is read or written.
"""

from __future__ import annotations

import ssl

import anyio
import anyio.abc

from .._backends._pushed import connect_pushed
from .._base import BrokerError
from ._endpoint import FeedEndpoint
from ._resp import NEED_DATA, ErrorReply, RespError, RespParser, command

__all__ = ["LOST", "MAX_MESSAGE", "Refused", "open_feed"]

#: The longest feed message accepted (the engine's own pub/sub output limit is smaller by default).
MAX_MESSAGE = 64 * 1024 * 1024
#: What a lost connection raises (reading, sending, or the engine's bytes not RESP).
LOST = (
    BrokerError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    RespError,
)


class Refused(BrokerError):
    """The engine refused the credentials, or its certificate is not trusted (trying again would not help)."""


async def open_feed(
    endpoint: FeedEndpoint, context: ssl.SSLContext | None, *, engine: str, request_timeout: float
) -> tuple[anyio.abc.ByteStream, RespParser]:
    """Connect to ``endpoint`` (with TLS when ``context`` is given) and log in.

    Returns the stream (to be read with :func:`~eventstream._backends._pushed.deliver`), and its
    parser (which holds whatever the engine sent after the login's reply).

    Raises:
        Refused: the engine refused the login, or its TLS certificate is not trusted.
        BrokerError: connecting (and logging in) took more than ``request_timeout`` seconds, or
            failed otherwise.

    Cancellation: a stream being opened is closed.
    """
    parser = RespParser(max_bulk=MAX_MESSAGE)
    try:
        with anyio.fail_after(request_timeout):
            stream = await connect_pushed(endpoint.host, endpoint.port, context)
            try:
                if endpoint.password is not None:
                    login = (
                        [endpoint.username, endpoint.password] if endpoint.username else [endpoint.password]
                    )
                    await stream.send(command("AUTH", *login))
                    reply = await _read_reply(stream, parser)
                    if reply != b"OK":
                        detail = reply.message if isinstance(reply, ErrorReply) else "an unexpected reply"
                        raise Refused(engine, f"the login was refused: {detail}")
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
    except TimeoutError:
        raise BrokerError(engine, "connecting timed out") from None
    except ssl.SSLCertVerificationError as exc:
        raise Refused(engine, f"cannot connect: its TLS certificate is not trusted ({exc})") from exc
    except (OSError, ssl.SSLError, anyio.BrokenResourceError, anyio.EndOfStream, RespError) as exc:
        raise BrokerError(engine, f"cannot connect: {type(exc).__name__}: {exc}") from exc
    return stream, parser


async def _read_reply(stream: anyio.abc.ByteStream, parser: RespParser) -> object:
    # One reply, while logging in (before the reading loop runs).
    while (reply := parser.next_reply()) is NEED_DATA:
        parser.feed(await stream.receive())
    return reply
