"""GRIP items and the retry policy (``_grip/_batch.py``), without a proxy."""

from __future__ import annotations

import base64

import pytest

from eventstream import GripPublisher
from eventstream._grip._batch import RetryPolicy, encode_item


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"retries": -1}, "retries must be >= 0"),
        ({"backoff": 0}, "backoff and max_backoff"),
        ({"backoff": 3.0, "max_backoff": 2.0}, "backoff and max_backoff"),
        ({"max_backoff": float("inf")}, "backoff and max_backoff"),
        ({"backoff": float("nan")}, "backoff and max_backoff"),
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
