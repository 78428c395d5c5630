"""The eventstream logger: a library's NullHandler, slow clients logged once each, floods limited."""

from __future__ import annotations

import logging

import anyio
import pytest

from eventstream import EventStream
from eventstream._observe._logging import RateLimitedLog
from eventstream._serve._ending import SLOW_CLIENTS
from eventstream.testing import open_stream


def test_the_library_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("eventstream").handlers
    assert any(isinstance(handler, logging.NullHandler) for handler in handlers)


@pytest.mark.anyio
async def test_slow_clients_are_logged_once_each_and_a_flood_is_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    SLOW_CLIENTS._tokens = float(SLOW_CLIENTS.burst)  # a fresh bucket (other tests drop clients too)
    SLOW_CLIENTS.suppressed = 0
    stream = EventStream(buffer_size=1, send_timeout=0.3, keep_alive_interval=None)
    clients = 25
    caplog.set_level(logging.WARNING, logger="eventstream")
    endpoint = stream("user-{id}")
    done = anyio.Event()

    async def hold_without_reading(user: int) -> None:
        async with open_stream(endpoint, path_params={"id": str(user)}):
            await done.wait()  # never reads

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for user in range(clients):
                tg.start_soon(hold_without_reading, user)
            await stream.wait_subscribers(clients)
            while stream.subscriber_count():  # publishes leave them behind, then drop them
                for user in range(clients):
                    await stream.publish_event(f"user-{user}", {"data": "y" * 1000})
                await anyio.sleep(0.02)
            done.set()
    assert stream.statistics().subscribers_dropped == clients
    lines = [record for record in caplog.records if "slow consumer" in record.getMessage()]
    assert len(lines) == SLOW_CLIENTS.burst  # the rest were left out, and counted
    assert SLOW_CLIENTS.suppressed == clients - SLOW_CLIENTS.burst
    first = lines[0]
    assert first.levelno == logging.WARNING
    assert first.name == "eventstream"
    assert first.reason == "slow"  # type: ignore[attr-defined]
    assert first.template == "user-{id}"  # type: ignore[attr-defined]
    assert first.channels[0].startswith("user-")  # type: ignore[attr-defined]
    assert first.client == "127.0.0.1:50000"  # type: ignore[attr-defined]  # open_stream's scope
    assert "to 127.0.0.1:50000 ended: its client took nothing for 0.3 s" in first.getMessage()


def test_a_rate_limited_log_says_how_many_lines_it_left_out(caplog: pytest.LogCaptureFixture) -> None:
    log = RateLimitedLog(burst=2, every=10.0)
    caplog.set_level(logging.WARNING, logger="eventstream")
    logged = [log.warning("line %d", n, extra={"reason": "test"}) for n in range(5)]
    assert logged == [True, True, False, False, False]
    log._at -= 10.0  # ten seconds later: one more line may pass
    assert log.warning("line %d", 5, extra={"reason": "test"})
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["line 0", "line 1", "line 5 (and 3 more such lines left out)"]
    assert log.suppressed == 0
