"""GRIP: holding streams open at a proxy (Pushpin, Fastly Fanout) and publishing to it.

httpx, PyJWT and cryptography are imported where GRIP first needs them, not
with the library: an app that does not use GRIP does not load them (about
22,000 objects, which every full garbage collection of the process walks,
and a tenth of a second of startup).
"""

from ._batch import GripProxyStatistics
from ._config import SigCheck, parse_grip_uri
from ._hold import NEXT_LINK_PARAM, GripRequest, has_dot_segments, hold_response
from ._publish import GripPublisher, GripSubmission

__all__ = [
    "NEXT_LINK_PARAM",
    "GripProxyStatistics",
    "GripPublisher",
    "GripRequest",
    "GripSubmission",
    "SigCheck",
    "has_dot_segments",
    "hold_response",
    "parse_grip_uri",
]
