"""The monitoring routes the examples serve: ``/healthz``, ``/readyz``, and ``/metrics`` with the extra.

    GET /healthz   liveness: 200 while the process answers (JSON body)
    GET /readyz    readiness: 200 when the stream can take new streams, 503 when shutting down
    GET /metrics   Prometheus's text format, when prometheus-client is installed
                   (``pip install 'eventstream[prometheus]'``); absent otherwise

Each stream gets a registry of its own, made once: a process may build more than
one app (the GRIP example builds its own stream beside the chat example's), and
one registry refuses a second stream's metrics of the same names.
"""

from __future__ import annotations

from eventstream import EventStream, HealthEndpoint
from eventstream.types import ASGIApp

_registries: dict[int, object] = {}  # id of a stream -> its registry (a CollectorRegistry)


def monitoring_routes(stream: EventStream) -> dict[str, ASGIApp]:
    """Path -> ASGI app: the probes of ``stream``, and its metrics when prometheus-client is installed."""
    routes: dict[str, ASGIApp] = {
        "/healthz": HealthEndpoint(stream, "live"),
        "/readyz": HealthEndpoint(stream, "ready"),
    }
    try:
        from prometheus_client import CollectorRegistry

        from eventstream.prometheus import MetricsEndpoint, register
    except ImportError:  # the extra is not installed: no /metrics
        return routes
    registry = _registries.get(id(stream))
    if not isinstance(registry, CollectorRegistry):
        registry = CollectorRegistry()
        register(stream, registry)
        _registries[id(stream)] = registry
    routes["/metrics"] = MetricsEndpoint(registry)
    return routes
