"""The ASGI app that end-to-end tests run under real servers (hypercorn, uvicorn, granian, daphne).

Routes:
    GET  /events/{id}        stream("{id}")
    GET  /pair/{x}           stream(["{x}-a", "{x}-b"])
    GET  /query?channel=...  stream(callable): channels from the query string (async callable)
    GET  /missing            stream("{nope}"): a token without a route parameter
    POST /publish            {"channel": ..., "event": {...}, "count": n} -> publishes n copies,
                             or {"channel": ..., "values": [...]} -> one event per value, as data
    GET  /stats              statistics() as JSON
    GET  /memory             JSON: the server's resident set size in bytes, and (after a
                             collection) how many live objects the library owns
    GET  /count?channel=...  subscriber_count_all (no channel: of all) as JSON
    GET  /presence?channel=  presence(channel) as JSON [[identity, connections], ...]

``EVENTSTREAM_KEEP_ALIVE`` (seconds), ``EVENTSTREAM_SEND_TIMEOUT`` and
``EVENTSTREAM_BUFFER_SIZE`` configure the hub; ``EVENTSTREAM_GRIP`` is a GRIP URL
or a JSON list of them; ``EVENTSTREAM_BROKER`` a broker URL (with the key prefix
``EVENTSTREAM_BROKER_PREFIX``): a publish the engine refuses gets 503. The hub
is entered for the life of the app (lifespan). ``EVENTSTREAM_PRESENCE`` set:
``presence=True``, each stream present under its ``?who=`` (an authorize that
grants every stream that identity); ``EVENTSTREAM_HEARTBEAT`` (seconds): the
broker's heartbeat interval (its expiry: three of them).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import re
import types
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs

import eventstream
from eventstream import BrokerError, EventStream, GripPublishError, RedisBroker
from eventstream.auth import Grant
from eventstream.types import Receive, Scope, Send

# The library's logger has only a NullHandler: the app sends its lines to stderr (the server's log).
logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")

_grip = os.environ.get("EVENTSTREAM_GRIP")
_broker = os.environ.get("EVENTSTREAM_BROKER")
_heartbeat = float(os.environ.get("EVENTSTREAM_HEARTBEAT", "5"))
_presence = bool(os.environ.get("EVENTSTREAM_PRESENCE"))


def _who(scope: Scope, channels: list[str]) -> bool | Grant:
    who = parse_qs(scope["query_string"].decode()).get("who")
    return Grant(identity=who[0]) if who else True


stream = EventStream(
    broker=RedisBroker(
        _broker,
        key_prefix=os.environ.get("EVENTSTREAM_BROKER_PREFIX", "eventstream:"),
        heartbeat_interval=_heartbeat,
        heartbeat_expiry=3 * _heartbeat,
    )
    if _broker
    else None,
    presence=_presence,
    authorize=_who if _presence else None,
    shutdown_event={"event": "shutdown"},
    grip=json.loads(_grip) if _grip and _grip.startswith("[") else _grip,
    keep_alive_interval=float(os.environ.get("EVENTSTREAM_KEEP_ALIVE", "20")),
    send_timeout=float(os.environ.get("EVENTSTREAM_SEND_TIMEOUT", "5")),
    buffer_size=int(os.environ.get("EVENTSTREAM_BUFFER_SIZE", "256")),
)


async def _query_channels(scope: Scope) -> Iterable[str]:
    return parse_qs(scope["query_string"].decode(), keep_blank_values=True).get("channel", [])


_ROUTES = [
    (re.compile(r"/events/(?P<id>[^/]+)"), stream("{id}")),
    (re.compile(r"/pair/(?P<x>[^/]+)"), stream(["{x}-a", "{x}-b"])),
    (re.compile(r"/query"), stream(_query_channels)),
    (re.compile(r"/missing"), stream("{nope}")),
]


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _reply(send: Send, status: int, body: bytes, content_type: bytes = b"text/plain") -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]}
    )
    await send({"type": "http.response.body", "body": body})


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _code(
    obj: types.CoroutineType[Any, Any, Any]
    | types.GeneratorType[Any, Any, Any]
    | types.AsyncGeneratorType[Any, Any],
) -> types.CodeType:
    if isinstance(obj, types.CoroutineType):
        return obj.cr_code
    if isinstance(obj, types.GeneratorType):
        return obj.gi_code
    return obj.ag_code


def _library_objects() -> int:
    """Live objects of the library's classes, and its coroutines and generators not yet finished."""
    package = os.path.dirname(eventstream.__file__)
    count = 0
    for obj in gc.get_objects():
        module = type(obj).__dict__.get("__module__")  # some types make it a property
        if isinstance(module, str) and module.startswith("eventstream"):
            count += 1
        elif isinstance(obj, (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType)):
            count += _code(obj).co_filename.startswith(package)
    return count


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()  # lifespan.startup
        async with stream:
            with stream.close_on_signals():
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    for pattern, endpoint in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            scope["path_params"] = match.groupdict()
            await endpoint(scope, receive, send)
            return
    if path == "/publish" and scope["method"] == "POST":
        request = json.loads(await _read_body(receive))
        try:
            if "values" in request:
                for value in request["values"]:
                    await stream.publish_event(request["channel"], {"data": value})
            for _ in range(request.get("count", 1) if "event" in request else 0):
                await stream.publish_event(request["channel"], request["event"])
        except (TypeError, ValueError) as exc:
            await _reply(send, 400, str(exc).encode())
            return
        except GripPublishError as exc:
            await _reply(send, 502, str(exc).encode())
            return
        except BrokerError as exc:
            await _reply(send, 503, str(exc).encode())
            return
        await _reply(send, 200, b"ok")
    elif path == "/stats":
        stats = stream.statistics()
        body = json.dumps(
            {
                "subscribers": stats.subscribers,
                "channels": dict(stats.channels),
                "events_published": stats.events_published,
                "events_delivered": stats.events_delivered,
                "subscribers_dropped": stats.subscribers_dropped,
                "broker": dataclasses.asdict(stats.broker) if stats.broker is not None else None,
            }
        )
        await _reply(send, 200, body.encode(), b"application/json")
    elif path in ("/count", "/presence"):
        channel = parse_qs(scope["query_string"].decode()).get("channel", [None])[0]
        try:
            if path == "/count":
                answer: object = await stream.subscriber_count_all(channel)
            else:
                assert channel is not None
                answer = [[m.identity, m.connections] for m in await stream.presence(channel)]
        except BrokerError as exc:
            await _reply(send, 503, str(exc).encode())
            return
        await _reply(send, 200, json.dumps(answer).encode(), b"application/json")
    elif path == "/memory":
        gc.collect()
        memory = {"rss": _rss(), "library_objects": _library_objects()}
        await _reply(send, 200, json.dumps(memory).encode(), b"application/json")
    else:
        await _reply(send, 404, b"not found")
