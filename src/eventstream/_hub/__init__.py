"""The fan-out core: channels, subscribers and their bounded buffers.

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

from ._hub import Hub, SlowConsumerPolicy
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
from ._subscriber import Channel, EventStreamStatistics, Subscriber, clock

__all__ = [
    "Channel",
    "EventStreamStatistics",
    "Hub",
    "PresenceMember",
    "PresenceTable",
    "PRESENCE_PREFIX",
    "parse_member_value",
    "presence_channel",
    "presence_event",
    "presence_members",
    "presence_selection",
    "SlowConsumerPolicy",
    "Subscriber",
    "clock",
]
