"""The delivery core: channels and subscribers, what is kept, and who numbers and fans out.

Three rooms, each imported only through this package:

- The hub (``_hub.py``, with ``_subscriber.py``, ``_done.py`` and the presence
  table, ``_presence.py``): channels, subscribers and their bounded buffers.
- History (``_store.py``: the entries, the store interface, the in-process
  store) and positions in it (``_position.py``: the one reader and writer of
  the ids a client resumes from, and the replay merge).
- Brokers (``_broker.py``: the interface; ``_local.py``: the in-process
  broker), where published events are numbered, kept and fanned out. The Redis
  broker is a plug-in of its own (``_redis``).

The core imports nothing above it (the request path, GRIP, the facade), at run
time.

The hub (``_hub.py``) delivers; each subscriber (``_subscriber.py``) owns a
bounded queue of published entries (the event encoded once, shared by every
subscriber) and one reusable ``Waiter`` (``_backends``) that its connection
sleeps on. A publish appends
the entry to the queue of every live subscriber of its channel and wakes the
connections that wait; nothing is created per event or per wait. What happens
to a subscriber whose queue is full is the slow-consumer policy
(docs/discussion/backpressure.md tells why):

``disconnect`` (default)
    The publish waits for full subscribers, all together, *as long as they
    make progress* (their connection takes what is queued). One that takes
    nothing for ``stall_after`` seconds (``min(send_timeout, 0.1)``) is *left
    behind*: it leaves its channels' live sets, so publishes neither wait for
    it nor visit it (it still counts as subscribed). Once its connection has
    written what it holds, it catches up from history if anything was
    published on its channels since (``stream-reset`` if history no longer
    has it all) and rejoins. Its connection is cancelled ``send_timeout``
    after its last progress, published or not (its disconnect watch then
    drops the subscription, even from a send the server shields).

    Until a subscriber is *proven* to read, publishes do not wait for it
    while its connection is held in a send (a client that never reads holds
    it there for good): it holds more entries instead, up to ``stall_after``
    seconds' worth or ``16 * max(buffer_size, 32)``, then it is left behind,
    keeping the oldest ``buffer_size`` (the rest comes from history: a stream
    of non-reading clients must not each keep events alive that history has
    let go). Unless that send ends, its connection is cancelled
    ``send_timeout`` after its queue was first found full. It is proven once
    its connection takes from a queue that grew well past ``buffer_size``
    while a send held it (a transport that takes a few writes before it fills
    up proves nothing). Publishes wait for proven subscribers, and for any
    whose connection is not in a send (it has not run since it was woken).
``drop-oldest``
    The oldest event in the full buffer is dropped to make room, and the
    client gets ``stream-reset`` before its next events. Publishers never wait.
    A connection that takes nothing for ``send_timeout`` after its buffer was
    found full is cancelled (and counted in ``subscribers_dropped``).
``block``
    Pure backpressure: the publish waits, without deadline, until every
    subscriber has room. One stalled client stalls the channel.

Cancellation of a waiting publish leaves its entry queued for the subscribers
it was offered to (the queue may then hold a few entries beyond
``buffer_size``: at most one per publish in flight).
"""

from ._broker import Broker, Numbered, PublishedEvent, unkept_entry
from ._hub import Hub, SlowConsumerPolicy
from ._local import LocalBroker
from ._position import (
    MAX_ID,
    assigned_id,
    channels_digest,
    combined_id,
    combined_prefix,
    origin_id,
    own_seq,
    replay,
    resume_positions,
)
from ._presence import (
    PRESENCE_PREFIX,
    PresenceMember,
    PresenceTable,
    parse_member_value,
    presence_channel,
    presence_event,
    presence_members,
    presence_selection,
)
from ._store import _ENTRY_OVERHEAD, HistoryEntry, HistoryStore, MemoryHistory, new_entry
from ._subscriber import Channel, EventStreamStatistics, Subscriber, clock

__all__ = [
    "MAX_ID",
    "PRESENCE_PREFIX",
    "_ENTRY_OVERHEAD",
    "Broker",
    "Channel",
    "EventStreamStatistics",
    "HistoryEntry",
    "HistoryStore",
    "Hub",
    "LocalBroker",
    "MemoryHistory",
    "Numbered",
    "PresenceMember",
    "PresenceTable",
    "PublishedEvent",
    "SlowConsumerPolicy",
    "Subscriber",
    "assigned_id",
    "channels_digest",
    "clock",
    "combined_id",
    "combined_prefix",
    "new_entry",
    "origin_id",
    "own_seq",
    "parse_member_value",
    "presence_channel",
    "presence_event",
    "presence_members",
    "presence_selection",
    "replay",
    "resume_positions",
    "unkept_entry",
]
