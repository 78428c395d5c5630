"""The chat app behind a GRIP proxy (Pushpin), so any number of app processes serve one stream.

Pushpin holds the browsers' connections; each app process answers stream
requests with hold instructions and publishes to Pushpin's control API, so an
event published by any process reaches every client. ``GRIP_URL`` says where
the control API is and which key signs Pushpin's requests; ``REDIS_URL``, the
broker the processes share (so that clients resume whichever process published)::

    GRIP_URL='http://127.0.0.1:5561/?verify-iss=pushpin&verify-key=changeme' \\
    REDIS_URL='redis://127.0.0.1:6390/0' \\
        hypercorn --workers 0 examples.grip.app:app --bind 127.0.0.1:8001

See docs/howto/grip.md ("GRIP and Pushpin") for the whole setup.
"""

from __future__ import annotations

import os

from eventstream import get_event_stream_singleton

from ..raw_asgi import chat_app

# With REDIS_URL, the processes share one history: a client resuming through Pushpin gets
# what any of them published. Without it, only one process should publish (see docs/howto/grip.md).
stream = get_event_stream_singleton(
    "grip",
    grip=os.environ.get("GRIP_URL", "http://127.0.0.1:5561"),
    broker=os.environ.get("REDIS_URL") or None,
)
app = chat_app(stream)
