"""One streaming response: where it resumes from, its replay, ids and writes.

A connection on one channel sends each event with the event's own id. A
connection on several channels sends an id that records its position in
each channel::

    {epoch}-{digest}-{seq_1}.{seq_2}...{seq_n}

``epoch`` identifies the history store (so ids from before a restart are
recognised), ``digest`` is a hash of the channel list (the same URL gives the
same list), and ``seq_k`` is the sequence number of the last event seen on
the k-th channel (0: none yet). It contains only ASCII letters, digits, ``-``
and ``.``, so browsers echo it back intact in ``Last-Event-ID``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

from .._backends import DisconnectWatch, Waiter, Watch, current_waiter
from .._core import (
    HistoryEntry,
    HistoryStore,
    Hub,
    Subscriber,
    combined_id,
    combined_prefix,
    replay,
    resume_positions,
)
from .._observe import UNCOUNTED, TemplateCounters
from .._observe._trace import StreamSpan
from .._sse import KEEP_ALIVE, STREAM_ERROR, STREAM_EXPIRED, stream_reset, with_id
from ..types import Receive, Send

__all__ = ["STREAM_HEADERS", "Connection"]

logger = logging.getLogger("eventstream")

#: The headers of a streaming response.
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class Connection:
    """The state of one event stream response (created right after subscribing)."""

    __slots__ = (
        "_prefix",
        "_wide",
        "channels",
        "completing",
        "epoch",
        "expires_at",
        "failed",
        "history",
        "hub",
        "identity",
        "keep_alive_interval",
        "limit_key",
        "multi",
        "positions",
        "span",
        "subscriber",
        "template",
    )

    def __init__(
        self,
        hub: Hub,
        subscriber: Subscriber,
        history: HistoryStore | None,
        epoch: str,
        keep_alive_interval: float | None,
    ) -> None:
        self.hub = hub
        self.subscriber = subscriber
        self.history = history
        self.epoch = epoch
        self.keep_alive_interval = keep_alive_interval
        self.channels = subscriber.channels
        self.multi = len(self.channels) > 1
        # Several channels numbered by one counter: a position on one is a position on all.
        self._wide = self.multi and history is not None and history.stream_wide
        self._prefix = combined_prefix(epoch, self.channels) if self.multi else ""
        #: The last sequence number delivered (or deliberately skipped) per channel.
        self.positions: dict[str, int] = {}
        #: The response's last message is being sent: a disconnect no longer cancels anything.
        self.completing = False
        #: metrics: the counters of its endpoint's channel template (set by the endpoint).
        self.template: TemplateCounters = UNCOUNTED
        #: metrics: the stream ended on a server error (``stream-error`` was sent).
        self.failed = False
        #: When the client's credentials end (Unix time): the stream ends with stream-expired.
        self.expires_at: float | None = None
        #: limits: the client address whose open-stream count it holds (see _base/_limits.py), if any.
        self.limit_key: str | None = None
        #: presence: the identity it is present under (see _core/_presence.py), if any.
        self.identity: str | None = None
        #: tracing: the span of the stream's life, while tracing is on (ended with its reason).
        self.span: StreamSpan | None = None

    # -- where to start --------------------------------------------------

    def start(self, last_event_id: str | None) -> tuple[list[HistoryEntry], bool]:
        """The events to replay first, and whether the client must be told to reset.

        Must run right after the subscription was registered, without
        awaiting in between: live events published from then on are in the
        subscriber's buffer, and those before are in the replay, so there is
        neither gap nor duplicate (duplicates are also skipped by position).
        """
        current = self._current()
        if last_event_id is None:
            self.positions = current
            return [], False
        wanted = resume_positions(self.history, self.epoch, self.channels, last_event_id)
        if wanted is not None:
            if self._wide:  # (an id of an earlier release may hold 0 for a quiet channel)
                wanted = dict.fromkeys(self.channels, max(wanted.values()))
            entries, complete = replay(self.history, wanted)
            if complete:
                self.positions = wanted
                return entries, False
        self.positions = current
        return [], True

    def _current(self) -> dict[str, int]:
        # Where the connection stands on each channel now. With one counter for every channel,
        # on each the newest of them: it owes nothing published before, on any of its channels;
        # a quiet channel left at 0 would be "not held" once anything anywhere was trimmed,
        # and every resume would reset.
        current = {name: self._last_seq(name) for name in self.channels}
        return dict.fromkeys(self.channels, max(current.values())) if self._wide else current

    def _last_seq(self, channel: str) -> int:
        last = self.history.last(channel) if self.history is not None else None
        return last.seq if last is not None else 0

    # -- what to write ---------------------------------------------------

    def current_id(self) -> str:
        """The id that records this connection's positions (for ``stream-reset``)."""
        if self.multi:
            return combined_id(self._prefix, self.channels, self.positions)
        (channel,) = self.channels
        last = self.history.last(channel) if self.history is not None else None
        return last.id if last is not None and last.seq == self.positions[channel] else ""

    def reset_event(self) -> bytes:
        self.template.resets += 1  # metrics
        return stream_reset(self.current_id())

    def _render(self, batch: Sequence[HistoryEntry]) -> bytes:
        positions = self.positions
        if len(batch) == 1 and not self.multi:  # the steady state: one event per wake-up
            entry = batch[0]
            if entry.seq <= positions.get(entry.channel, 0):
                return b""
            positions[entry.channel] = entry.seq
            return entry.wire
        parts: list[bytes] = []
        wide = self._wide
        for entry in batch:
            if entry.seq <= positions.get(entry.channel, 0):
                continue  # already replayed
            if wide and entry.channel in positions:  # event n on one channel: all before n on all
                for name in positions:  # (see _current; the closing event, on no channel, moves none)
                    positions[name] = entry.seq
            else:
                positions[entry.channel] = entry.seq
            if self.multi:
                parts.append(with_id(entry.body, combined_id(self._prefix, self.channels, positions)))
            else:
                parts.append(entry.wire)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def run(self, receive: Receive, send: Send, last_event_id: str | None, opening: bytes) -> None:
        """Send the whole response: headers, ``opening``, the replay, live events, the end.

        Must be called right after subscribing, without awaiting in between
        (see :meth:`start`). Then it writes live events until the
        subscription ends. Everything queued is written in one ASGI message,
        so a client that fell behind catches up with one socket write. Waits
        on the subscriber's reusable waiter; after ``keep_alive_interval``
        seconds without a write it sends a ``keep-alive`` event. A failure of
        the server's own (an exception other than ``OSError``) is logged and
        reported to the client as a ``stream-error`` event. The client's
        disconnect (``receive()``, or ``OSError`` from ``send``) ends it
        quietly, and so does the subscriber's cancel scope, which it sets.

        The whole response runs in this one coroutine, not in others it
        awaits: a parked connection keeps one frame.

        Raises:
            Exception: what the server's ``receive()`` raises, other than ``OSError``.

        Cancellation: the subscription stays registered (the caller
        unsubscribes); what was taken from the queue and not yet sent is lost
        with the connection.
        """
        subscriber = self.subscriber
        watch, timed = await self._watch(receive)
        try:
            try:
                # The start runs in a coroutine of its own: its frame is gone once it returns.
                failure = await self._begin(send, last_event_id, opening)
                if failure is None:
                    waiter = current_waiter()
                    subscriber.waiter = waiter
                    try:
                        queue = subscriber.queue  # the same list for the subscription's life
                        interval = self.keep_alive_interval
                        if timed:
                            watch.start_timer(waiter)
                        end, deadline = self._deadlines(waiter)
                        while True:
                            if queue:
                                # Rendered and cleared before any await: what a publish adds
                                # during the send is in the queue for the next round.
                                body = self._render(queue)
                                count = len(queue)
                                subscriber.took()
                                if subscriber.stalled is not None:  # left behind: it progressed
                                    self.hub.progressed(subscriber)
                                if subscriber.reset_pending:
                                    subscriber.reset_pending = False
                                    body = self.reset_event() + body
                                if body:
                                    subscriber.sending = True  # a client that does not read holds it here
                                    await send(
                                        {"type": "http.response.body", "body": body, "more_body": True}
                                    )
                                    subscriber.sending = False
                                    self.template.written_bytes += len(body)  # metrics
                                self.hub.count_delivered(count)
                                if interval is not None:
                                    deadline = min(end, waiter.time() + interval)
                                if end != math.inf and waiter.time() >= end:
                                    await self._expire(send)
                                    break
                            elif subscriber.closed:
                                break
                            elif subscriber.stalled is not None:
                                await self._catch_up(send)
                            elif not await waiter.wait(deadline):  # idle for the whole interval
                                if waiter.time() >= end:
                                    await self._expire(send)
                                    break
                                await self._send_held(send, KEEP_ALIVE)
                                deadline = min(end, waiter.time() + (interval or math.inf))
                    except OSError:
                        raise
                    except Exception as exc:
                        failure = exc
                    finally:
                        subscriber.waiter = None
                        waiter.close()
                await self._end(send, failure)
            except OSError:  # the client is gone (ASGI 2.4 servers raise it from send)
                pass
        except BaseException as exc:
            if not await watch.stop(exc):
                raise
        else:
            await watch.stop(None)

    async def _watch(self, receive: Receive) -> tuple[Watch, bool]:
        # One task: the client's disconnect cancels the watch's scope (see _disconnect.py).
        # Its start and stop are called, not "async with": the bound __aexit__ would stay
        # alive while parked, and so would contextlib.suppress's object (64 and 192 bytes).
        # Returns the watch, and whether it keeps time (keep-alives, the credentials' end).
        watch = DisconnectWatch(receive, self)
        timed = self.keep_alive_interval is not None or self.expires_at is not None
        self.subscriber.watch(await watch.start(keep_alive=timed))
        return watch, timed

    def _deadlines(self, waiter: Waiter) -> tuple[float, float]:
        # On the loop's clock: the credentials' end (auth; math.inf: none), and the first
        # keep-alive's (or that end, if sooner).
        interval = self.keep_alive_interval
        expires_at = self.expires_at
        end = math.inf if expires_at is None else waiter.time() + expires_at - time.time()
        return end, min(end, math.inf if interval is None else waiter.time() + interval)

    async def _end(self, send: Send, failure: Exception | None) -> None:
        # The stream-error event of the server's own failure, if any, then the response's end.
        if failure is not None:
            self.failed = True  # metrics
            await self.send_stream_error(send, failure)
        # Servers report the end of the response to the app as http.disconnect,
        # from inside this send (hypercorn); cancelling it then would cut the
        # server's own bookkeeping short (the connection would never go idle).
        self.completing = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _begin(self, send: Send, last_event_id: str | None, opening: bytes) -> Exception | None:
        # The headers, the opening and the replay. Returns the server's own failure
        # (then no live events follow), if any; raises OSError (the client is gone).
        failure: Exception | None = None
        entries: list[HistoryEntry] = []
        try:
            entries, reset = self.start(last_event_id)  # no await since subscribing
            if reset:
                opening += self.reset_event()
        except Exception as exc:
            failure = exc
        await send({"type": "http.response.start", "status": 200, "headers": list(STREAM_HEADERS)})
        await self._send_held(send, opening)
        if failure is None:
            try:
                self.template.replayed += len(entries)  # metrics
                await self._write_entries(send, entries, count=False)
            except OSError:
                raise
            except Exception as exc:
                failure = exc
        return failure

    async def _catch_up(self, send: Send) -> None:
        # Left behind (its queue stayed full and it took nothing): publishes
        # skipped it. Its queue is written now; what it missed is in history.
        self.template.caught_up += 1  # metrics
        if not self.hub.rejoin(self.subscriber):
            return
        missed, complete = replay(self.history, self.positions)
        if not complete:  # history no longer has every event it missed
            self.positions = self._current()
            await self._send_held(send, self.reset_event())
            return
        await self._write_entries(send, missed)

    async def _write_entries(self, send: Send, entries: list[HistoryEntry], *, count: bool = True) -> None:
        for start in range(0, len(entries), 256):
            body = self._render(entries[start : start + 256])
            if body:
                await self._send_held(send, body)
                self.template.written_bytes += len(body)  # metrics
            if count:
                self.hub.count_delivered(len(entries[start : start + 256]))

    async def _expire(self, send: Send) -> None:
        # The credentials ended: say so; the response then ends (the caller breaks out).
        await self._send_held(send, STREAM_EXPIRED)

    async def _send_held(self, send: Send, body: bytes) -> None:
        # A body the client may hold up (it does not read): publishes do not wait for a
        # subscriber not yet proven to read while its connection is in it (see _core). The
        # live loop's send does the same inline.
        subscriber = self.subscriber
        subscriber.sending = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            subscriber.sending = False

    @staticmethod
    async def send_stream_error(send: Send, exc: BaseException) -> None:
        """Report a server-side failure to the client (its browser then stops reconnecting)."""
        logger.error("event stream ended on a server error", exc_info=exc)
        await send({"type": "http.response.body", "body": STREAM_ERROR, "more_body": True})
