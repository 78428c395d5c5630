"""The address a broker URL is read into checks itself, whoever builds it; and a URL that is
not a string is refused with the same error as any malformed one."""

from __future__ import annotations

from typing import Any

import pytest

from eventstream._redis._url import RedisAddress, parse_redis_url
from eventstream._sse import NEED_DATA


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"host": ""}, "the engine's host is empty"),
        ({"host": "h", "port": 0}, "port 0 is out of range"),
        ({"host": "h", "port": 65536}, "port 65536 is out of range"),
        ({"host": "h", "database": -1}, "database -1 is negative"),
    ],
)
def test_an_address_out_of_range_is_refused(fields: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RedisAddress(**fields)


def test_an_address_hides_its_password() -> None:
    address = RedisAddress("::1", 6390, 2, tls=True, username="u", password="s3cret")
    assert address.display == "rediss://[::1]:6390/2"
    assert "s3cret" not in repr(address)


@pytest.mark.parametrize("url", [None, b"redis://127.0.0.1:6390/0", 6390])
def test_a_url_that_is_not_a_str_is_refused(url: Any) -> None:
    with pytest.raises(ValueError, match="a broker URL must be a str, not"):
        parse_redis_url(url)


def test_need_data_reads_as_its_name() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
