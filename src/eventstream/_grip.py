"""Publishing to GRIP proxies (Pushpin, Fastly Fanout) over their HTTP control API.

A :class:`GripPublisher` owns one ``httpx.AsyncClient`` and a task group
with one sender task per proxy; it runs inside ``async with``. Each publish
puts one item in every proxy's queue and waits until every proxy accepted
it. A sender posts what is queued in one request; what is published while
that request is in flight goes out together in the next one, so a busy
channel costs one round trip per batch, not per event, and each proxy sees
the events in publish order.

Every item carries an ``id`` (the event's in reliable mode, a unique one
otherwise), so a proxy that got a request whose answer was lost drops the
retried copy instead of delivering the event twice. Every publish is bounded
in time: it returns or raises ``publish_timeout`` seconds after it was made,
at the latest, however the proxy behaves.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import random
import re
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import httpx

from ._exceptions import GripPublishError
from ._grip_config import GripProxy, SigCheck, check_grip_sig, proxies_from_config

__all__ = ["GripProxyStatistics", "GripPublisher", "hold_headers"]

# URI characters that cannot end a Link value or a header (no ',', ';', quotes, '<', '>').
_SAFE_LINK = re.compile(r"[A-Za-z0-9\-._~!$&'()*+=:@/?%]+")
# Pushpin refuses request bodies over 1,000,000 bytes.
_MAX_BODY = 900_000


@dataclass(frozen=True)
class GripProxyStatistics:
    """Counters of one proxy of a :class:`GripPublisher`."""

    #: The proxy's control URI.
    control_uri: str
    #: Items the proxy accepted.
    items_published: int
    #: HTTP requests made, retries included.
    requests: int
    #: Requests repeated after a connection error or a 5xx answer.
    retries: int
    #: Batches given up on (their publishers got a ``GripPublishError``).
    failures: int


class _Item:
    __slots__ = ("body", "deadline", "done", "error", "size")

    def __init__(self, body: dict[str, Any], deadline: float) -> None:
        self.body = body
        self.size = len(json.dumps(body))
        self.deadline = deadline
        self.done = anyio.Event()
        self.error: GripPublishError | None = None


class _Sender:
    """The queue, counters and sender task of one proxy."""

    def __init__(self, proxy: GripProxy) -> None:
        self.proxy = proxy
        self.queue: deque[_Item] = deque()
        self.wakeup = anyio.Event()
        self.items_published = 0
        self.requests = 0
        self.retries = 0
        self.failures = 0

    def statistics(self) -> GripProxyStatistics:
        return GripProxyStatistics(
            self.proxy.control_uri, self.items_published, self.requests, self.retries, self.failures
        )


class GripPublisher:
    """Publishes SSE bytes to one or more GRIP proxies.

    ``EventStream(grip=...)`` builds one from a ``GRIP_URL``, a config mapping
    or a list of them, and runs it while the event stream is entered with
    ``async with``. Build it yourself to tune it, and pass it as ``grip=``.

    Args:
        proxies: A GRIP URL, a mapping (``control_uri``, ``control_iss``,
            ``key``, ``verify_iss``, ``verify_key``), or a list of them.
        max_batch: The most items sent in one request; 1 disables batching.
        retries: How many times a batch is sent again after a connection
            error or a 5xx answer. 4xx answers are not retried.
        backoff: The first retry delay in seconds; each retry doubles it, up
            to ``max_backoff``, and a random part (jitter) is taken off.
        max_backoff: The longest delay between two attempts.
        timeout: The HTTP timeout of one request, in seconds (each of
            connecting, sending and waiting for the answer).
        publish_timeout: The longest a publish may take, in seconds, from
            the call to the last proxy's answer, retries and the time spent
            queued behind an earlier request included. A proxy that has not
            accepted the event by then fails it with
            :class:`~eventstream.GripPublishError`. This bounds every
            publish, however the proxy behaves (one that accepts connections
            and never answers included).
        transport: An httpx transport to use instead of the network (tests).

    Raises:
        ValueError: a proxy configuration or an option is invalid.
    """

    def __init__(
        self,
        proxies: str | Mapping[str, Any] | Sequence[str | Mapping[str, Any]],
        *,
        max_batch: int = 100,
        retries: int = 4,
        backoff: float = 0.2,
        max_backoff: float = 2.0,
        timeout: float = 5.0,
        publish_timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, not {max_batch!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries!r}")
        if not (0 < backoff <= max_backoff) or math.isinf(max_backoff):
            raise ValueError("backoff and max_backoff must be positive with backoff <= max_backoff")
        for name, value in (("timeout", timeout), ("publish_timeout", publish_timeout)):
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.proxies: tuple[GripProxy, ...] = proxies_from_config(proxies)
        self.max_batch = max_batch
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.publish_timeout = publish_timeout
        # Item ids: unique per publisher, the same for every retry of an item.
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._transport = transport
        self._senders = [_Sender(proxy) for proxy in self.proxies]
        self._client: httpx.AsyncClient | None = None
        self._stack: AsyncExitStack | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the publisher is started (inside ``async with``)."""
        return self._stack is not None

    async def __aenter__(self) -> GripPublisher:
        if self._stack is not None:
            raise RuntimeError("this GripPublisher is already running")
        async with AsyncExitStack() as stack:
            self._client = await stack.enter_async_context(
                httpx.AsyncClient(transport=self._transport, timeout=self.timeout)
            )
            # Runs after the senders stopped: fails what a cancelled close left queued.
            stack.callback(self._fail_pending)
            tg = await stack.enter_async_context(anyio.create_task_group())
            self._closing = False
            for sender in self._senders:
                tg.start_soon(self._run_sender, sender)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Send what is queued (with its retries, each item within its ``publish_timeout``), then stop.

        Idempotent.

        Cancellation: if cancelled, stops at once; the events still queued
        fail with ``GripPublishError`` in their publishers.
        """
        stack, self._stack = self._stack, None
        if stack is None:
            return
        self._closing = True
        for sender in self._senders:
            sender.wakeup.set()
        await stack.aclose()

    def _fail_pending(self) -> None:
        for sender in self._senders:
            while sender.queue:
                item = sender.queue.popleft()
                item.error = GripPublishError(sender.proxy.control_uri, None, "the publisher was closed")
                item.done.set()

    # -- publishing ------------------------------------------------------

    async def publish(self, channel: str, content: bytes, **fields: str) -> None:
        """Publish ``content`` (SSE bytes) on ``channel`` to every proxy, and wait until all accepted.

        ``fields`` are added to the item (``id``, ``prev-id``); without an
        ``id``, the item gets a unique one, so the proxy drops repeats.

        Raises:
            GripPublishError: a proxy refused, could not be reached or did
                not answer within ``publish_timeout`` (the others still got
                the item); its ``maybe_published`` tells whether it may
                have the item anyway.
            RuntimeError: the publisher is not running.

        Cancellation: the item stays queued and is sent anyway.
        """
        await self.wait_published(self.submit(channel, content, **fields))

    def check_running(self) -> None:
        """Raise ``RuntimeError`` unless the publisher is running (inside ``async with``)."""
        if self._stack is None or self._closing:
            raise RuntimeError(
                "GRIP publishing needs a running publisher: enter the EventStream (or the "
                "GripPublisher) with 'async with', for example in your app's lifespan"
            )

    def submit(self, channel: str, content: bytes, **fields: str) -> list[_Item]:
        """Queue one item for every proxy without waiting; see :meth:`wait_published`.

        Raises:
            RuntimeError: the publisher is not running.
        """
        self.check_running()
        try:
            text = content.decode("utf-8")
            stream_format: dict[str, str] = {"content": text}
        except UnicodeDecodeError:
            stream_format = {"content-bin": base64.b64encode(content).decode("ascii")}
        if "id" not in fields:
            fields = {"id": f"{self._id_prefix}-{next(self._ids)}", **fields}
        deadline = anyio.current_time() + self.publish_timeout
        items = []
        for sender in self._senders:
            item = _Item({"channel": channel, **fields, "formats": {"http-stream": stream_format}}, deadline)
            sender.queue.append(item)
            sender.wakeup.set()
            items.append(item)
        return items

    async def wait_published(self, items: list[_Item]) -> None:
        """Wait for items from :meth:`submit`; raise for the proxies that failed."""
        for item in items:
            await item.done.wait()
        errors = [item.error for item in items if item.error is not None]
        if errors:
            first = errors[0]
            first.errors = tuple(errors)
            raise first

    async def _run_sender(self, sender: _Sender) -> None:
        while True:
            if not sender.queue:
                if self._closing:
                    return
                sender.wakeup = anyio.Event()
                await sender.wakeup.wait()
                continue
            now = anyio.current_time()
            batch: list[_Item] = []
            size = 0
            while sender.queue and len(batch) < self.max_batch:
                item = sender.queue[0]
                if item.deadline <= now:  # waited its whole publish_timeout behind earlier requests
                    sender.queue.popleft()
                    sender.failures += 1
                    item.error = GripPublishError(
                        sender.proxy.control_uri,
                        None,
                        f"not sent: the proxy did not answer earlier requests within "
                        f"publish_timeout ({self.publish_timeout:g} s)",
                        attempts=0,
                    )
                    item.done.set()
                    continue
                if batch and size + item.size >= _MAX_BODY:
                    break
                size += item.size
                batch.append(sender.queue.popleft())
            if not batch:
                continue
            failure: GripPublishError | None = GripPublishError(
                sender.proxy.control_uri,
                None,
                "the publisher was closed before the proxy answered",
                maybe_published=True,
            )
            try:
                await self._post(sender, batch)
                failure = None
            except GripPublishError as exc:
                failure = exc
            finally:
                for item in batch:
                    item.error = failure
                    item.done.set()

    async def _post(self, sender: _Sender, batch: list[_Item]) -> None:
        assert self._client is not None
        proxy = sender.proxy
        body = json.dumps({"items": [item.body for item in batch]}, separators=(",", ":")).encode()
        status: int | None = None
        reason = ""
        attempt = 0
        maybe_published = False  # a request may have reached the proxy without an answer
        in_flight = False
        with anyio.CancelScope(deadline=min(item.deadline for item in batch)) as scope:
            while True:
                attempt += 1
                sender.requests += 1
                headers = {"Content-Type": "application/json", **proxy.auth_headers()}
                try:
                    in_flight = True
                    response = await self._client.post(proxy.publish_url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    in_flight = False
                    status, reason = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
                    # Before connecting nothing was sent; after, the proxy may have the items.
                    if not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
                        maybe_published = True
                else:
                    in_flight = False
                    if response.is_success:
                        sender.items_published += len(batch)
                        return
                    status, reason = (
                        response.status_code,
                        response.text.strip()[:500] or response.reason_phrase,
                    )
                    if status < 500:
                        break
                if attempt > self.retries:
                    break
                sender.retries += 1
                delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                await anyio.sleep(delay * random.uniform(0.5, 1.0))
        if scope.cancelled_caught:
            if in_flight:  # cut while waiting for an answer
                status, maybe_published = None, True
            last = f"; last error: {reason}" if reason else ""
            reason = f"no success within publish_timeout ({self.publish_timeout:g} s){last}"
        sender.failures += 1
        raise GripPublishError(
            proxy.control_uri, status, reason, attempts=attempt, maybe_published=maybe_published
        )

    # -- serving ---------------------------------------------------------

    def check_signature(self, grip_sig: str | None) -> SigCheck:
        """Classify a request by its ``Grip-Sig`` header; see :func:`check_grip_sig`."""
        return check_grip_sig(grip_sig, self.proxies)

    def statistics(self) -> tuple[GripProxyStatistics, ...]:
        """Counters per proxy, in configuration order."""
        return tuple(sender.statistics() for sender in self._senders)


def _keep_alive_value(data: bytes) -> str:
    # Pushpin trims the value and cuts it at the first ';', and its cstring
    # format only knows \\ \r \n \xHH: use cstring when that is safe, base64 otherwise.
    text = data.decode("utf-8")
    safe = ";" not in text and all(c in "\r\n" or (c >= " " and c != "\x7f") for c in text)
    if safe:
        escaped = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
        if escaped == escaped.strip():
            return f"{escaped}; format=cstring"
    return f"{base64.b64encode(data).decode('ascii')}; format=base64"


def hold_headers(
    channels: Sequence[str | tuple[str, str | None]],
    keep_alive: bytes | None,
    keep_alive_interval: float | None,
    next_link: str | None = None,
) -> list[tuple[bytes, bytes]]:
    """The GRIP instruction headers that make a proxy hold a stream on ``channels``.

    A channel may come with the id of the last event the client has
    (``prev-id``); that needs ``next_link``, where the proxy fetches what it
    missed (reliable mode).

    Raises:
        ValueError: ``next_link`` has a character that is not allowed in a
            URI, or one that would end the link (``,``, ``;``, ``<``, ``>``,
            quotes, white space, control characters): percent-encode it.
    """
    if next_link is not None and not _SAFE_LINK.fullmatch(next_link):
        raise ValueError(f"next link {next_link!r} is not a percent-encoded URI reference")
    values = []
    for channel in channels:
        name, prev_id = (channel, None) if isinstance(channel, str) else channel
        values.append(name if prev_id is None else f"{name}; prev-id={prev_id}")
    headers = [
        (b"grip-hold", b"stream"),
        (b"grip-channel", ", ".join(values).encode("utf-8")),
    ]
    if next_link is not None:
        headers.append((b"grip-link", f"<{next_link}>; rel=next".encode("latin-1")))
    if keep_alive is not None and keep_alive_interval is not None:
        timeout = max(1, round(keep_alive_interval))
        value = f"{_keep_alive_value(keep_alive)}; timeout={timeout}"
        headers.append((b"grip-keep-alive", value.encode("utf-8")))
    return headers
