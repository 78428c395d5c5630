"""An SSE server this project did not write: Starlette + sse-starlette, for the client tests.

``GET /count`` sends the events ``0`` .. ``TOTAL - 1`` (type ``count``, id
``n``, JSON data ``{"n": n}``), ``PER_CONNECTION`` per response, then ends the
response; it resumes after ``Last-Event-ID`` and answers ``204`` once all were
sent. sse-starlette writes CRLF line ends.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOTAL = 30
PER_CONNECTION = 7


async def count(request: Request) -> Response:
    last = request.headers.get("last-event-id", "")
    start = int(last) + 1 if last.isascii() and last.isdigit() else 0
    if start >= TOTAL:
        return Response(status_code=204)

    async def events() -> AsyncIterator[ServerSentEvent]:
        for n in range(start, min(start + PER_CONNECTION, TOTAL)):
            yield ServerSentEvent(id=str(n), event="count", data=json.dumps({"n": n}), retry=20)

    return EventSourceResponse(events())


app = Starlette(routes=[Route("/count", count)])
