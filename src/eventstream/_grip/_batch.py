"""What a GRIP publisher sends to one proxy: items, batches, and the retry policy.

An item is one event for one proxy, in the proxy's JSON publish format. A
proxy's queue is sent in batches: as many queued items as fit in one request
(``max_batch``, and under Pushpin's body limit), in publish order. A batch is
posted with retries after connection errors and 5xx answers, with capped,
jittered exponential backoff, and never beyond the earliest ``publish_timeout``
deadline of its items. Every item carries an ``id``, the same for every
retry, so a proxy that got a request whose answer was lost drops the retried
copy instead of delivering the event twice.

httpx is imported when a batch is first posted (see ``_grip/__init__.py``).
"""

from __future__ import annotations

import base64
import json
import math
import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from .._base import GripPublishError
from ._config import GripProxy

if TYPE_CHECKING:
    import httpx

__all__ = [
    "GripProxyStatistics",
    "Item",
    "ProxyQueue",
    "RetryPolicy",
    "encode_item",
    "post_batch",
    "take_batch",
]

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


@dataclass(frozen=True)
class RetryPolicy:
    """How a batch is retried: ``retries`` more attempts, ``backoff`` doubling up to ``max_backoff``.

    Raises:
        ValueError: ``retries`` is negative, or the delays are not positive
            with ``backoff <= max_backoff`` (and finite).
    """

    retries: int
    backoff: float
    max_backoff: float

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, not {self.retries!r}")
        if not (0 < self.backoff <= self.max_backoff) or math.isinf(self.max_backoff):
            raise ValueError("backoff and max_backoff must be positive with backoff <= max_backoff")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (from 1), jitter included."""
        delay: float = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return delay * random.uniform(0.5, 1.0)


class Item:
    """One event queued for one proxy, and what became of it."""

    __slots__ = ("body", "deadline", "done", "error", "size")

    def __init__(self, body: dict[str, Any], deadline: float) -> None:
        self.body = body
        self.size = len(json.dumps(body))
        self.deadline = deadline
        self.done = anyio.Event()
        self.error: GripPublishError | None = None

    def fail(self, error: GripPublishError | None) -> None:
        """Settle the item: ``error``, or ``None`` for accepted; wakes its publisher."""
        self.error = error
        self.done.set()


def encode_item(channel: str, content: bytes, fields: dict[str, str]) -> dict[str, Any]:
    """The item's JSON body: ``content`` as text when it is UTF-8, else base64 (``content-bin``)."""
    try:
        stream_format: dict[str, str] = {"content": content.decode("utf-8")}
    except UnicodeDecodeError:
        stream_format = {"content-bin": base64.b64encode(content).decode("ascii")}
    return {"channel": channel, **fields, "formats": {"http-stream": stream_format}}


class ProxyQueue:
    """The queue and counters of one proxy (its sender task is the publisher's)."""

    def __init__(self, proxy: GripProxy) -> None:
        self.proxy = proxy
        self.queue: deque[Item] = deque()
        self.wakeup = anyio.Event()
        self.items_published = 0
        self.requests = 0
        self.retries = 0
        self.failures = 0

    def statistics(self) -> GripProxyStatistics:
        return GripProxyStatistics(
            self.proxy.control_uri, self.items_published, self.requests, self.retries, self.failures
        )


def take_batch(sender: ProxyQueue, max_batch: int, publish_timeout: float) -> list[Item]:
    """Take the next batch from the front of the queue, without waiting.

    Items that waited their whole ``publish_timeout`` behind earlier requests
    are failed instead (with ``attempts=0``): they were never sent. The
    batch may be empty when every item taken had expired.
    """
    now = anyio.current_time()
    batch: list[Item] = []
    size = 0
    while sender.queue and len(batch) < max_batch:
        item = sender.queue[0]
        if item.deadline <= now:  # waited its whole publish_timeout behind earlier requests
            sender.queue.popleft()
            sender.failures += 1
            item.fail(
                GripPublishError(
                    sender.proxy.control_uri,
                    None,
                    f"not sent: the proxy did not answer earlier requests within "
                    f"publish_timeout ({publish_timeout:g} s)",
                    attempts=0,
                )
            )
            continue
        if batch and size + item.size >= _MAX_BODY:
            break
        size += item.size
        batch.append(sender.queue.popleft())
    return batch


#: The most of a proxy's answer that is read (for the error's reason).
_REASON_BYTES = 4096


async def _start_of(response: httpx.Response, limit: int) -> str:
    """Up to ``limit`` bytes of ``response``'s body, decoded (what is past them is not read)."""
    kept = b""
    async for chunk in response.aiter_bytes():
        kept += chunk
        if len(kept) >= limit:
            break
    return kept[:limit].decode("utf-8", "replace")


async def post_batch(
    client: httpx.AsyncClient,
    sender: ProxyQueue,
    batch: list[Item],
    policy: RetryPolicy,
    publish_timeout: float,
) -> None:
    """Post ``batch`` to the proxy, retrying as ``policy`` says until the earliest item deadline.

    Raises:
        GripPublishError: the proxy refused (4xx), or kept failing (connection
            errors, 5xx) past the retries or the deadline; ``maybe_published``
            says whether a request may have reached it.
    """
    import httpx  # (see _grip/__init__.py: not at startup)

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
                request = client.build_request("POST", proxy.publish_url, content=body, headers=headers)
                response = await client.send(request, stream=True)
                try:  # (the answer's start only: a proxy's body could be of any size)
                    status, text = response.status_code, await _start_of(response, _REASON_BYTES)
                finally:
                    await response.aclose()
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
                reason = text.strip()[:500] or response.reason_phrase
                if status < 500:
                    break
            if attempt > policy.retries:
                break
            sender.retries += 1
            await anyio.sleep(policy.delay(attempt))
    if scope.cancelled_caught:
        if in_flight:  # cut while waiting for an answer
            status, maybe_published = None, True
        last = f"; last error: {reason}" if reason else ""
        reason = f"no success within publish_timeout ({publish_timeout:g} s){last}"
    sender.failures += 1
    raise GripPublishError(
        proxy.control_uri, status, reason, attempts=attempt, maybe_published=maybe_published
    )
