"""A broker on a Redis-protocol engine (Valkey, Redis), through valkey-glide.

Keys, under ``key_prefix`` (default ``eventstream:``)::

    {prefix}epoch        random, set once (SET NX): the prefix of every assigned id
    {prefix}seq:{ch}     the channel's sequence number (INCR per publish; never expires)
    {prefix}last:{ch}    the id of the channel's newest event (GRIP's prev-id)
    {prefix}h:{ch}       the channel's history: a stream, entry ids "{seq}-0",
                         capped by count (MAXLEN ~) and age (oldest entries
                         trimmed on publish; the key expires max_age after the
                         last publish)
    {prefix}ch:{ch}      the pub/sub channel that carries each entry

One Lua script per publish numbers, keeps and publishes the event atomically,
so every process sees one order per channel, and ids ``{epoch}-{seq}`` are the
same everywhere and survive app restarts.

Each process subscribes once, to the pattern ``{prefix}ch:*``: it receives
every channel's traffic (simple and free of subscribe/unsubscribe races; it
stops scaling when one process cannot read the whole publish rate). Each
entry's sequence number tells whether the process missed one (the feed was
interrupted); it then reads the missing ones from the stream before
delivering newer ones, or, where history is gone, ends the affected streams
so that their clients reconnect and get ``stream-reset``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._broker import Broker
from ._broker_wire import EngineEntry, decode_entry
from ._exceptions import BrokerError
from ._history import HistoryEntry, HistoryStore
from ._redis_url import RedisAddress, parse_redis_url
from ._shared_history import SharedHistory
from ._sse import ServerSentEvent

if TYPE_CHECKING:
    from glide import GlideClient, GlideClientConfiguration

    from ._hub import Hub

__all__ = ["RedisBroker"]

logger = logging.getLogger("eventstream")

# KEYS: epoch, seq, last-id, stream. ARGV: candidate epoch, pub/sub channel, event fields,
# has-own-id flag, own id, max entries, max age (ms), token, retry flag.
_PUBLISH = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
if ARGV[9] == '1' then
  local recent = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 512)
  for _, item in ipairs(recent) do
    local fields = item[2]
    for i = 1, #fields, 2 do
      if fields[i] == 'k' and fields[i + 1] == ARGV[8] then
        return {epoch, string.match(item[1], '^(%d+)'), 1}
      end
    end
  end
end
local seq = redis.call('INCR', KEYS[2])
local id = epoch .. '-' .. seq
if ARGV[4] == '1' then id = ARGV[5] end
local prev = redis.call('GET', KEYS[3]) or (epoch .. '-0')
redis.call('SET', KEYS[3], id)
local now = redis.call('TIME')
local ms = string.format('%.0f', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local message = epoch .. '\\n' .. seq .. '\\n' .. id .. '\\n' .. prev .. '\\n' .. ms .. '\\n' .. ARGV[3]
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], seq .. '-0', 'm', message, 't', ms, 'k', ARGV[8])
local cutoff = tonumber(ms) - tonumber(ARGV[7])
local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 8)
local keep = nil
for _, item in ipairs(oldest) do
  local fields = item[2]
  local t = nil
  for i = 1, #fields, 2 do
    if fields[i] == 't' then t = tonumber(fields[i + 1]) end
  end
  if t == nil or t >= cutoff then
    keep = item[1]
    break
  end
end
if keep == nil and #oldest > 0 then
  keep = (tonumber(string.match(oldest[#oldest][1], '^(%d+)')) + 1) .. '-0'
end
if keep ~= nil then redis.call('XTRIM', KEYS[4], 'MINID', keep) end
redis.call('PEXPIRE', KEYS[4], ARGV[7])
redis.call('PUBLISH', ARGV[2], message)
return {epoch, tostring(seq), 0}
"""

# KEYS: epoch, seq, stream. ARGV: after (-1: the newest entries), count.
# Returns {epoch or '', newest seq, {message, ...} oldest first}.
_READ = """
local epoch = redis.call('GET', KEYS[1]) or ''
local seq = redis.call('GET', KEYS[2]) or '0'
local items
if ARGV[1] == '-1' then
  items = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
  local reversed = {}
  for i = #items, 1, -1 do reversed[#reversed + 1] = items[i] end
  items = reversed
else
  items = redis.call('XRANGE', KEYS[3], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
end
local messages = {}
for _, item in ipairs(items) do
  local fields = item[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' then messages[#messages + 1] = fields[i + 1] end
  end
end
return {epoch, seq, messages}
"""

_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "READONLY", "CLUSTERDOWN")


def _glide() -> Any:
    try:
        import glide
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("the Redis broker needs valkey-glide: pip install 'eventstream[valkey]'") from None
    return glide


class RedisBroker(Broker):
    """A broker on a Valkey or Redis server, shared by every process that uses the same keys.

    Args:
        url: ``redis://[user:password@]host[:port][/db]``, or ``rediss://``
            for TLS. Either this or ``configuration``.
        configuration: A ``glide.GlideClientConfiguration`` you built (TLS
            settings, credentials, timeouts); the broker makes its two
            clients (commands, and the pub/sub feed) from it.
        key_prefix: Prefix of every key and pub/sub channel; streams that
            share a prefix (and an engine) share their channels.
        max_events: History kept per channel (the engine keeps at least this
            many, trimming in whole blocks; each process keeps exactly this many).
        max_bytes: Encoded bytes of history each process keeps per channel
            (the engine has no byte cap for streams: it keeps count and age).
        max_age: Seconds an event is kept in history.
        request_timeout: Seconds one request to the engine may take.
        publish_timeout: Seconds a publish keeps retrying while the engine
            cannot be reached, before raising :class:`BrokerError`.
        check_interval: Seconds between checks that the process has every
            event of the channels it serves (they catch a feed that was cut
            while a channel went quiet).

    Raises:
        ValueError: the URL is malformed, both or neither of ``url`` and
            ``configuration`` were given, or a limit is out of range.
        ImportError: valkey-glide is not installed.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        configuration: GlideClientConfiguration | None = None,
        key_prefix: str = "eventstream:",
        max_events: int = 256,
        max_bytes: int = 256 * 1024,
        max_age: float = 300.0,
        request_timeout: float = 2.0,
        publish_timeout: float = 10.0,
        check_interval: float = 1.0,
    ) -> None:
        if (url is None) == (configuration is None):
            raise ValueError("give the engine's url or a glide configuration (one of them)")
        self._address: RedisAddress | None = parse_redis_url(url) if url is not None else None
        _glide()
        self._configuration = configuration
        if not isinstance(key_prefix, str) or any(c in key_prefix for c in "*?[]\\"):
            raise ValueError(f"key_prefix must be a str without glob characters, not {key_prefix!r}")
        for name, value in (("max_events", max_events), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        for name, number in (
            ("max_age", max_age),
            ("request_timeout", request_timeout),
            ("publish_timeout", publish_timeout),
            ("check_interval", check_interval),
        ):
            if not number > 0 or math.isinf(number):
                raise ValueError(f"{name} must be a positive number of seconds, not {number!r}")
        self.key_prefix = key_prefix
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.request_timeout = request_timeout
        self.publish_timeout = publish_timeout
        self.check_interval = check_interval
        self._hub: Hub | None = None
        self._client: GlideClient | None = None
        self._feed: GlideClient | None = None
        self._history: SharedHistory | None = None
        self._epoch = ""
        self._loaded: set[str] = set()
        self._lock = anyio.Lock()
        self._exit: contextlib.AsyncExitStack | None = None
        self._publish_script: Any = None
        self._read_script: Any = None

    # -- the interface ---------------------------------------------------------

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def history(self) -> HistoryStore:
        if self._history is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        return self._history

    @property
    def description(self) -> str:
        if self._address is not None:
            return self._address.display
        assert self._configuration is not None
        hosts = ", ".join(f"{a.host}:{a.port}" for a in self._configuration.addresses)
        return f"redis://{hosts}"

    @property
    def running(self) -> bool:
        return self._client is not None

    def bind(self, hub: Hub) -> None:
        if self._exit is not None:
            raise RuntimeError("bind the hub before entering the broker")
        self._hub = hub

    def _key(self, kind: str, channel: str) -> str:
        return f"{self.key_prefix}{kind}:{channel}"

    def _config(self, *, feed: bool) -> GlideClientConfiguration:
        glide = _glide()
        config_class = glide.GlideClientConfiguration
        timeout_ms = max(1, round(self.request_timeout * 1000))
        subscriptions = None
        if feed:
            subscriptions = config_class.PubSubSubscriptions(
                {config_class.PubSubChannelModes.Pattern: {f"{self.key_prefix}ch:*"}}, None, None
            )
        if self._configuration is not None:
            base = self._configuration
            config: GlideClientConfiguration = config_class(
                addresses=base.addresses,
                use_tls=base.use_tls,
                credentials=base.credentials,
                request_timeout=base.request_timeout or timeout_ms,
                reconnect_strategy=base.reconnect_strategy,
                database_id=base.database_id,
                client_name=base.client_name,
                advanced_config=base.advanced_config,
                pubsub_subscriptions=subscriptions,
            )
            return config
        address = self._address
        assert address is not None
        credentials = None
        if address.password is not None or address.username is not None:
            credentials = glide.ServerCredentials(password=address.password, username=address.username)
        result: GlideClientConfiguration = config_class(
            [glide.NodeAddress(address.host, address.port)],
            use_tls=address.tls,
            credentials=credentials,
            request_timeout=timeout_ms,
            database_id=address.database or None,
            reconnect_strategy=glide.BackoffStrategy(num_of_retries=6, factor=50, exponent_base=2),
            pubsub_subscriptions=subscriptions,
        )
        return result

    async def __aenter__(self) -> RedisBroker:
        """Connect to the engine, read (or set) its epoch and start the feed.

        Raises:
            BrokerError: the engine cannot be reached (the message names it and the reason).
            RuntimeError: the broker is already running.
        """
        if self._exit is not None:
            raise RuntimeError("the broker is already running")
        glide = _glide()
        self._publish_script = glide.Script(_PUBLISH)
        self._read_script = glide.Script(_READ)
        async with contextlib.AsyncExitStack() as stack:
            client = await self._connect(feed=False)
            stack.push_async_callback(client.close)
            candidate = os.urandom(4).hex()
            try:
                await client.custom_command(["SET", f"{self.key_prefix}epoch", candidate, "NX"])
                epoch = await client.custom_command(["GET", f"{self.key_prefix}epoch"])
            except glide.GlideError as exc:
                raise BrokerError(self.description, f"{type(exc).__name__}: {exc}") from exc
            self._epoch = bytes(epoch).decode("ascii")
            self._history = SharedHistory(
                self._epoch, max_events=self.max_events, max_bytes=self.max_bytes, max_age=self.max_age
            )
            self._loaded = set()
            if self._hub is not None:
                feed = await self._connect(feed=True)
                stack.push_async_callback(feed.close)
                self._feed = feed
                tg = await stack.enter_async_context(anyio.create_task_group())
                stack.callback(tg.cancel_scope.cancel)
                tg.start_soon(self._read_feed, feed)
                tg.start_soon(self._check_periodically)
            self._client = client
            stack.callback(self._stopped)
            self._exit = stack.pop_all()
        return self

    def _stopped(self) -> None:
        self._client = self._feed = None

    async def _connect(self, *, feed: bool) -> GlideClient:
        glide = _glide()
        try:
            with anyio.fail_after(self.publish_timeout):
                client: GlideClient = await glide.GlideClient.create(self._config(feed=feed))
        except TimeoutError:
            raise BrokerError(self.description, "connecting timed out") from None
        except glide.GlideError as exc:
            raise BrokerError(self.description, f"cannot connect: {exc}".strip()) from exc
        return client

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the feed and close the connections."""
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()

    # -- publishing ------------------------------------------------------------

    async def publish(self, channel: str, event: ServerSentEvent) -> str:
        """Have the engine number, keep and fan out ``event``; return its id.

        Connection failures and an engine that is loading or busy are retried
        with capped, jittered backoff for ``publish_timeout`` seconds. A retry
        first looks for its event in the channel's recent history, so an
        event whose first attempt did reach the engine is not published twice.

        Raises:
            BrokerError: the engine refused the event (a script error, wrong
                credentials) or could not be reached within ``publish_timeout``.
            RuntimeError: the broker is not running.

        Cancellation: the event may or may not have been published.
        """
        return await self._publish(channel, event, self._key("ch", channel))

    async def _publish(self, channel: str, event: ServerSentEvent, feed_channel: str) -> str:
        client = self._client
        if client is None:
            raise RuntimeError("the broker is not running: enter it (async with) first")
        glide = _glide()
        token = os.urandom(8).hex()
        own_id = event.id
        keys = [
            f"{self.key_prefix}epoch",
            self._key("seq", channel),
            self._key("last", channel),
            self._key("h", channel),
        ]
        body = event._body
        deadline = time.monotonic() + self.publish_timeout
        attempt = 0
        while True:
            args: list[str | bytes] = [
                os.urandom(4).hex(),
                feed_channel,
                body,
                "0" if own_id is None else "1",
                own_id or "",
                str(self.max_events),
                str(max(1, round(self.max_age * 1000))),
                token,
                "1" if attempt else "0",
            ]
            attempt += 1
            try:
                result = await client.invoke_script(self._publish_script, keys=keys, args=args)
            except glide.GlideError as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if not _transient(exc, glide):
                    raise BrokerError(self.description, reason, attempt) from exc
                if time.monotonic() >= deadline:
                    raise BrokerError(self.description, reason, attempt) from exc
                delay = min(1.0, 0.02 * 2 ** min(attempt, 10)) * (0.5 + random.random() / 2)
                await anyio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                continue
            epoch, seq, _duplicate = result
            epoch_text = bytes(epoch).decode("ascii")
            return own_id if own_id is not None else f"{epoch_text}-{int(seq)}"

    # -- receiving -------------------------------------------------------------

    async def _read_feed(self, feed: GlideClient) -> None:
        prefix = f"{self.key_prefix}ch:".encode()
        while True:
            message = await feed.get_pubsub_message()
            channel_name = bytes(message.channel)
            if not channel_name.startswith(prefix):
                continue
            try:
                channel = channel_name[len(prefix) :].decode("utf-8")
                entry = decode_entry(bytes(message.message))
            except ValueError as exc:
                logger.warning(
                    "ignoring a message on %r that is not an eventstream entry: %s", channel_name, exc
                )
                continue
            async with self._lock:
                await self._receive(channel, entry)

    async def _receive(self, channel: str, entry: EngineEntry) -> None:
        history = self._history
        assert history is not None
        if entry.epoch != self._epoch:
            await self._new_epoch(entry.epoch)
        known = history.last_seq.get(channel)
        if known is not None and entry.seq <= known:
            return  # already delivered (filled from history, or loaded)
        if known is not None and entry.seq > known + 1:
            await self._catch_up(channel, known)
            known = history.last_seq.get(channel)
            if known is not None and entry.seq <= known:
                return
        await self._deliver(channel, entry.to_history(channel, time.monotonic()))

    async def _deliver(self, channel: str, entry: HistoryEntry) -> None:
        history = self._history
        assert history is not None
        assert self._hub is not None
        # Kept and queued with no await in between: a connection that
        # subscribes meanwhile finds it either in history or in its buffer.
        history.append(entry)
        await self._hub.publish(channel, entry)

    async def _new_epoch(self, epoch: str) -> None:
        # The engine lost its data (a restart without persistence, a flush):
        # every position held by clients is meaningless now.
        logger.error(
            "broker engine %s has a new epoch (%s, was %s): its history was lost; "
            "every open stream ends and its client gets stream-reset when it reconnects",
            self.description, epoch, self._epoch,
        )  # fmt: skip
        self._epoch = epoch
        assert self._history is not None
        self._history.clear(epoch)
        self._loaded.clear()
        hub = self._hub
        if hub is not None:
            for channel in list(hub.statistics().channels):
                self._end_streams(channel)

    def _end_streams(self, channel: str) -> None:
        hub = self._hub
        assert hub is not None
        # Ending a stream (after what it holds is written) makes its client
        # reconnect with its last id; history then tells it to reset.
        for subscriber in list(hub._channels.get(channel, ())):
            hub.unsubscribe(subscriber)

    async def _read(self, channel: str, after: int, count: int) -> tuple[str, int, list[EngineEntry]]:
        client = self._client
        glide = _glide()
        if client is None:
            raise BrokerError(self.description, "not connected")
        keys = [f"{self.key_prefix}epoch", self._key("seq", channel), self._key("h", channel)]
        try:
            epoch, seq, messages = await client.invoke_script(
                self._read_script, keys=keys, args=[str(after), str(count)]
            )
        except glide.GlideError as exc:
            raise BrokerError(self.description, f"{type(exc).__name__}: {exc}") from exc
        entries = []
        for message in messages:
            try:
                entries.append(decode_entry(bytes(message)))
            except ValueError as exc:
                logger.warning("ignoring a history entry of %r: %s", channel, exc)
        return bytes(epoch).decode("ascii"), int(seq), entries

    def _as_history(self, channel: str, entry: EngineEntry) -> HistoryEntry:
        # Place the entry on this process's clock by its age on the engine's.
        age = max(0.0, time.time() - entry.published_ms / 1000)
        return entry.to_history(channel, time.monotonic() - age)

    async def _catch_up(self, channel: str, known: int) -> None:
        """Deliver what the engine has after ``known``; end the channel's streams where it has not."""
        history = self._history
        assert history is not None
        while True:
            epoch, newest, entries = await self._read(channel, known, self.max_events)
            if epoch and epoch != self._epoch:
                await self._new_epoch(epoch)
                return
            if newest <= known:
                return
            if not entries or entries[0].seq != known + 1:
                logger.warning(
                    "broker: events %d..%d of channel %r are no longer in the engine's history; "
                    "its streams end and their clients get stream-reset",
                    known + 1, (entries[0].seq - 1) if entries else newest, channel,
                )  # fmt: skip
                history.replace(channel, [], entries[0].seq - 1 if entries else newest)
                if self._hub is not None:
                    self._end_streams(channel)
                if not entries:
                    return
            for entry in entries:
                if entry.seq == history.last_seq.get(channel, 0) + 1:
                    await self._deliver(channel, self._as_history(channel, entry))
            known = history.last_seq.get(channel, 0)
            if known >= newest:
                return

    async def prepare(self, channels: Sequence[str]) -> None:
        """Load the history of channels seen for the first time, and catch up on the others.

        Raises:
            BrokerError: the engine could not be reached and a channel was never loaded.
            RuntimeError: the broker is not running.
        """
        if self._client is None:
            raise RuntimeError("the broker is not running: enter the stream (async with) first")
        async with self._lock:
            for channel in channels:
                try:
                    await self._prepare_one(channel)
                except BrokerError:
                    if channel not in self._loaded:
                        raise
                    # Serve from what this process has; the periodic check fills in later.

    async def _prepare_one(self, channel: str) -> None:
        history = self._history
        assert history is not None
        if channel in self._loaded:
            await self._catch_up(channel, history.last_seq.get(channel, 0))
            return
        epoch, newest, entries = await self._read(channel, -1, self.max_events)
        if epoch and epoch != self._epoch:
            await self._new_epoch(epoch)
        run: list[HistoryEntry] = []
        for entry in entries:
            if run and entry.seq != run[-1].seq + 1:
                run = []
            run.append(self._as_history(channel, entry))
        known = history.last_seq.get(channel, 0)
        if newest > known:
            # The feed has not brought these yet: queue them for current
            # subscribers too, in order; the feed skips them later.
            fresh = [loaded for loaded in run if loaded.seq > known]
            if fresh and known and fresh[0].seq == known + 1 and self._hub is not None:
                for loaded in fresh:
                    await self._deliver(channel, loaded)
        history.replace(channel, run, newest)
        self._loaded.add(channel)

    async def _check_periodically(self) -> None:
        while True:
            await anyio.sleep(self.check_interval)
            hub = self._hub
            if hub is None:
                continue
            channels = [name for name in hub.statistics().channels if name in self._loaded]
            try:
                await self._check(channels)
            except BrokerError as exc:
                logger.warning("broker: cannot check for missed events: %s", exc)

    async def _check(self, channels: list[str]) -> None:
        client = self._client
        if client is None or not channels:
            return
        glide = _glide()
        for start in range(0, len(channels), 256):
            chunk = channels[start : start + 256]
            keys = [f"{self.key_prefix}epoch", *(self._key("seq", name) for name in chunk)]
            try:
                values = await client.custom_command(["MGET", *keys])
            except glide.GlideError as exc:
                raise BrokerError(self.description, f"{type(exc).__name__}: {exc}") from exc
            async with self._lock:
                history = self._history
                assert history is not None
                epoch = values[0]
                if epoch is not None and bytes(epoch).decode("ascii") != self._epoch:
                    await self._new_epoch(bytes(epoch).decode("ascii"))
                    return
                for name, value in zip(chunk, values[1:], strict=True):
                    newest = int(value) if value is not None else 0
                    known = history.last_seq.get(name, 0)
                    if newest > known:
                        await self._catch_up(name, known)


def _transient(exc: Exception, glide: Any) -> bool:
    if isinstance(exc, glide.ConnectionError | glide.TimeoutError):
        return True
    if isinstance(exc, glide.ClosingError):
        return False
    return any(word in str(exc) for word in _TRANSIENT_REPLIES)
