"""Publisher.close() against a real private redis-server: sync publishes racing it or after it
raise RuntimeError, and no thread of the publisher is left to keep the interpreter alive
(the in-process thread tests: tests/unit/test_threads.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import eventstream
from eventstream import Publisher, RedisBroker

from ..support.redis_engine import RedisEngine

# A process that publishes from threads racing close(): every publish returns an id or, once
# close() has begun, raises RuntimeError; nothing starts the publisher's thread again, so the
# interpreter exits (a thread started again after close() would keep it waiting for ever).
RACING_CLOSE = """
import sys, threading
from eventstream import Publisher, RedisBroker

publisher = Publisher(broker=RedisBroker(sys.argv[1], key_prefix=sys.argv[2]))
published = threading.Semaphore(0)
outcomes = []

def publish_until_refused():
    try:
        while True:
            publisher.publish_event_sync("news", {"data": 1})
            published.release()
    except RuntimeError as exc:
        outcomes.append(str(exc))

threads = [threading.Thread(target=publish_until_refused) for _ in range(8)]
for thread in threads:
    thread.start()
for _ in range(40):
    published.acquire()
publisher.close()
for thread in threads:
    thread.join()
try:
    publisher.publish_event_sync("news", {"data": 2})
except RuntimeError as exc:
    outcomes.append(str(exc))
print(len(outcomes), sum("is closed" in outcome for outcome in outcomes))
"""


def run_script(script: str, engine: RedisEngine, prefix: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter with the engine's URL and the prefix as arguments;
    fail with its stderr unless it exits with 0 within 60 s."""
    env = {**os.environ, "PYTHONPATH": str(Path(eventstream.__file__).parent.parent)}
    command = [sys.executable, "-c", script, engine.url, prefix]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_sync_publisher_racing_close_raises_and_the_process_exits(engine: RedisEngine, prefix: str) -> None:
    done = run_script(RACING_CLOSE, engine, prefix)
    # The 8 threads and the call after close() all got the Publisher's own error.
    assert done.stdout.split() == ["9", "9"], (done.stdout, done.stderr)


def test_sync_publisher_after_close_raises(engine: RedisEngine, prefix: str) -> None:
    before = set(threading.enumerate())
    with Publisher(broker=RedisBroker(engine.url, key_prefix=prefix)) as publisher:
        assert publisher.publish_event_sync("news", {"data": 1})
    for _ in range(2):
        with pytest.raises(RuntimeError, match="this Publisher is closed"):
            publisher.publish_event_sync("news", {"data": 2})
    publisher.close()  # still idempotent
    # No thread of the publisher is left (one started again would keep the interpreter alive).
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive(), thread.name


# A publisher that published (its thread runs), then fork(): in the child the call raises at
# once instead of waiting for ever on a thread that is not there, close() returns, and the
# parent publishes on.
FORKED = """
import os, sys
from eventstream import Publisher, RedisBroker

publisher = Publisher(broker=RedisBroker(sys.argv[1], key_prefix=sys.argv[2]))
publisher.publish_event_sync("news", {"data": 1})
pid = os.fork()
if pid == 0:
    try:
        publisher.publish_event_sync("news", {"data": 2})
    except RuntimeError as exc:
        code = 0 if "forked" in str(exc) else 3
    else:
        code = 4
    publisher.close()
    os._exit(code)
_, status = os.waitpid(pid, 0)
publisher.publish_event_sync("news", {"data": 3})
publisher.close()
print(os.waitstatus_to_exitcode(status))
"""

# A process-wide publisher never closed: the interpreter still exits.
NEVER_CLOSED = """
import sys
from eventstream import Publisher, RedisBroker

PUBLISHER = Publisher(broker=RedisBroker(sys.argv[1], key_prefix=sys.argv[2]))
PUBLISHER.publish_event_sync("news", {"data": 1})
print("published")
"""


@pytest.mark.parametrize("script", [FORKED, NEVER_CLOSED], ids=["forked", "never-closed"])
def test_sync_publisher_in_a_forked_child_and_at_exit(engine: RedisEngine, prefix: str, script: str) -> None:
    done = run_script(script, engine, prefix)
    assert done.stdout.split() == (["0"] if script is FORKED else ["published"]), (done.stdout, done.stderr)
