"""The ASGI apps the fan-out benchmark serves, one per contender.

Every app serves the same three routes, so the load client and the harness
treat them alike:

- ``GET /events``: an event stream subscribed to the one channel ``bench``;
  each app sends something (stream-open, a comment) as soon as the
  subscription exists, so the client knows the stream is open;
- ``POST /publish?count=M&size=S&rate=R``: publishes M events in the server's
  own event loop (R events per second, 0 = as fast as possible) and answers
  when the last one is published;
- per user: ``GET /events?user=k`` subscribes to the channel of user k alone,
  and ``POST /publish?...&users=U`` publishes M events to each of the U user
  channels (R events per second to each), round by round;
- ``GET /stats``: ``{"subscribers": n, "traced": {...}}`` (``traced``, with
  ``?traced=1`` when the server runs with ``BENCH_TRACEMALLOC=1``: bytes held
  by allocations made in eventstream's own lines, and with its code anywhere
  on the stack; see :func:`traced_bytes`); ``?traced=mark`` keeps a snapshot,
  and ``?traced=sites`` answers what was allocated since, grouped by site (see
  :func:`traced_sites`).

Each event's data is ``"{seq} {monotonic_ns} xxx..."``, padded to S bytes, and
its timestamp is taken just before it is published; the load client reads
``time.monotonic_ns()`` (the same clock, system-wide) when the bytes arrive.

Contenders:

- ``eventstream_app``: this library with its defaults (history, ids).
- ``sse_starlette_app``: Starlette + sse-starlette as its users write it: one
  unbounded ``asyncio.Queue`` per subscriber, an ``EventSourceResponse`` over
  an async generator that yields a dict per event.
- ``naive_app``: a plain anyio ASGI endpoint: one anyio memory stream per
  subscriber, one ``http.response.body`` message per event.
"""

from __future__ import annotations

import asyncio
import glob
import importlib.util
import json
import math
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import anyio
from anyio.streams.memory import MemoryObjectSendStream

import eventstream
from eventstream import EventStream, ServerSentEvent
from eventstream.types import Receive, Scope, Send

CHANNEL = "bench"
TRACING = os.environ.get("BENCH_TRACEMALLOC") == "1"
if TRACING:
    tracemalloc.start(8)


def payload(seq: int, size: int) -> str:
    """One event's data: sequence number, send time, padding up to ``size`` bytes."""
    head = f"{seq} {time.monotonic_ns()} "
    return head + "x" * max(0, size - len(head))


async def publish_loop(count: int, size: int, rate: float, publish: Callable[[int], Awaitable[None]]) -> None:
    """Call ``publish(i)`` for i in ``range(count)``, paced at ``rate`` per second (0: unpaced).

    Paced, it publishes whatever is due, then sleeps until the next is (so a
    high rate costs one sleep per tick, not one per event).
    """
    if rate <= 0:
        for seq in range(count):
            await publish(seq)
        return
    started = anyio.current_time()
    seq = 0
    while seq < count:
        due = min(count, int((anyio.current_time() - started) * rate) + 1)
        while seq < due:
            await publish(seq)
            seq += 1
        if seq < count:
            delay = started + seq / rate - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)


def publish_request(query_string: str) -> tuple[int, int, float, int]:
    """``count``, ``size``, ``rate`` and ``users`` (0: the one shared channel) of a ``/publish``."""
    query = {key: values[0] for key, values in parse_qs(query_string).items()}
    return int(query["count"]), int(query["size"]), float(query.get("rate", 0)), int(query.get("users", 0))


def user_of(scope: Scope) -> int | None:
    """The ``user`` query parameter of an ``/events`` request, if any."""
    values = parse_qs(scope["query_string"].decode()).get("user")
    return int(values[0]) if values else None


#: eventstream's own folder, where it was imported from. Traces are attributed to the library by
#: this location, not by a name glob such as ``*/eventstream/*``, which also matches every file of
#: a checkout whose folder is named ``eventstream`` (these benchmarks, the naive app included).
LIBRARY = os.path.dirname(eventstream.__file__)


def under(directory: str, inclusive: bool = True, all_frames: bool = False) -> tracemalloc.Filter:
    """A filter of the traces allocated in a file below ``directory``: by the innermost frame,
    or by any frame of the trace with ``all_frames``; ``inclusive=False`` keeps the others."""
    pattern = os.path.join(glob.escape(directory), "*")
    return tracemalloc.Filter(inclusive, pattern, all_frames=all_frames)


def package_directories(names: tuple[str, ...]) -> list[str]:
    """The folders of those of the packages ``names`` that are installed (none is imported)."""
    directories: list[str] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            directories.extend(spec.submodule_search_locations)
    return directories


def traced_bytes() -> dict[str, int]:
    """Live allocations made in eventstream's own lines (``own``), and with its code anywhere
    on the stack (``stack``: also the anyio streams, tasks and scopes it creates)."""
    if not TRACING:
        return {"own": 0, "stack": 0}
    snapshot = tracemalloc.take_snapshot()
    own = snapshot.filter_traces([under(LIBRARY)])
    stack = snapshot.filter_traces([under(LIBRARY, all_frames=True)])
    return {
        "own": sum(stat.size for stat in own.statistics("filename")),
        "stack": sum(stat.size for stat in stack.statistics("filename")),
    }


_marked: list[tracemalloc.Snapshot] = []
#: Allocations made in these packages' own lines are the server's, even when eventstream called it.
_SERVER_PACKAGES = ("uvicorn", "h11", "hypercorn", "h2", "wsproto", "httptools", "granian")


def traced_sites(limit: int = 25, frames: int = 3) -> dict[str, Any]:
    """Allocations alive now and not at ``?traced=mark``, grouped by the innermost ``frames`` lines.

    ``total``: every allocation in the process; ``stack``: those with eventstream's code
    anywhere on the stack (as in :func:`traced_bytes`); ``own``: ``stack`` without what the
    server's own lines allocate when eventstream calls it (its ``send()`` bookkeeping; the
    coroutine of its ``receive()`` stays in, created by eventstream's call); ``sites``: the
    ``limit`` largest groups of ``stack``, each ``[bytes, count, "file:line < file:line ..."]``.
    """
    if not TRACING or not _marked:
        return {"total": 0, "stack": 0, "own": 0, "sites": []}
    before, after = _marked[-1], tracemalloc.take_snapshot()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    keep = [under(LIBRARY, all_frames=True)]
    # Filtering on every frame is the slow part (pure Python, per trace): once per snapshot.
    kept_after, kept_before = after.filter_traces(keep), before.filter_traces(keep)
    stack = kept_after.compare_to(kept_before, "traceback")
    sites = []
    for stat in sorted(stack, key=lambda stat: -stat.size_diff)[:limit]:
        where = " < ".join(
            f"{os.path.basename(frame.filename)}:{frame.lineno}"
            for frame in list(stat.traceback)[::-1][:frames]
        )
        sites.append([stat.size_diff, stat.count_diff, where])
    server = [under(directory, inclusive=False) for directory in package_directories(_SERVER_PACKAGES)]
    own_diff = kept_after.filter_traces(server).compare_to(kept_before.filter_traces(server), "filename")
    return {
        "total": total,
        "stack": sum(stat.size_diff for stat in stack),
        "own": sum(stat.size_diff for stat in own_diff),
        "sites": sites,
    }


async def answer(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def control_app(
    events: Callable[[Scope, Receive, Send], Awaitable[None]],
    publish: Callable[[int, int, int | None], Awaitable[None]],
    subscribers: Callable[[], int],
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """Route ``/events`` to ``events`` and serve ``/publish`` and ``/stats``.

    ``publish(seq, size, user)`` publishes one event to the shared channel
    (``user`` None) or to one user's channel.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        if path == "/events":
            await events(scope, receive, send)
        elif path == "/publish":
            count, size, rate, users = publish_request(scope["query_string"].decode())
            started = time.perf_counter()
            if users:
                await publish_loop(
                    count * users, size, rate * users, lambda i: publish(i // users, size, i % users)
                )
            else:
                await publish_loop(count, size, rate, lambda seq: publish(seq, size, None))
            await answer(send, 200, {"published": count, "seconds": time.perf_counter() - started})
        elif path == "/stats":
            query = scope["query_string"]
            traced: dict[str, Any] = traced_bytes() if b"traced=1" in query else {}
            if b"traced=mark" in query and TRACING:
                _marked[:] = [tracemalloc.take_snapshot()]
            elif b"traced=sites" in query:
                traced = traced_sites()
            await answer(send, 200, {"subscribers": subscribers(), "traced": traced})
        else:
            await answer(send, 404, {})

    return app


# -- eventstream -------------------------------------------------------------

_stream = EventStream()
if os.environ.get("BENCH_METRICS") == "1":  # the cost of metrics: a collector registered (timing on)
    from prometheus_client import CollectorRegistry

    from eventstream.prometheus import register

    register(_stream, CollectorRegistry())


def _eventstream_channel(scope: Scope) -> str:
    user = user_of(scope)
    return CHANNEL if user is None else f"user-{user}"


_endpoint = _stream(_eventstream_channel)


async def _eventstream_publish(seq: int, size: int, user: int | None) -> None:
    channel = CHANNEL if user is None else f"user-{user}"
    await _stream.publish_event(channel, ServerSentEvent(text=payload(seq, size)))


eventstream_app = control_app(_endpoint, _eventstream_publish, lambda: _stream.statistics().subscribers)


# -- Starlette + sse-starlette --------------------------------------------------


def _make_sse_starlette_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    from sse_starlette import EventSourceResponse

    # One set of queues per channel (None: the shared one, else a user's).
    queues: dict[int | None, set[asyncio.Queue[dict[str, str]]]] = {}

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        user = user_of(scope)

        async def generate() -> AsyncIterator[dict[str, str]]:
            queue: asyncio.Queue[dict[str, str]] = asyncio.Queue()
            queues.setdefault(user, set()).add(queue)
            try:
                yield {"comment": "open"}
                while True:
                    yield await queue.get()
            finally:
                queues[user].discard(queue)

        await EventSourceResponse(generate())(scope, receive, send)

    async def publish(seq: int, size: int, user: int | None) -> None:
        message = {"data": payload(seq, size)}
        for queue in queues.get(user, ()):
            queue.put_nowait(message)
        await asyncio.sleep(0)

    return control_app(endpoint, publish, lambda: sum(map(len, queues.values())))


# -- naive anyio endpoint ------------------------------------------------------


def _make_naive_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    senders: dict[int | None, set[MemoryObjectSendStream[bytes]]] = {}
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        user = user_of(scope)
        sender, receiver = anyio.create_memory_object_stream[bytes](math.inf)
        senders.setdefault(user, set()).add(sender)

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_disconnect)
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
                async for chunk in receiver:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except OSError:
            pass
        finally:
            senders[user].discard(sender)

    async def publish(seq: int, size: int, user: int | None) -> None:
        chunk = f"data: {payload(seq, size)}\n\n".encode()
        for sender in senders.get(user, ()):
            sender.send_nowait(chunk)
        await anyio.lowlevel.checkpoint()

    return control_app(endpoint, publish, lambda: sum(map(len, senders.values())))


sse_starlette_app = _make_sse_starlette_app()
naive_app = _make_naive_app()
