"""The Redis broker: one process's view of channels kept on a Redis-protocol engine."""

from ._broker import RedisBroker

__all__ = ["RedisBroker"]
