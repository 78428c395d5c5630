"""EventStream's and Publisher's arguments: each refusal names the option and the value given."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from eventstream import EventStream, GripPublisher, MemoryHistory, Publisher, RedisBroker
from eventstream._core import LocalBroker

GRACE = "shutdown_grace must be a number of seconds >= 0, not "
NOT_A_BROKER = "broker must be a redis:// URL or a Broker, not "


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_subscribers": 0}, ValueError, "max_subscribers must be an int >= 1 or None, not 0"),
        ({"max_subscribers": -5}, ValueError, "max_subscribers must be an int >= 1 or None, not -5"),
        ({"max_subscribers": 1.5}, ValueError, "max_subscribers must be an int >= 1 or None, not 1.5"),
        ({"max_subscribers": True}, ValueError, "max_subscribers must be an int >= 1 or None, not True"),
        ({"shutdown_grace": True}, ValueError, GRACE + "True"),
        ({"shutdown_grace": "2"}, ValueError, GRACE + "'2'"),
        ({"shutdown_grace": -1}, ValueError, GRACE + "-1"),
        (
            {"shutdown_grace": math.inf},
            ValueError,
            GRACE + "inf",
        ),
        (
            {"shutdown_grace": math.nan},
            ValueError,
            GRACE + "nan",
        ),
        ({"grip_prefix": 5}, TypeError, "grip_prefix must be a str, not int"),
        ({"grip_prefix": b"events-"}, TypeError, "grip_prefix must be a str, not bytes"),
        ({"broker": 5}, TypeError, "broker must be a redis:// URL or a Broker, not int"),
        (
            {"broker": MemoryHistory()},
            TypeError,
            NOT_A_BROKER + "MemoryHistory",
        ),
        (
            {"broker": LocalBroker(MemoryHistory()), "history": MemoryHistory()},
            ValueError,
            "with a broker, history is kept by the broker",
        ),
        (
            {"broker": LocalBroker(MemoryHistory()), "history": None},
            ValueError,
            "with a broker, history is kept by the broker",
        ),
        (
            {"broker": "redis://127.0.0.1:6390/0", "history": MemoryHistory()},
            ValueError,
            "with a broker, history is kept by the broker",
        ),
        ({"broker": "http://127.0.0.1:6390/0"}, ValueError, "the scheme must be redis://, rediss://"),
        ({"slow_consumer": "wait"}, ValueError, "slow_consumer must be one of .*, not 'wait'"),
        (
            {"broker": "redis://127.0.0.1:6390/0", "slow_consumer": "block"},
            ValueError,
            'slow_consumer="block" cannot be used with a broker',
        ),
    ],
)
def test_refused_options(options: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        EventStream(**options)


def test_a_url_makes_a_redis_broker_and_a_broker_is_used_as_given() -> None:
    stream = EventStream(broker="redis://127.0.0.1:6390/0")  # nothing connects before the stream starts
    assert isinstance(stream._broker, RedisBroker)
    broker = LocalBroker(MemoryHistory())
    assert EventStream(broker=broker)._broker is broker


def test_a_grip_publisher_is_used_as_given_and_a_configuration_makes_one() -> None:
    publisher = GripPublisher("http://127.0.0.1:5561")
    assert EventStream(grip=publisher)._grip is publisher
    made = EventStream(grip="http://127.0.0.1:5561")._grip
    assert isinstance(made, GripPublisher)
    assert made is not publisher
    assert EventStream()._grip is None


@pytest.mark.parametrize(
    ("broker", "error", "match"),
    [
        (None, TypeError, "Publisher needs a broker"),
        (5, TypeError, "broker must be a redis:// URL or a Broker, not int"),
        ("redis://127.0.0.1:6390/x", ValueError, "the path must be a database number"),
    ],
)
def test_publisher_refuses_what_is_not_a_broker(broker: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        Publisher(broker=broker)


@pytest.mark.parametrize("length", [0, -1, True, 2.5, "256"])
def test_a_name_length_limit_is_checked_alike_by_the_stream_and_the_publisher(length: Any) -> None:
    match = f"max_channel_name_length must be an int >= 1, not {length!r}"
    with pytest.raises(ValueError, match=re.escape(match)):
        EventStream(max_channel_name_length=length)
    with pytest.raises(ValueError, match=re.escape(match)):
        Publisher(broker=LocalBroker(MemoryHistory()), max_channel_name_length=length)


def test_the_options_are_read_only() -> None:
    stream = EventStream(max_channels=3, retry=500)
    assert (stream.max_channels, stream.retry) == (3, 500)
    with pytest.raises(AttributeError):
        stream.retry = 100  # type: ignore[misc]
    assert stream.retry == 500


@pytest.mark.parametrize(
    "options",
    [
        {"grip_reliable": True},
        {"grip_reliable": True, "grip": "http://127.0.0.1:5561", "history": None},
    ],
)
def test_grip_reliable_needs_grip_and_a_history(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="grip_reliable needs grip and a history store"):
        EventStream(**options)


def test_the_grip_publisher_is_the_streams() -> None:
    publisher = GripPublisher("http://127.0.0.1:5561")
    stream = EventStream(grip=publisher, grip_reliable=True)
    assert stream.grip is publisher
    assert stream.grip_reliable
    assert EventStream().grip is None


@pytest.mark.anyio
@pytest.mark.parametrize("event_id", ["a b", "a,b", "a;b", 'a"b', "a\tb"])
async def test_with_reliable_grip_an_id_the_proxy_would_split_is_refused(event_id: str) -> None:
    history = MemoryHistory()
    stream = EventStream(grip=GripPublisher("http://127.0.0.1:5561"), grip_reliable=True, history=history)
    with pytest.raises(ValueError, match="with GRIP, ids must not contain white space"):
        await stream.publish_event("news", {"data": 1, "id": event_id})
    assert history.last("news") is None  # nothing was kept


@pytest.mark.anyio
@pytest.mark.parametrize("channel", [" news", "news ", "\tnews"])
async def test_a_published_channel_name_is_not_trimmed_but_refused(channel: str) -> None:
    # Request paths are trimmed (a client's stray space); a publisher's name is taken as given.
    with pytest.raises(ValueError, match="has leading or trailing white space"):
        await EventStream().publish_event(channel, {"data": 1})


URL = "redis://127.0.0.1:6390/0"
SECONDS = "must be a positive number of seconds, not "


@pytest.mark.parametrize(
    ("args", "options", "match"),
    [
        ((), {}, r"give the engine's url or a glide configuration \(one of them\)"),
        ((URL,), {"max_events": 0}, "max_events must be an int >= 1, not 0"),
        ((URL,), {"max_events": True}, "max_events must be an int >= 1, not True"),
        ((URL,), {"max_bytes": 1.5}, "max_bytes must be an int >= 1, not 1.5"),
        ((URL,), {"max_age": 0}, f"max_age {SECONDS}0"),
        ((URL,), {"request_timeout": -1}, f"request_timeout {SECONDS}-1"),
        ((URL,), {"publish_timeout": math.inf}, f"publish_timeout {SECONDS}inf"),
        ((URL,), {"check_interval": math.nan}, f"check_interval {SECONDS}nan"),
        ((URL,), {"heartbeat_interval": True}, f"heartbeat_interval {SECONDS}True"),
        ((URL,), {"max_age": "300"}, f"max_age {SECONDS}'300'"),
        ((URL,), {"key_prefix": "app|"}, "key_prefix must be a str without '|'"),
        ((URL,), {"feed_linger": -1}, "feed_linger must be a number of seconds >= 0, not -1"),
        ((URL,), {"feed_linger": math.inf}, "feed_linger must be a number of seconds >= 0, not inf"),
        ((URL,), {"feed_channels_max": 1}, "feed_channels_max must be an int >= 2 or None, not 1"),
        ((URL,), {"wait_replicas": -1}, "wait_replicas must be an int >= 0, not -1"),
        ((URL,), {"wait_replicas": True}, "wait_replicas must be an int >= 0, not True"),
    ],
)
def test_redis_broker_refuses_bad_options_when_built(
    args: tuple[str, ...], options: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        RedisBroker(*args, **options)


def test_a_redis_broker_not_running_has_no_history_to_give() -> None:
    broker = RedisBroker(URL)
    with pytest.raises(RuntimeError, match=r"not running with a hub: enter the stream \(async with\) first"):
        _ = broker.history
