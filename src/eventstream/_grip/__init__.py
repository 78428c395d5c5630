"""GRIP: holding streams open at a proxy (Pushpin, Fastly Fanout) and publishing to it."""

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
