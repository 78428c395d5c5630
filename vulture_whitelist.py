"""Names the dead-code scan (``vulture``, run by ``nox -s lint``) finds unused in src, and why they stay.

Vulture reads this file beside src and never runs it: each line below uses a
name, so the scan stops reporting it. Add a name here only with the reason it
is used where vulture cannot see (the apps, a framework, a protocol); code that
nothing uses is deleted instead.
"""

from eventstream import (
    BrokerStatistics,
    ChannelWriter,
    EventStream,
    EventStreamStatistics,
    Publisher,
    SubscriberLag,
)
from eventstream._backends._pushed import _AsyncioPushed, _Protocol
from eventstream._backends._trio import _TrioWaiter
from eventstream._lifecycle._loop import _Call
from eventstream.auth import JWKSFetcher, JWTAuthorizer
from eventstream.client import EventSource
from eventstream.prometheus import EventStreamCollector
from eventstream.testing import StreamResponse

# The public API: apps call and read these; the library itself does not.
EventStreamStatistics.subscribers
EventStreamStatistics.events_published
EventStreamStatistics.events_delivered
EventStreamStatistics.subscribers_dropped
EventStreamStatistics.events_dropped
EventStreamStatistics.slowest
EventStreamStatistics.grip_streams_opened
BrokerStatistics.feed_connected
BrokerStatistics.feed_whole
SubscriberLag.seconds_behind
EventStream.wait_subscribers
EventStream.close_on_signals
EventStream.publish_event_threadsafe
EventStream.get_channel_publisher
EventStream.channel_writer
Publisher.publish_event_sync
ChannelWriter.pipe
EventSource.connections
JWTAuthorizer.mint_ticket
JWKSFetcher.fetches
StreamResponse.body_messages
StreamResponse.receive_event

# prometheus-client's registry calls a collector's describe() when it is registered.
EventStreamCollector.describe

# asyncio reads a task's _log_destroy_pending (false: no "destroyed but pending" log).
_Call.task._log_destroy_pending

# trio calls a wait_task_rescheduled abort function with raise_cancel (unused: the wait just ends).
_TrioWaiter._abort.raise_cancel

# asyncio calls a protocol's callbacks; anyio's ByteStream requires send_eof.
_Protocol.connection_made
_Protocol.data_received
_Protocol.eof_received
_Protocol.connection_lost
_Protocol.pause_writing
_Protocol.resume_writing
_AsyncioPushed.send_eof
