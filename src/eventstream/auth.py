"""Token authentication for event streams: JWTs from a header, a cookie or a one-time ticket.

:class:`JWTAuthorizer` is a ready-made ``authorize`` callable for
:class:`~eventstream.EventStream`. Any ``authorize`` callable may answer with a
:class:`Grant` (allowed, with an expiry and an identity) or raise
:class:`Unauthorized` (401). See the authentication how-to.
"""

from ._auth._authorizer import JWTAuthorizer
from ._auth._jwks import JWKSFetcher
from ._auth._keys import TokenVerifier
from ._auth._patterns import ChannelPattern
from ._auth._redis_ledger import RedisTicketLedger
from ._auth._tickets import MemoryTicketLedger, TicketLedger
from ._base import Grant, KeysUnavailable, Unauthorized

__all__ = [
    "ChannelPattern",
    "Grant",
    "JWKSFetcher",
    "JWTAuthorizer",
    "KeysUnavailable",
    "MemoryTicketLedger",
    "RedisTicketLedger",
    "TicketLedger",
    "TokenVerifier",
    "Unauthorized",
]
