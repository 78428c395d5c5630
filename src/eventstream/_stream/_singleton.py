"""One :class:`EventStream` per key for the life of the process."""

from __future__ import annotations

import sys
import threading
from typing import Any

from ._stream import EventStream

__all__ = ["get_event_stream_singleton"]

# The registry lives on the ``sys`` module, not in this module, so it survives
# a reload of this module or of the application that calls it (development
# servers that re-import the app keep the same hub and its subscribers).
_REGISTRY_NAME = "_eventstream_singletons"


def _registry() -> tuple[threading.Lock, dict[str, EventStream]]:
    found: tuple[threading.Lock, dict[str, EventStream]] | None = getattr(sys, _REGISTRY_NAME, None)
    if found is None:
        found = vars(sys).setdefault(_REGISTRY_NAME, (threading.Lock(), {}))
    return found


def get_event_stream_singleton(key: str = "eventStream", **options: Any) -> EventStream:
    """Return the process-wide :class:`EventStream` for ``key``, creating it on first use.

    ``options`` are passed to :class:`EventStream` when it is created and are
    ignored afterwards. The instance survives re-imports and reloads of the
    calling module (and of this library's modules), so a development server
    that reloads the app keeps one hub.

    Raises:
        ValueError, TypeError: on first use, the options are invalid.
    """
    lock, instances = _registry()
    with lock:
        instance = instances.get(key)
        if instance is None:
            instance = instances[key] = EventStream(**options)
        return instance
