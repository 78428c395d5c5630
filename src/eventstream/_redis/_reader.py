"""Reading the engine for one broker: the pub/sub feed into the follower, channels' histories (the
read script, for one channel or many in one call) and the periodic check for missed events."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._base import BrokerError
from ._connect import engine_epoch, glide_module, misrouted
from ._feed import FeedInbox
from ._follow import EngineFollower
from ._layout import CLUSTER_EPOCH, EngineLayout
from ._reads import Read
from ._scripts import READ, READ_CLUSTER, held_number
from ._slots import SlotMap
from ._wire import EngineEntry, decode_entry

if TYPE_CHECKING:
    from glide import GlideClient

__all__ = ["EngineReader", "came_fast", "decode_entries"]

logger = logging.getLogger("eventstream")

#: In a burst, feed messages are gathered while they keep coming at most _GATHER
#: seconds apart, or while this process publishes, for at most _GATHER_FOR seconds,
#: before they reach the hub.
_GATHER = 0.0005
#: Seconds at least between the starts of two checks asked for early (see check_soon).
_SOON_APART = 0.1
_GATHER_FOR = 0.01
#: Channels read by one call of the read script at most (a longer list takes several calls).
_READ_TOGETHER = 256
#: A call of the read script returns at most about this many channels' full histories:
#: once its messages reach ``_READ_FULL * count``, it leaves the other channels for the next call.
_READ_FULL = 64


def came_fast(count: int, seconds: float) -> bool:
    """Whether ``count`` feed messages in ``seconds`` are a burst: one per ``_GATHER`` or faster."""
    return count > 0 and count * _GATHER >= seconds


def decode_entries(channel: str, messages: Any) -> Sequence[EngineEntry]:
    """The entries of ``channel`` in a read's reply; one that is not an entry is logged and left out."""
    if not messages:
        # (A new channel's: a tuple of atoms leaves the collector's watch at its first pass,
        # where an empty list and the read's tuple holding it stay watched; a flood of new
        # channels made thousands a second live into its oldest generation.)
        return ()
    entries = []
    for message in messages:
        try:
            entries.append(decode_entry(bytes(message)))
        except ValueError as exc:
            logger.warning("ignoring a history entry of %r: %s", channel, exc)
    return entries


class _Misrouted(Exception):
    """A read of several slots of one node was refused for a key the node does not serve."""


class EngineReader:
    """What a running broker reads from the engine, through its command client.

    Args:
        client: The broker's command client (not the feed's).
        layout: The names of the broker's keys and feed channels.
        engine: The engine's description (for errors).
        check_interval: Seconds between checks for missed events.
        publishing: How many of this process's publishes are in flight (the
            feed gathers a burst while any are: their events come back soon).
        slots: A cluster's slot map (shared with the publishes): reads go by primary.
    """

    def __init__(
        self,
        client: GlideClient,
        *,
        layout: EngineLayout,
        engine: str,
        check_interval: float,
        publishing: Callable[[], int],
        slots: SlotMap,
    ) -> None:
        self._client: GlideClient | None = client
        self._slots = slots
        self._layout = layout
        self._engine = engine
        self._check_interval = check_interval
        self._publishing = publishing
        self._read_script: Any = glide_module().Script(READ_CLUSTER if layout.cluster else READ)
        #: Feed messages taken in so far.
        self.messages = 0
        self._soon: anyio.Event | None = None  # set: check now (see check_soon)
        self._burst = False  # the feed's last take was a burst: the next is gathered
        self._taken_at = -math.inf  # when feed messages were last taken in

    def stop(self) -> None:
        """Reads from now on fail with :class:`BrokerError` ("not connected")."""
        self._client = None

    def _take_now(self, follower: EngineFollower, message: tuple[bytes, bytes]) -> bool:
        # A message that came while the reader waited (FeedInbox.direct): delivered in the
        # feed's task if it is the next of a followed channel, and neither a burst is being
        # gathered nor this message comes within _GATHER of the last one taken (it may start
        # a burst: the reader takes it with those that follow); else False: the reader
        # takes it (and logs what is wrong with it, if anything).
        now = time.monotonic()  # (no anyio call: it would look for the running library first)
        if self._burst or now - self._taken_at < _GATHER:
            return False
        name, data = message
        try:
            channel = self._layout.channel_of(name)
            if channel is not None and not follower.receive_now(channel, decode_entry(data)):
                return False
        except ValueError:
            return False
        except Exception:  # (a bug, logged: the reader takes it again, and finds it delivered
            # if it got that far)
            logger.exception("broker: a feed message could not be taken in at once")
            return False
        self.messages += 1
        self._taken_at = now
        return True

    async def read_feed(self, inbox: FeedInbox, follower: EngineFollower) -> None:
        """Take the feed's messages in (the inbox offers each to the follower at once when it can).

        Cancellation: stops taking; messages not taken stay in the inbox.
        """
        if not self._layout.cluster:
            # (A cluster's feed pushes from the client's callbacks, outside any task: its
            # messages go through this task only.)
            inbox.direct = functools.partial(self._take_now, follower)
        try:
            await self._read_feed(inbox, follower)
        finally:
            inbox.direct = None

    async def _read_feed(self, inbox: FeedInbox, follower: EngineFollower) -> None:
        channel_of = self._layout.channel_of
        self._burst = burst = False
        self._taken_at = time.monotonic()
        while True:
            # Wait for one message (most paced ones do not wake this task: the
            # feed's own task takes them in, see _take_now), then take every one
            # already received: a burst reaches the hub as a burst (subscribers
            # wake once for many).
            # While messages come faster than one per _GATHER (a burst), first
            # gather the ones on their way (up to _GATHER_FOR): each batch handed
            # to the hub wakes every subscriber once, so bigger batches cost less.
            # Paced traffic is never delayed, even when a busy event loop lets a
            # few messages in between two takes.
            await inbox.wait()
            if inbox.take_missed():  # (the connection was lost, or the inbox full)
                self.check_soon()
            if burst:
                await self._gather(inbox)
            messages = inbox.take(1024)
            self.messages += len(messages)
            now = time.monotonic()
            self._burst = burst = len(messages) > 1 and came_fast(len(messages), now - self._taken_at)
            self._taken_at = now
            batch: list[tuple[str, EngineEntry]] = []
            for channel_name, data in messages:
                try:
                    channel = channel_of(channel_name)
                    if channel is None:
                        continue
                    batch.append((channel, decode_entry(data)))
                except ValueError as exc:
                    logger.warning(
                        "ignoring a message on %r that is not an eventstream entry: %s", channel_name, exc
                    )
            try:
                await follower.receive(batch)
            except BrokerError as exc:
                # A gap could not be filled now: the next entry of that channel,
                # or the periodic check, fills it (nothing is delivered out of order).
                logger.warning("broker: cannot fill a gap in the feed yet: %s", exc)
            except Exception:  # a message nothing above foresaw must not end every stream's feed
                logger.exception("broker: a batch of %d feed messages could not be taken in", len(batch))

    async def _gather(self, inbox: FeedInbox) -> None:
        # Wait while messages keep coming (_GATHER apart at most, on average over the
        # time actually waited), or while this process's own publishes are in flight
        # (their events come back through the feed a round trip later), up to
        # _GATHER_FOR. (On average: on a busy event loop a wait of _GATHER lasts a
        # pass of the loop, milliseconds, in which a paced feed's next message comes.
        # That is no burst, and waiting on for it would add up to _GATHER_FOR to
        # every message's delivery, for as long as the loop stays busy.)
        now = anyio.current_time()
        deadline = now + _GATHER_FOR
        while True:
            before, started = len(inbox), now
            await anyio.sleep(_GATHER)
            waiting, now = len(inbox), anyio.current_time()
            if waiting >= 1024 or now >= deadline:
                return
            if not came_fast(waiting - before, now - started) and not self._publishing():
                return

    async def read(self, channel: str, after: int, count: int) -> Read:
        result = (await self.read_many([(channel, after)], count))[0]
        if isinstance(result, BrokerError):
            raise result
        return result

    async def read_many(self, requests: Sequence[tuple[str, int]], count: int) -> list[Read | BrokerError]:
        """What :meth:`read` returns for each request, or the :class:`BrokerError` of its read.

        The channels are read by calls of the read script of up to
        ``_READ_TOGETHER`` channels each, sent at once (pipelined): one request
        to encode and send per call, not one per channel. A call whose reply
        holds ``_READ_FULL`` channels' worth of entries leaves the rest of its
        channels to a next call.
        """
        step = _READ_TOGETHER
        if self._layout.cluster:
            client = self._client
            if client is not None:
                await self._slots.refresh(client)
            return await self._read_grouped(requests, count, by_node=True)
        chunks = [(requests[start : start + step], False) for start in range(0, len(requests), step)]
        return await self._read_chunks(chunks, count)

    async def _read_grouped(
        self, requests: Sequence[tuple[str, int]], count: int, *, by_node: bool
    ) -> list[Read | BrokerError]:
        # A cluster: the requests grouped by the primary that serves them (as the slot map
        # says; a call then reads several slots of one node), or by slot.
        layout, slots, step = self._layout, self._slots, _READ_TOGETHER
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (channel, _after) in enumerate(requests):
            slot = layout.slot(channel)
            node = slots.node_of(slot) if by_node else -1
            groups.setdefault((node, slot if node < 0 else -1), []).append(index)
        order = [index for indices in groups.values() for index in indices]
        chunks = [
            ([requests[index] for index in indices[start : start + step]], node >= 0)
            for (node, _slot), indices in groups.items()
            for start in range(0, len(indices), step)
        ]
        placed = dict(zip(order, await self._read_chunks(chunks, count), strict=True))
        return [placed[index] for index in range(len(requests))]

    async def _read_chunks(
        self, chunks: Sequence[tuple[Sequence[tuple[str, int]], bool]], count: int
    ) -> list[Read | BrokerError]:
        # Each chunk (its requests, and whether they may be of several slots of one node)
        # in calls of its own, all sent at once; the results in the chunks' order.
        results: list[list[Read | BrokerError]] = [[] for _ in chunks]

        async def read_chunk(index: int) -> None:
            chunk, spread = chunks[index]
            done = results[index]
            while len(done) < len(chunk):
                left = chunk[len(done) :]
                try:
                    done += await self._read_together(left, count, spread=spread)
                except _Misrouted:  # (read nothing: a stale slot map) slot by slot, then
                    self._slots.stale = True
                    done += await self._read_grouped(left, count, by_node=False)
                except BrokerError as exc:
                    done += [exc] * len(left)

        if len(chunks) == 1:
            await read_chunk(0)
        else:
            async with anyio.create_task_group() as tg:
                for index in range(len(chunks)):
                    if index:
                        # One call is encoded per pass of the event loop: the feed (and
                        # everything else) runs in between, not after all of them.
                        await anyio.lowlevel.checkpoint()
                    tg.start_soon(read_chunk, index)
        return [result for chunk_results in results for result in chunk_results]

    async def _read_together(
        self, requests: Sequence[tuple[str, int]], count: int, *, spread: bool = False
    ) -> list[Read]:
        # What one call of the read script returns: the first channels of
        # `requests` (at least one), up to its budget of entries. `spread`: on a
        # cluster, channels of several slots of one node (_Misrouted if not).
        client = self._client
        glide = glide_module()
        if client is None:
            raise BrokerError(self._engine, "not connected")
        layout = self._layout
        args = [str(count), " ".join(str(after) for _channel, after in requests), str(_READ_FULL * count)]
        if layout.cluster:
            keys = [
                key for channel, _after in requests for key in (layout.last(channel), layout.history(channel))
            ]
            args.append(CLUSTER_EPOCH)
            if spread:  # (the keys as arguments; the first in KEYS, for the routing)
                args += [str(len(keys)), *keys]
                keys = keys[:1]
            else:
                args.append("0")
        else:
            # Each channel's field in the state hash is taken from its key by the script.
            keys = [layout.state, *(layout.history(channel) for channel, _after in requests)]
        try:
            reply = await client.invoke_script(self._read_script, keys=keys, args=args)
        except glide.GlideError as exc:
            if spread and misrouted(str(exc)):
                raise _Misrouted from exc
            raise BrokerError(self._engine, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(reply, list) or len(reply) % 2 != 1 or not 3 <= len(reply) <= 1 + 2 * len(requests):
            raise BrokerError(self._engine, "the read script's reply is not a list of the channels read")
        epoch = bytes(reply[0]).decode("ascii")
        return [
            (epoch, int(reply[1 + 2 * k]), decode_entries(channel, reply[2 + 2 * k]))
            for k, (channel, _after) in enumerate(requests[: (len(reply) - 1) // 2])
        ]

    def check_soon(self) -> None:
        """Run the periodic check now: feed messages went missing (read from history then)."""
        if self._soon is not None:
            self._soon.set()

    async def check_periodically(self, follower: EngineFollower) -> None:
        started = -math.inf
        while True:
            self._soon = anyio.Event()
            with anyio.move_on_after(self._check_interval):
                await self._soon.wait()
                await anyio.sleep_until(started + _SOON_APART)  # (asked early: not more often)
            started = anyio.current_time()
            try:
                await self._check(follower)
            except BrokerError as exc:
                logger.warning("broker: cannot check for missed events: %s", exc)

    async def _check(self, follower: EngineFollower) -> None:
        client = self._client
        unfollowed = follower.unfollowed()
        if unfollowed:
            logger.warning(
                "broker: %d channels with subscribers were not followed (dropped as they subscribed); "
                "following them again",
                len(unfollowed),
            )
            await follower.prepare(unfollowed, within=self._check_interval)
        channels = await follower.channels_to_check()
        if client is None or not channels:
            return
        if self._layout.cluster:
            await self._check_cluster(client, follower, channels)
            return
        glide = glide_module()
        state = self._layout.state
        for start in range(0, len(channels), 256):
            chunk = channels[start : start + 256]
            fields = ["epoch", *(f"seq:{name}" for name in chunk)]
            try:
                values = await client.custom_command(["HMGET", state, *fields])
            except glide.GlideError as exc:
                raise BrokerError(self._engine, f"{type(exc).__name__}: {exc}") from exc
            # No epoch: the engine lost its data (restarted empty, flushed) and
            # nobody published since. Set the new epoch now: a quiet channel's
            # streams end within check_interval, not at its next publish.
            epoch = (
                bytes(values[0]).decode("ascii")
                if values[0] is not None
                else await engine_epoch(client, state=state, engine=self._engine)
            )
            newest = {
                name: int(value) if value is not None else 0
                for name, value in zip(chunk, values[1:], strict=True)
            }
            await follower.check(epoch, newest)

    async def _check_cluster(
        self, client: GlideClient, follower: EngineFollower, channels: list[str]
    ) -> None:
        # A cluster: each channel's number is in its last-id key, read by slot
        # (one MGET per slot of the channels, up to 256 keys each). Its epoch is fixed.
        glide = glide_module()
        layout = self._layout
        by_slot: dict[int, list[str]] = {}
        for name in channels:
            by_slot.setdefault(layout.slot(name), []).append(name)
        for names in by_slot.values():
            for start in range(0, len(names), 256):
                chunk = names[start : start + 256]
                try:
                    values = await client.custom_command(["MGET", *(layout.last(name) for name in chunk)])
                except glide.GlideError as exc:
                    raise BrokerError(self._engine, f"{type(exc).__name__}: {exc}") from exc
                newest = {name: held_number(value) for name, value in zip(chunk, values, strict=True)}
                await follower.check(CLUSTER_EPOCH, newest)
