"""The base layer: the values and errors the other packages build on; it imports none of them.

The library's errors and :class:`Grant` (``_exceptions.py``), the checks of
numeric options (``_checks.py``), and the subscribe limits per client
address (``_limits.py``: the option's frozen value and its per-address
table, read by the options, the request path and the stream).
"""

from ._checks import check_count, check_seconds
from ._exceptions import BrokerError, EventStreamError, Grant, GripPublishError, KeysUnavailable, Unauthorized
from ._limits import AddressLimiter, Refused, SubscribeLimits

__all__ = [
    "AddressLimiter",
    "BrokerError",
    "EventStreamError",
    "Grant",
    "GripPublishError",
    "KeysUnavailable",
    "Refused",
    "SubscribeLimits",
    "Unauthorized",
    "check_count",
    "check_seconds",
]
