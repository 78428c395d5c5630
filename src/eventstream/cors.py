"""CORS for event-stream endpoints and other routes served as raw ASGI apps: see :class:`CORS`."""

from ._auth._cors import CORS

__all__ = ["CORS"]
