"""The monitoring routes the examples serve: ``/healthz``, ``/readyz``, and ``/metrics`` with the extra.

    GET /healthz   liveness: 200 while the process answers (JSON body)
    GET /readyz    readiness: 200 when the stream can take new streams, 503 when shutting down
    GET /metrics   Prometheus's text format, when prometheus-client is installed
                   (``pip install 'eventstream[prometheus]'``); absent otherwise

The examples share one hub (``get_event_stream_singleton``), so its collector is
registered in prometheus-client's global registry once, whichever examples import
this (a second registration of the same names is refused).
"""

from __future__ import annotations

from eventstream import EventStream, HealthEndpoint
from eventstream.types import ASGIApp

_collected: set[int] = set()  # ids of the streams whose collector is in the global registry


def monitoring_routes(stream: EventStream) -> dict[str, ASGIApp]:
    """Path -> ASGI app: the probes of ``stream``, and its metrics when prometheus-client is installed."""
    routes: dict[str, ASGIApp] = {
        "/healthz": HealthEndpoint(stream, "live"),
        "/readyz": HealthEndpoint(stream, "ready"),
    }
    try:
        from eventstream.prometheus import MetricsEndpoint, register
    except ImportError:  # the extra is not installed: no /metrics
        return routes
    if id(stream) not in _collected:
        register(stream)
        _collected.add(id(stream))
    routes["/metrics"] = MetricsEndpoint()
    return routes
