"""Brokers: where published events are numbered, kept and fanned out (the interface, ``_base``, and the
in-process broker, ``_local``; the Redis broker is its own package, ``_redis``)."""

from ._base import Broker, Numbered, PublishedEvent, unkept_entry
from ._local import LocalBroker

__all__ = ["Broker", "LocalBroker", "Numbered", "PublishedEvent", "unkept_entry"]
