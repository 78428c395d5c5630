"""Sending publishes to a Redis-protocol engine: batches, retries, and the byte cap.

One call of the publish script (see ``_scripts.PUBLISH``) numbers,
keeps and announces a whole batch atomically. A batch that fails on the way
(a cut connection, an engine that is loading) is sent again, with capped,
jittered backoff, until the deadline of its oldest event (``publish_timeout``
after that event's call; an attempt still unanswered then is abandoned, though
the engine's client may still send it once the engine is back), so
every publish ends within ``publish_timeout`` of its call however many are
queued; an event whose deadline passed before its batch is sent fails
unsent. With ``wait_replicas``, an attempt ends once that many replicas
acknowledged the batch (``WAIT``, sent to the primary that ran it), and the
batch fails when they did not by its deadline. Every attempt carries the
same batch token. The engine keeps each batch's reply under that token for a
while, so a retry whose first attempt did run gets the same reply, and no
event is published twice. Replies that arrived are acknowledged in the next
batch (the engine deletes their keys), so the engine holds a reply only
while it may still be asked for again.
"""

from __future__ import annotations

import math
import os
import random
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from .._base import BrokerError
from .._core import _ENTRY_OVERHEAD
from ._batching import Pending
from ._connect import glide_module, misrouted, transient
from ._layout import CLUSTER_EPOCH, EngineLayout
from ._slots import SlotMap
from ._wire import traced_mark

if TYPE_CHECKING:
    from glide import GlideClient

__all__ = ["BatchSender"]

#: The longest id the engine assigns after its epoch: "-" and a 64-bit number.
_ENGINE_ID_DIGITS = 21
#: Acknowledged replies deleted per batch, at most.
_ACKS_PER_BATCH = 64


class BatchSender:
    """Runs the publish script for batches of :class:`~eventstream._redis._batching.Pending` events.

    Args:
        engine: The engine's description (for errors).
        layout: The names of the broker's keys and feed channels (on one engine, or on a
            cluster: then every batch sent holds channels of one slot only).
        max_events, max_bytes, max_age, publish_timeout: As in
            :class:`~eventstream.RedisBroker`.
        request_timeout: Seconds one request may take (bounds how long a
            reply must be kept for a retry, and each ``WAIT``).
        wait_replicas: As in :class:`~eventstream.RedisBroker`.
    """

    def __init__(
        self,
        *,
        engine: str,
        layout: EngineLayout,
        max_events: int,
        max_bytes: int,
        max_age: float,
        request_timeout: float,
        publish_timeout: float,
        wait_replicas: int = 0,
    ) -> None:
        self.engine = engine
        self.layout = layout
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.publish_timeout = publish_timeout
        self.wait_replicas = wait_replicas
        # Each WAIT blocks the connection to its primary for at most a quarter of a request's
        # time when replicas are missing: the requests queued behind it on that connection
        # (reads, presence, the other sender's WAIT) must still be answered in their time.
        self._wait_ms = max(1, int(request_timeout * 250))
        # A retry is sent at most publish_timeout after the first attempt and
        # runs within request_timeout: the reply is kept a second longer.
        self.reply_lifetime_ms = math.ceil((publish_timeout + request_timeout + 1.0) * 1000)
        #: Which primary serves each slot (a cluster's batches are grouped by primary; its
        #: reads too: see EngineReader).
        self.slots = SlotMap()
        #: Result keys of batches whose replies arrived, to delete with the next batch (of
        #: their slot, on a cluster: a script touches keys of one slot).
        self._acknowledged: dict[int, list[str]] = {}

    def check_size(self, body: bytes, event_id: str | None, epoch: str) -> None:
        """Refuse an event that the engine's history could not keep.

        The size counted is the one every copy of history counts: the encoded
        fields, the ``id:`` line and a fixed allowance for bookkeeping; an id
        the engine assigns counts at its longest (``{epoch}-`` and 20 digits).

        Raises:
            ValueError: the event alone weighs more than ``max_bytes``.
        """
        id_length = len(event_id.encode("utf-8")) if event_id is not None else len(epoch) + _ENGINE_ID_DIGITS
        size = len(body) + id_length + 6 + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            raise ValueError(
                f"the event weighs {size} bytes (its fields, id line and {_ENTRY_OVERHEAD} bytes of "
                f"bookkeeping), more than the history the broker keeps per channel "
                f"(max_bytes={self.max_bytes}); it was not published"
            )

    async def send_batch(self, client: GlideClient | None, script: Any, batch: list[Pending]) -> None:
        """:meth:`send` ``batch``: in one script call on one engine; on a cluster, in one call per
        primary that serves its channels (as the slot map says), sent at once.

        A call whose primary turns out not to serve all its channels (the map
        was stale) is refused before it writes anything: its events go again,
        one call per slot (a script may always touch one slot), and the map is
        read again.

        Never raises (as :meth:`send`).
        """
        layout = self.layout
        if not layout.cluster:
            await self.send(client, script, batch)
            return
        slots = self.slots
        if client is not None:
            await slots.refresh(client)
        by_node: dict[int, list[Pending]] = {}
        for item in batch:
            by_node.setdefault(slots.node_of(layout.slot(item.channel)), []).append(item)
        if len(by_node) == 1:
            node, part = next(iter(by_node.items()))
            await self._send_node(client, script, part, known=node >= 0)
            return
        async with anyio.create_task_group() as tg:
            for node, part in by_node.items():
                tg.start_soon(partial(self._send_node, client, script, part, known=node >= 0))

    async def _send_node(
        self, client: GlideClient | None, script: Any, part: list[Pending], *, known: bool
    ) -> None:
        # The events of one primary's channels (known: as the slot map says).
        layout = self.layout
        by_slot: dict[int, list[Pending]] = {}
        for item in part:
            by_slot.setdefault(layout.slot(item.channel), []).append(item)
        if len(by_slot) == 1:
            await self.send(client, script, part)
            return
        if known:
            if not await self.send(client, script, part, spread=True):
                return
            self.slots.stale = True  # (refused unwritten: slot by slot, below)
        async with anyio.create_task_group() as tg:
            for one_slot in by_slot.values():
                tg.start_soon(self.send, client, script, one_slot)

    async def send(
        self, client: GlideClient | None, script: Any, batch: list[Pending], *, spread: bool = False
    ) -> bool:
        """Publish ``batch`` in one script call, retried while the failure is transient (on a
        cluster, its channels are all of one slot, or with ``spread``, of several slots of one
        primary: their keys then go as arguments).

        Never raises: each item gets its outcome (``seq`` and ``prev_id``, or
        ``error``, a :class:`BrokerError`), ``done`` and its ``wake`` event set.
        It returns by the earliest ``deadline`` of the items (plus the time to
        hand out the outcomes); items already past theirs fail unsent.

        Returns True, with ``batch`` untouched, when a ``spread`` batch was refused
        before anything was written (a key the primary does not serve): send it
        again slot by slot.
        """
        glide = glide_module()
        batch = self._in_time(batch)
        if not batch:
            return False
        layout = self.layout
        cluster = layout.cluster
        slot = layout.slot(batch[0].channel)
        result_key = layout.batch(os.urandom(8).hex(), batch[0].channel)
        waiting = self._acknowledged.setdefault(slot, [])
        acknowledged = waiting[:_ACKS_PER_BATCH]
        del waiting[:_ACKS_PER_BATCH]
        keys, passed, per_event = self._script_input(batch, result_key, acknowledged, spread=spread)
        deadline = min(item.deadline for item in batch)
        attempt = 0
        error: BrokerError | None = None
        result: Any = None
        unanswered = False  # an attempt was sent and got no answer: it may have run
        while client is not None:
            args: list[str | bytes] = [
                CLUSTER_EPOCH if cluster else os.urandom(4).hex(),
                str(self.max_events),
                str(max(1, round(self.max_age * 1000))),
                str(self.max_bytes),
                str(_ENTRY_OVERHEAD),
                "1" if attempt else "0",
                str(self.reply_lifetime_ms),
                str(len(acknowledged)),
                "" if cluster else layout.feed_prefix,
                *passed,
                *per_event,
            ]
            attempt += 1
            ran = False
            try:
                with anyio.move_on_after(max(0.0, deadline - time.monotonic())) as scope:
                    result = await client.invoke_script(script, keys=keys, args=args)
                    ran = True
                    if self.wait_replicas:
                        await self._replicated(client, result_key)
                if not scope.cancelled_caught:
                    break
                if ran:  # (waiting for its replicas)
                    error = BrokerError(
                        self.engine,
                        f"published on the primary, but fewer than {self.wait_replicas} of its replicas "
                        f"acknowledged it within publish_timeout ({self.publish_timeout:g} s): "
                        "a failover may lose it",
                        attempt,
                        maybe_published=True,
                    )
                    break
                # The engine did not answer by the deadline: abandon the attempt.
                error = BrokerError(
                    self.engine, f"no answer within publish_timeout ({self.publish_timeout:g} s)", attempt,
                    maybe_published=True,
                )  # fmt: skip
                break
            except glide.GlideError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if spread and not unanswered and not ran and misrouted(str(exc)):
                    # Refused before writing (a key the node does not serve): nothing ran.
                    waiting[:0] = acknowledged
                    return True
                if ran or isinstance(exc, glide.TimeoutError | glide.ConnectionError | glide.ClosingError):
                    unanswered = True  # (ran: its WAIT failed; a retry gets the reply kept for it)
                if not transient(exc, glide) or time.monotonic() >= deadline:
                    error = BrokerError(self.engine, reason, attempt, maybe_published=unanswered)
                    break
                delay = min(1.0, 0.02 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
                await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline:
                    error = BrokerError(self.engine, reason, attempt, maybe_published=unanswered)
                    break
        else:
            error = BrokerError(self.engine, "the broker was stopped")
        if error is None:
            waiting.append(result_key)
        self._finish(batch, error, result)
        return False

    def _in_time(self, batch: list[Pending]) -> list[Pending]:
        # The items of `batch` still within their deadline; the others fail unsent.
        now = time.monotonic()
        expired = [item for item in batch if item.deadline <= now]
        if not expired:
            return batch
        late = BrokerError(
            self.engine, f"not sent within publish_timeout ({self.publish_timeout:g} s)", attempts=0
        )
        self._finish(expired, late, None)
        return [item for item in batch if item.deadline > now]

    def _script_input(
        self, batch: list[Pending], result_key: str, acknowledged: list[str], *, spread: bool
    ) -> tuple[list[str], list[str], list[str | bytes]]:
        # The publish script's keys, the arguments that pass keys (a cluster's), and one
        # argument per event (the engine parses it): keys once per channel of the batch,
        # so a batch costs few strings to pass on.
        layout = self.layout
        cluster = layout.cluster
        keys = [result_key, *acknowledged] if cluster else [layout.state, result_key, *acknowledged]
        channel_marks: dict[str, bytes] = {}
        per_event: list[str | bytes] = []
        for item in batch:
            k = channel_marks.get(item.channel)
            if k is None:
                k = channel_marks[item.channel] = b"%d\n" % len(channel_marks)
                keys += layout.publish_keys(item.channel)
            own = b"\n" if item.id is None else b"=" + item.id.encode("utf-8") + b"\n"
            if item.traceparent:  # tracing: the publish's span, for the delivering processes
                per_event.append(traced_mark(k, item.traceparent) + own + item.body)
            else:
                per_event.append(k + own + item.body)
        if spread:  # (several slots: the key checks are the script's, keys as arguments)
            return keys[:1], [str(len(keys) - 1), *keys[1:]], per_event
        return keys, ["0"] if cluster else [], per_event

    async def _replicated(self, client: GlideClient, key: str) -> None:
        # Return once `wait_replicas` replicas of the primary that holds `key` acknowledged
        # every write made on the connection to it so far (the batch's among them); the
        # caller's deadline bounds it. Raises glide.GlideError as the script's call does.
        wanted = self.wait_replicas
        if self.layout.cluster:
            glide = glide_module()
            route = glide.SlotKeyRoute(glide.SlotType.PRIMARY, key)
            while await client.wait(wanted, self._wait_ms, route=route) < wanted:  # type: ignore[call-arg]
                pass
        else:
            while await client.wait(wanted, self._wait_ms) < wanted:
                pass

    @staticmethod
    def _finish(batch: list[Pending], error: BrokerError | None, result: Any) -> None:
        for index, item in enumerate(batch):
            if error is not None:
                item.error = error
            else:
                item.epoch = bytes(result[0]).decode("ascii")
                item.seq = int(result[2 * index + 1])
                item.prev_id = bytes(result[2 * index + 2]).decode("utf-8")
            item.done = True
            item.wake()
