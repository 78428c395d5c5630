"""GRIP items and the retry policy (``_grip/_batch.py``), without a proxy."""

from __future__ import annotations

import base64

import anyio
import pytest

from eventstream import GripPublisher, GripPublishError
from eventstream._grip._batch import Item, ProxyQueue, RetryPolicy, encode_item, take_batch
from eventstream._grip._config import GripProxy


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retries": -1}, "retries must be >= 0"),
        ({"backoff": 0}, "backoff and max_backoff"),
        ({"backoff": 3.0, "max_backoff": 2.0}, "backoff and max_backoff"),
        ({"max_backoff": float("inf")}, "backoff and max_backoff"),
        ({"backoff": float("nan")}, "backoff and max_backoff"),
        ({"max_batch": 0}, "max_batch must be an int >= 1, not 0"),
        ({"max_batch": True}, "max_batch must be an int >= 1, not True"),
        ({"max_batch": 2.5}, "max_batch must be an int >= 1, not 2.5"),
        ({"timeout": True}, "timeout must be a positive number of seconds, not True"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, not 0"),
        ({"timeout": float("nan")}, "timeout must be a positive number of seconds, not nan"),
        ({"publish_timeout": float("inf")}, "publish_timeout must be a positive number of seconds, not inf"),
    ],
)
def test_a_bad_retry_policy_is_refused_when_the_publisher_is_built(
    options: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        GripPublisher("http://proxy:5561/", **options)  # type: ignore[arg-type]


def test_the_policy_is_read_only_on_the_publisher() -> None:
    publisher = GripPublisher("http://proxy:5561/", retries=2, backoff=0.1, max_backoff=0.3)
    assert (publisher.retries, publisher.backoff, publisher.max_backoff) == (2, 0.1, 0.3)
    with pytest.raises(AttributeError):
        publisher.retries = 5  # type: ignore[misc]


def test_delays_double_up_to_the_cap_with_jitter_taken_off() -> None:
    policy = RetryPolicy(retries=10, backoff=0.1, max_backoff=0.5)
    for attempt, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (9, 0.5)]:
        for _ in range(50):
            assert full / 2 <= policy.delay(attempt) <= full


def test_items_carry_text_as_is_and_other_bytes_in_base64() -> None:
    text = encode_item("events-a", "data: é\n\n".encode(), {"id": "e-1", "prev-id": "e-0"})
    assert text == {
        "channel": "events-a",
        "id": "e-1",
        "prev-id": "e-0",
        "formats": {"http-stream": {"content": "data: é\n\n"}},
    }
    binary = encode_item("events-a", b"data: \xff\n\n", {"id": "x"})
    assert binary["formats"] == {"http-stream": {"content-bin": base64.b64encode(b"data: \xff\n\n").decode()}}


@pytest.mark.anyio
async def test_items_that_waited_their_whole_timeout_are_failed_unsent_and_the_rest_go_out() -> None:
    sender = ProxyQueue(GripProxy("http://127.0.0.1:5561"))
    now = anyio.current_time()
    stale = [Item(encode_item("c", b"old", {"id": str(n)}), deadline=now - 1) for n in range(2)]
    fresh = [Item(encode_item("c", b"new", {"id": str(n)}), deadline=now + 60) for n in range(3)]
    sender.queue.extend([stale[0], fresh[0], stale[1], fresh[1], fresh[2]])

    batch = take_batch(sender, max_batch=2, publish_timeout=2.5)

    assert batch == fresh[:2]  # in queue order, max_batch of them; the stale ones skipped
    assert list(sender.queue) == [fresh[2]]
    assert sender.failures == 2
    for item in stale:
        assert item.done.is_set()
        error = item.error
        assert isinstance(error, GripPublishError)
        assert error.attempts == 0
        assert error.proxy == "http://127.0.0.1:5561"
        assert "not sent" in error.reason
        assert "publish_timeout (2.5 s)" in error.reason
    assert not any(item.done.is_set() for item in fresh)


@pytest.mark.anyio
async def test_a_batch_whose_expired_items_are_all_it_took_is_empty() -> None:
    sender = ProxyQueue(GripProxy("http://127.0.0.1:5561"))
    stale = Item(encode_item("c", b"old", {"id": "1"}), deadline=anyio.current_time())
    sender.queue.append(stale)
    assert take_batch(sender, max_batch=10, publish_timeout=1.0) == []
    assert not sender.queue
    assert stale.done.is_set()
    assert stale.error is not None


@pytest.mark.anyio
async def test_a_batch_stops_before_its_body_would_reach_the_size_limit() -> None:
    sender = ProxyQueue(GripProxy("http://127.0.0.1:5561"))
    deadline = anyio.current_time() + 60
    items = [Item(encode_item("c", b"x" * 400_000, {"id": str(n)}), deadline) for n in range(3)]
    sender.queue.extend(items)
    assert take_batch(sender, max_batch=10, publish_timeout=1.0) == items[:2]
    assert take_batch(sender, max_batch=10, publish_timeout=1.0) == items[2:]


@pytest.mark.anyio
async def test_a_running_publisher_cannot_be_entered_again() -> None:
    publisher = GripPublisher("http://127.0.0.1:5561")
    async with publisher:
        assert publisher.running
        with pytest.raises(RuntimeError, match="already running"):
            await publisher.__aenter__()
        assert publisher.running  # the refused entry did not stop it
    assert not publisher.running
