"""tests.apps.e2e_app with a view of the open streams and a page of many EventSources, for HTTP/2 tests.

Routes, beside those of :mod:`tests.apps.e2e_app`:
    GET /many?prefix=p&n=10   a page opening n EventSources, to /events/p-0 .. /events/p-(n-1)
    GET /open-streams         the open /events/ requests as JSON: path, http_version, client
"""

from __future__ import annotations

import json
from typing import Any

from eventstream.types import Receive, Scope, Send

from .e2e_app import app as e2e_app

_open: dict[int, dict[str, Any]] = {}

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>many streams</title>
<script>
const query = new URLSearchParams(location.search);
const prefix = query.get("prefix"), n = Number(query.get("n"));
window.sources = [];
window.received = [];
window.opened = 0;
for (let i = 0; i < n; i++) {
  const source = new EventSource(`/events/${prefix}-${i}`);
  window.received.push([]);
  source.addEventListener("stream-open", () => { window.opened += 1; });
  source.onmessage = (event) => window.received[i].push(JSON.parse(event.data));
  window.sources.push(source);
}
</script>
"""


async def _reply(send: Send, body: bytes, content_type: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/many":
        await _reply(send, PAGE, b"text/html; charset=utf-8")
    elif scope["type"] == "http" and scope["path"] == "/open-streams":
        await _reply(send, json.dumps(list(_open.values())).encode(), b"application/json")
    elif scope["type"] == "http" and scope["path"].startswith("/events/"):
        key = id(scope)
        client = scope.get("client")
        _open[key] = {
            "path": scope["path"],
            "http_version": scope["http_version"],
            "client": list(client) if client else None,
        }
        try:
            await e2e_app(scope, receive, send)
        finally:
            del _open[key]
    else:
        await e2e_app(scope, receive, send)
