"""Django views: the chat page, and a *sync* view that publishes.

Django runs a sync view in a worker thread (``sync_to_async``), while the hub belongs to
the server's event loop and is not thread-safe. ``asgiref.sync.async_to_sync``, called in
that thread, runs ``publish_event`` back in the event loop that serves the request (the
one ``sync_to_async`` came from) and waits for it: the supported way from Django's threads
into the loop. It needs Django served by ASGI; under WSGI there is no such loop.
"""

from __future__ import annotations

import json

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed

from eventstream import get_event_stream_singleton

from ..raw_asgi import CHAT_PAGE

stream = get_event_stream_singleton()


def homepage(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    return HttpResponse(CHAT_PAGE, content_type="text/html; charset=utf-8")


def publish(request: HttpRequest) -> HttpResponse:
    # An API for scripts (the settings enable no CSRF middleware); a real app authenticates publishers.
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    try:
        body = json.loads(request.body)
        channel = body.pop("channel", "test")
        async_to_sync(stream.publish_event)(channel, body)
    except (ValueError, TypeError, AttributeError) as exc:
        return HttpResponse(f"Bad event: {exc}\n", status=400, content_type="text/plain; charset=utf-8")
    return HttpResponse("Published\n", status=202, content_type="text/plain; charset=utf-8")
