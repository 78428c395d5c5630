"""Publishing to GRIP proxies (Pushpin, Fastly Fanout) over their HTTP control API.

A :class:`GripPublisher` owns one ``httpx.AsyncClient`` and a task group
with one sender task per proxy; it runs inside ``async with``. Each publish
puts one item in every proxy's queue and waits until every proxy accepted
it. A sender posts what is queued in one request; what is published while
that request is in flight goes out together in the next one, so a busy
channel costs one round trip per batch, not per event, and each proxy sees
the events in publish order. Items, batches and retries are ``_batch.py``.

Every publish is bounded in time: it returns or raises ``publish_timeout``
seconds after it was made, at the latest, however the proxy behaves.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from .._base import GripPublishError, check_count, check_seconds
from ._batch import (
    GripProxyStatistics,
    Item,
    ProxyQueue,
    RetryPolicy,
    encode_item,
    post_batch,
    take_batch,
)
from ._config import GripProxy, SigCheck, check_grip_sig, proxies_from_config

if TYPE_CHECKING:
    import httpx

__all__ = ["GripProxyStatistics", "GripPublisher", "GripSubmission"]


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
        check_count("max_batch", max_batch)
        self._policy = RetryPolicy(retries, backoff, max_backoff)
        check_seconds("timeout", timeout)
        check_seconds("publish_timeout", publish_timeout)
        self.proxies: tuple[GripProxy, ...] = proxies_from_config(proxies)
        self.max_batch = max_batch
        self.timeout = timeout
        self.publish_timeout = publish_timeout
        # Item ids: unique per publisher, the same for every retry of an item.
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._transport = transport
        self._senders = [ProxyQueue(proxy) for proxy in self.proxies]
        self._client: httpx.AsyncClient | None = None
        self._stack: AsyncExitStack | None = None
        self._closing = False

    @property
    def retries(self) -> int:
        """How many times a batch is sent again after a connection error or a 5xx answer."""
        return self._policy.retries

    @property
    def backoff(self) -> float:
        """The first retry delay, in seconds."""
        return self._policy.backoff

    @property
    def max_backoff(self) -> float:
        """The longest delay between two attempts, in seconds."""
        return self._policy.max_backoff

    # -- lifecycle -------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the publisher is started (inside ``async with``)."""
        return self._stack is not None

    async def __aenter__(self) -> GripPublisher:
        if self._stack is not None:
            raise RuntimeError("this GripPublisher is already running")
        import httpx  # (see _grip/__init__.py: not at startup)

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
                sender.queue.popleft().fail(
                    GripPublishError(sender.proxy.control_uri, None, "the publisher was closed")
                )

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

    def submit(self, channel: str, content: bytes, **fields: str) -> list[Item]:
        """Queue one item for every proxy without waiting; see :meth:`wait_published`.

        Raises:
            RuntimeError: the publisher is not running.
        """
        self.check_running()
        if "id" not in fields:
            fields = {"id": f"{self._id_prefix}-{next(self._ids)}", **fields}
        body = encode_item(channel, content, fields)
        deadline = anyio.current_time() + self.publish_timeout
        items = []
        for sender in self._senders:
            item = Item(body, deadline)  # the body is never changed: shared by the proxies
            sender.queue.append(item)
            sender.wakeup.set()
            items.append(item)
        return items

    async def wait_published(self, items: list[Item]) -> None:
        """Wait for items from :meth:`submit`; raise for the proxies that failed."""
        for item in items:
            await item.done.wait()
        errors = [item.error for item in items if item.error is not None]
        if errors:
            first = errors[0]
            first.errors = tuple(errors)
            raise first

    async def _run_sender(self, sender: ProxyQueue) -> None:
        while True:
            if not sender.queue:
                if self._closing:
                    return
                sender.wakeup = anyio.Event()
                await sender.wakeup.wait()
                continue
            batch = take_batch(sender, self.max_batch, self.publish_timeout)
            if not batch:
                continue
            assert self._client is not None
            failure: GripPublishError | None = GripPublishError(
                sender.proxy.control_uri,
                None,
                "the publisher was closed before the proxy answered",
                maybe_published=True,
            )
            try:
                await post_batch(self._client, sender, batch, self._policy, self.publish_timeout)
                failure = None
            except GripPublishError as exc:
                failure = exc
            finally:
                for item in batch:
                    item.fail(failure)

    # -- serving ---------------------------------------------------------

    def check_signature(self, grip_sig: str | None) -> SigCheck:
        """Classify a request by its ``Grip-Sig`` header; see :func:`check_grip_sig`."""
        return check_grip_sig(grip_sig, self.proxies)

    def statistics(self) -> tuple[GripProxyStatistics, ...]:
        """Counters per proxy, in configuration order."""
        return tuple(sender.statistics() for sender in self._senders)


class GripSubmission:
    """Queues an event for every proxy once its broker numbered it (a ``Numbered`` callback).

    ``EventStream.publish_event`` passes one to :meth:`Broker.dispatch`, so
    items are queued in numbering order, then waits with :meth:`wait`.
    """

    __slots__ = ("_channel", "_publisher", "_reliable", "items")

    def __init__(self, publisher: GripPublisher, channel: str, *, reliable: bool) -> None:
        self._publisher = publisher
        self._channel = channel
        self._reliable = reliable
        #: The queued items, one per proxy (none before the call).
        self.items: list[Item] = []

    def __call__(self, event_id: str, prev_id: str, wire: bytes) -> None:
        """Queue ``wire`` (with ``id`` and ``prev-id`` in reliable mode: the proxy checks the chain).

        Raises:
            RuntimeError: the publisher is not running.
        """
        fields = {"id": event_id, "prev-id": prev_id} if self._reliable else {}
        self.items = self._publisher.submit(self._channel, wire, **fields)

    async def wait(self) -> None:
        """Wait until every proxy accepted the items; see :meth:`GripPublisher.wait_published`."""
        await self._publisher.wait_published(self.items)
