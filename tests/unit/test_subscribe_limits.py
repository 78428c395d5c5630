"""Rate limits on subscribing per client address (``subscribe_limits``): 429, Retry-After, release."""

from __future__ import annotations

import time
from typing import Any

import anyio
import jwt
import pytest

from eventstream import EventStream, HistoryEntry, MemoryHistory, SubscribeLimits
from eventstream._base import AddressLimiter
from eventstream.testing import open_stream
from eventstream.types import Message, Scope
from tests.support.helpers import wait_until

pytestmark = pytest.mark.anyio

A = ("203.0.113.7", 40000)
B = ("198.51.100.9", 40001)


async def _status(stream: EventStream, client: tuple[str, int], **kwargs: Any) -> tuple[int, str | None]:
    async with open_stream(stream("c"), client=client, **kwargs) as response:
        return response.status, response.header("retry-after")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate": 0},
        {"rate": -1.0},
        {"rate": float("inf")},
        {"rate": float("nan")},
        {"rate": True},
        {"rate": "5"},
        {"burst": 2},  # without a rate
        {"rate": 1, "burst": 0},
        {"max_open": 0},
        {"max_open": 1.5},
        {"open_retry_after": 0},
        {"max_addresses": 0},
        {"ipv6_prefix": 0},
        {"ipv6_prefix": 129},
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs)) if "burst" not in kwargs else "burst"):
        SubscribeLimits(**kwargs)


def test_subscribe_limits_must_be_a_subscribe_limits() -> None:
    with pytest.raises(TypeError, match="subscribe_limits"):
        EventStream(subscribe_limits={"max_open": 1})  # type: ignore[arg-type]


def test_addresses_count_ipv6_per_prefix() -> None:
    limiter = AddressLimiter(SubscribeLimits(max_open=1))
    assert limiter.key(("203.0.113.7", 1)) == "203.0.113.7"
    assert limiter.key(("2001:db8:1:2:aaaa::1", 1)) == limiter.key(("2001:db8:1:2:ffff::9", 2))
    assert limiter.key(("2001:db8:1:2::1", 1)) == "2001:db8:1:2::/64"
    assert limiter.key(("2001:db8:1:3::1", 1)) != limiter.key(("2001:db8:1:2::1", 1))
    assert limiter.key(("::ffff:203.0.113.7", 1)) == "203.0.113.7"  # an IPv4 client on a v6 socket
    assert limiter.key(None) == ""  # the server does not say: every such request together
    assert limiter.key(("/run/app.sock", 0)) == "/run/app.sock"
    alone = AddressLimiter(SubscribeLimits(max_open=1, ipv6_prefix=128))
    assert alone.key(("2001:db8:1:2::1", 1)) != alone.key(("2001:db8:1:2::2", 1))


async def test_open_streams_per_address_get_429_and_are_given_back() -> None:
    stream = EventStream(keep_alive_interval=None, subscribe_limits=SubscribeLimits(max_open=2))
    with anyio.fail_after(10):
        async with open_stream(stream("c"), client=A) as first, open_stream(stream("c"), client=A) as second:
            assert first.status == second.status == 200
            assert await _status(stream, A) == (429, "5")
            assert await _status(stream, ("203.0.113.7", 40999)) == (429, "5")  # another port: one address
            async with open_stream(stream("c"), client=A) as refused:
                assert "too many open streams" in (await refused.read()).decode()
            async with open_stream(stream("c"), client=B) as other:  # another address is not held up
                assert other.status == 200
            # HEAD holds no stream: max_open does not apply to it
            assert (await _status(stream, A, method="HEAD"))[0] == 200
        assert stream.subscriber_count() == 0
        # Both left: A opens two again.
        async with open_stream(stream("c"), client=A) as first, open_stream(stream("c"), client=A) as second:
            assert first.status == second.status == 200


async def test_new_streams_per_second_get_429_with_retry_after_and_recover() -> None:
    stream = EventStream(keep_alive_interval=None, subscribe_limits=SubscribeLimits(rate=1, burst=2))
    with anyio.fail_after(10):
        assert await _status(stream, A) == (200, None)
        assert await _status(stream, A) == (200, None)
        assert await _status(stream, A) == (429, "1")
        assert await _status(stream, B) == (200, None)  # per address

        async def admitted() -> bool:
            return (await _status(stream, A))[0] == 200

        await wait_until(admitted, timeout=5)  # the bucket refills at `rate`


async def test_refused_requests_hold_nothing() -> None:
    # A request refused by authorize, or one that only reads the headers, holds no open stream.
    stream = EventStream(
        keep_alive_interval=None,
        authorize=lambda scope, channels: channels != ["no"],
        subscribe_limits=SubscribeLimits(max_open=1),
    )
    with anyio.fail_after(10):
        for _ in range(3):
            async with open_stream(stream("no"), client=A) as response:
                assert response.status == 403
            assert (await _status(stream, A, method="HEAD"))[0] == 200
        async with open_stream(stream("c"), client=A) as response:
            assert response.status == 200


async def test_open_counts_are_given_back_on_shutdown() -> None:
    stream = EventStream(keep_alive_interval=None, subscribe_limits=SubscribeLimits(max_open=1))
    with anyio.fail_after(10):
        async with open_stream(stream("c"), client=A) as response:
            await stream.wait_subscribers(1, "c")
            await stream.aclose()
            await response.read()
        async with stream:  # opened again
            assert await _status(stream, A) == (200, None)


class BrokenHistory(MemoryHistory):
    """A history store whose replay fails: the server's own error, reported as stream-error."""

    def since(self, channel: str, seq: int) -> list[HistoryEntry] | None:
        raise RuntimeError("the history store failed")


async def test_open_counts_are_given_back_after_a_server_error() -> None:
    limits = SubscribeLimits(max_open=1)
    stream = EventStream(keep_alive_interval=None, history=BrokenHistory(), subscribe_limits=limits)
    await stream.publish_event("c", {"data": 1, "id": "c-1"})
    with anyio.fail_after(10):
        for _ in range(2):
            async with open_stream(stream("c"), client=A, headers={"last-event-id": "c-1"}) as response:
                assert response.status == 200
                assert b"stream-error" in await response.read()


async def test_open_counts_are_given_back_when_a_slow_client_is_dropped() -> None:
    limits = SubscribeLimits(max_open=1)
    stream = EventStream(buffer_size=4, send_timeout=0.3, keep_alive_interval=None, subscribe_limits=limits)
    released = anyio.Event()

    async def receive() -> Message:
        await released.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if b"\nid: " in message.get("body", b""):  # a live event: the client reads no more
            await released.wait()

    scope: Scope = {
        "type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": [], "client": A,
    }  # fmt: skip
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stream.run, scope, receive, send, "c")
            try:
                await stream.wait_subscribers(1, "c")
                assert await _status(stream, A) == (429, "5")
                count = 0

                async def dropped() -> bool:
                    nonlocal count
                    await stream.publish_event("c", {"data": count})
                    count += 1
                    return stream.statistics().subscribers_dropped == 1

                await wait_until(dropped, timeout=10)
                await wait_until(lambda: _returns(stream.subscriber_count("c") == 0), timeout=10)

                async def admitted() -> bool:
                    return (await _status(stream, A))[0] == 200

                await wait_until(admitted, timeout=10)
            finally:
                released.set()


async def _returns(value: bool) -> bool:
    return value


async def test_a_flood_of_addresses_keeps_the_table_bounded() -> None:
    # Distinct addresses (IPv4 and rotating IPv6 hosts): the table never grows past max_addresses.
    limits = SubscribeLimits(rate=5, max_open=4, max_addresses=50)
    stream = EventStream(keep_alive_interval=None, subscribe_limits=limits)
    limiter = stream._serving.limiter
    assert limiter is not None
    with anyio.fail_after(60):
        for i in range(1500):
            client = (f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", 1000 + i % 50000)
            assert (await _status(stream, client))[0] == 200
            assert len(limiter) <= 50
        # One host rotating its IPv6 addresses within its /64 counts as one address.
        statuses = [(await _status(stream, (f"2001:db8:0:7::{i:x}", 1)))[0] for i in range(20)]
        assert statuses.count(200) == 5  # the burst, then 429: one bucket for the /64
        assert len(limiter) <= 50


async def test_a_table_full_of_open_streams_refuses_new_addresses() -> None:
    limits = SubscribeLimits(max_open=1, max_addresses=3)
    stream = EventStream(keep_alive_interval=None, subscribe_limits=limits)
    clients = [(f"192.0.2.{i}", 1) for i in range(3)]
    with anyio.fail_after(10):
        async with (
            open_stream(stream("c"), client=clients[0]),
            open_stream(stream("c"), client=clients[1]),
            open_stream(stream("c"), client=clients[2]),
        ):
            async with open_stream(stream("c"), client=("192.0.2.200", 1)) as refused:
                assert refused.status == 429
                assert refused.header("retry-after") == "5"
                assert "too many clients" in (await refused.read()).decode()
        assert await _status(stream, ("192.0.2.200", 1)) == (200, None)  # room again


async def test_streams_held_by_a_grip_proxy_count_against_the_rate_not_the_open_streams() -> None:
    key = "a-long-enough-signing-key-0123456789"
    grip = f"http://proxy:5561/?verify-iss=pushpin&verify-key={key}"
    sig = jwt.encode({"iss": "pushpin", "exp": int(time.time()) + 3600}, key, algorithm="HS256")
    held = EventStream(grip=grip, subscribe_limits=SubscribeLimits(max_open=1))
    with anyio.fail_after(10):
        for _ in range(5):  # the proxy holds them: this process holds nothing
            async with open_stream(held("c"), client=A, headers={"grip-sig": sig}) as response:
                assert response.status == 200
                assert response.header("grip-hold") == "stream"
        rated = EventStream(grip=grip, subscribe_limits=SubscribeLimits(rate=0.5, burst=2))
        statuses = []
        for _ in range(3):
            async with open_stream(rated("c"), client=A, headers={"grip-sig": sig}) as response:
                statuses.append((response.status, response.header("retry-after")))
        assert statuses == [(200, None), (200, None), (429, "2")]
