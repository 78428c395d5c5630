"""Where the broker's data lives on the engine: the names of its keys and feed channels (no I/O).

Keys, under ``key_prefix`` (default ``eventstream:``) and a ``|`` (which no
prefix holds, so that no prefix's keys or channels are another prefix's,
whichever extends which). One engine (:class:`EngineLayout`)::

    {prefix}|state       a hash: 'epoch', random, set once (HSETNX): the prefix
                         of every assigned id; and per channel 'seq:{ch}', its
                         sequence number (HINCRBY per publish). In one key, so
                         no channel's number is lost (evicted, deleted) while
                         the epoch stays: ids are never issued twice
    {prefix}|last:{ch}   the id of the channel's newest event (GRIP's prev-id), after
                         where it ends in the running sum of sizes, a lower
                         bound of where the oldest kept event starts, and its
                         sequence number (numbering goes on after it, or after
                         the history's newest, if the state lost the channel's)
    {prefix}|h:{ch}      the channel's history: a stream, entry ids "{seq}-0",
                         capped by count (MAXLEN ~), bytes (oldest entries
                         trimmed on publish to max_bytes) and age (oldest
                         entries trimmed on publish; the key expires max_age
                         after the last publish)
    {prefix}|ch:{db}:{ch}  the pub/sub channel that carries each entry (pub/sub
                         is server-wide: the database number keeps apps on
                         other databases of the engine out)
    {prefix}|pr:...     each process's subscriber counts and presence, renewed
                         by its heartbeat (see _presence.py)
    {prefix}|batch:{tok} a batch's reply, kept until acknowledged (for a retry
                         whose reply was lost), at most publish_timeout +
                         request_timeout + 1 s
    {prefix}|ticket:{n}  a one-time ticket already used (see _auth)

A cluster (:class:`ClusterLayout`) puts each channel's keys and its sharded
pub/sub channel in one slot, under a hash tag of its own: ``{T}``, 16 hex
digits of a digest of the channel's name (never a ``}``, whatever the name
holds, so the tag is always exactly that). There is no state hash (a script
may touch one slot only): the channel's sequence number is the one its
last-id key holds, and its kept batch replies are under the tag of the
batch's first channel. Counts and presence share one tag, so their scripts stay in one slot.
A prefix's ``|`` still ends it in every key, after the tag.
"""

from __future__ import annotations

import binascii
import functools
import hashlib

__all__ = ["CLUSTER_EPOCH", "ClusterLayout", "EngineLayout"]

#: The epoch of every id assigned on a cluster: fixed, since a channel that lost its keys
#: numbers on from the engine's clock (see ``_scripts.py``), never from 1 again.
CLUSTER_EPOCH = "c"
#: Slots of a Redis Cluster.
_SLOTS = 16384


class EngineLayout:
    """The keys of one engine (database ``database``) under ``key_prefix``."""

    cluster = False

    def __init__(self, key_prefix: str, database: int) -> None:
        #: The start of every key: the prefix and its ``|``.
        self.keys = keys = f"{key_prefix}|"
        self.state = f"{keys}state"
        self.feed_prefix = f"{keys}ch:{database}:"
        self._feed_prefix = self.feed_prefix.encode()
        #: The pattern of every feed channel (the prefix holds no glob character).
        self.pattern = self._feed_prefix + b"*"
        #: The start of the keys of counts and presence.
        self.presence_base = f"{keys}pr:"

    def publish_keys(self, channel: str) -> list[str]:
        """The keys the publish script takes per channel (see ``_scripts.py``).

        On one engine the first names the channel's number, a field of the
        state hash (its name after the ``|``: ``seq:{ch}``), not a key.
        """
        return [f"{self.keys}seq:{channel}", self.last(channel), self.history(channel)]

    def last(self, channel: str) -> str:
        return f"{self.keys}last:{channel}"

    def history(self, channel: str) -> str:
        return f"{self.keys}h:{channel}"

    def feed(self, channel: str) -> bytes:
        """The channel's pub/sub channel."""
        return self._feed_prefix + channel.encode()

    def channel_of(self, name: bytes) -> str | None:
        """The channel whose pub/sub channel is ``name``; None if it is not one of this layout's.

        Raises:
            UnicodeDecodeError: the name is not UTF-8.
        """
        prefix = self._feed_prefix
        if not name.startswith(prefix):
            return None
        return name[len(prefix) :].decode("utf-8")

    def batch(self, token: str, channel: str) -> str:
        """Where a batch's reply is kept (``channel``: its first)."""
        return f"{self.keys}batch:{token}"

    def ticket(self, nonce: str) -> str:
        """Where a used one-time ticket is recorded (one key: any slot)."""
        return f"{self.keys}ticket:{nonce}"

    def slot(self, channel: str) -> int:
        """The slot of ``channel``'s keys (0: one engine)."""
        return 0


class ClusterLayout(EngineLayout):
    """The keys on a Redis Cluster under ``key_prefix``: each channel's in a slot of its own tag."""

    cluster = True

    def __init__(self, key_prefix: str) -> None:
        super().__init__(key_prefix, 0)
        self._channel_part = f"{self.keys}ch:".encode()
        self.presence_base = "{" + _digest(f"presence|{key_prefix}") + "}" + f"{self.keys}pr:"

    @staticmethod
    @functools.lru_cache(maxsize=65536)
    def tag(channel: str) -> str:
        """``{T}``: the hash tag of the channel's keys (the recent ones are remembered)."""
        return "{" + _digest(channel) + "}"

    def publish_keys(self, channel: str) -> list[str]:
        return [self.last(channel), self.history(channel), self.feed(channel).decode()]

    def last(self, channel: str) -> str:
        return f"{self.tag(channel)}{self.keys}last:{channel}"

    def history(self, channel: str) -> str:
        return f"{self.tag(channel)}{self.keys}h:{channel}"

    def feed(self, channel: str) -> bytes:
        return f"{self.tag(channel)}{self.keys}ch:{channel}".encode()

    def channel_of(self, name: bytes) -> str | None:
        part = self._channel_part
        start = _TAG_LENGTH
        if name[start : start + len(part)] != part:
            return None
        channel = name[start + len(part) :].decode("utf-8")
        return channel if name[:start] == self.tag(channel).encode() else None

    def batch(self, token: str, channel: str) -> str:
        return f"{self.tag(channel)}{self.keys}batch:{token}"

    @staticmethod
    @functools.lru_cache(maxsize=65536)
    def slot(channel: str) -> int:
        """The cluster slot of ``channel``'s keys (CRC16 of its tag, as the engine computes it)."""
        return binascii.crc_hqx(_digest(channel).encode(), 0) % _SLOTS


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


#: ``{`` + 16 hex digits + ``}``.
_TAG_LENGTH = 18
