"""Feed messages read in another event loop's thread reach the stream (run by tests/e2e/test_redis_feed.py).

A process of its own: valkey-glide reads every client's replies, and the feed's
messages, in the thread of the first event loop that used it, process-wide.
Here that is a blocking Publisher's thread, so the stream's feed inbox gets
each message from that thread and hands it over to the stream's event loop.

    python tests/support/feed_handover.py URL KEY_PREFIX asyncio|trio
"""

from __future__ import annotations

import sys
import threading

import anyio

from eventstream import EventStream, Publisher, RedisBroker
from eventstream._redis._feed import FeedInbox
from eventstream.testing import open_stream

pushed_from: set[int] = set()
original_push = FeedInbox.push


def push(self: FeedInbox, message: object, context: object = None) -> None:
    pushed_from.add(threading.get_ident())
    original_push(self, message, context)


async def main(url: str, prefix: str, blocking: Publisher) -> None:
    stream = EventStream(broker=RedisBroker(url, key_prefix=prefix))
    received: list[object] = []
    with anyio.fail_after(30):
        async with stream, open_stream(stream("news")) as response:
            await stream.wait_subscribers(1, "news")
            for number in range(20):
                await anyio.to_thread.run_sync(blocking.publish_event_sync, "news", {"data": number})
            while len(received) < 20:
                event = await response.receive_event()
                if event.event is None:
                    received.append(event.json())
    assert received == list(range(20)), received
    # Every message came from the publisher's thread, not from this loop's.
    assert pushed_from, pushed_from
    assert threading.get_ident() not in pushed_from, pushed_from


if __name__ == "__main__":
    url, prefix, backend = sys.argv[1], sys.argv[2], sys.argv[3]
    # The blocking publisher's thread runs the first event loop that uses glide: glide
    # then reads every client's replies (and the feed's messages) in that thread.
    blocking = Publisher(broker=RedisBroker(url, key_prefix=prefix))
    blocking.publish_event_sync("warmup", {"data": 0})
    FeedInbox.push = push  # type: ignore[method-assign]
    anyio.run(main, url, prefix, blocking, backend=backend)
    blocking.close()
    print("handed over")
