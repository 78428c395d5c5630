"""A broker URL's errors never echo any part of its password, whatever the URL's shape.

A malformed URL may hold a password anywhere (an unescaped ``/``, ``#``, ``?``
or ``@`` in it moves some of it into the host, port, path, query or
fragment), so the errors quote no part of the URL at all.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstream import RedisBroker
from eventstream._redis._url import parse_redis_url

SECRET = "Zq9"  # every password below is made of this and URL delimiters


@pytest.mark.parametrize(
    "password",
    [
        f"{SECRET}/{SECRET}",
        f"{SECRET}#{SECRET}",
        f"{SECRET}?{SECRET}",
        f"{SECRET}@{SECRET}",
        f"{SECRET}:{SECRET}",
        f"/{SECRET}",
        f"{SECRET}/",
        f"{SECRET}[",
        f"{SECRET}%zz{SECRET}",
        f"{SECRET}/0?{SECRET}#{SECRET}@{SECRET}",
    ],
)
@pytest.mark.parametrize(
    "shape",
    [
        "redis://user:{pw}@host:6379/0",
        "redis://:{pw}@host/0",
        "rediss://user:{pw}@host",
        "redis://user:{pw}@/0",
        "redis://user:{pw}@host:99999/0",
        "redis://user:{pw}@host/x",
        "redis://user:{pw}host/0",
        "redis://{pw}",
        "redis://user:{pw}",
        "http://user:{pw}@host/0",
        "{pw}@host/0",
        "redis:/user:{pw}@host/0",
        "redis://user:{pw}@[::1/0",
        "redis+cluster://user:{pw}@host:7000,host:7001",
        "rediss+cluster://:{pw}@host",
        "redis+cluster://user:{pw}@host:7000/1",
        "redis+cluster://user:{pw}@host:x,host",
        "redis+cluster://{pw}",
        "redis+cluster://user:{pw}",
    ],
)
def test_no_part_of_a_password_is_ever_echoed(shape: str, password: str) -> None:
    url = shape.format(pw=password)
    message = url_error(url)
    if message is not None:
        assert SECRET not in message, url
        assert "broker URL" in message
    else:  # well-formed after all (an '@' in a password is read right): never shown
        address = parse_redis_url(url)
        assert address.password is None or address.password not in repr(address)


@given(
    password=st.lists(
        st.sampled_from([SECRET, "/", "#", "?", "@", ":", "[", "]", "%", "%2F", " ", "0", "\\"]), min_size=1
    ).map("".join),
    before=st.sampled_from(
        [
            "redis://user:",
            "redis://:",
            "rediss://u:",
            "redis://",
            "redis:",
            "",
            "x://u:",
            "redis+cluster://u:",
        ]
    ),
    after=st.sampled_from(["@host/0", "@host:1/2", "@/0", "@host/0?a=b", "@host#f", "", "/0", "@host/x@y"]),
)
def test_no_part_of_any_password_is_ever_echoed(password: str, before: str, after: str) -> None:
    url = before + password + after
    assert SECRET not in (url_error(url) or ""), url


def url_error(url: str) -> str | None:
    """The text of the ValueError that the broker raises for ``url``, if it raises one."""
    try:
        RedisBroker(url)
    except ValueError as exc:
        return str(exc)
    return None


def test_the_url_errors_still_say_what_is_wrong() -> None:
    for url, reason in [
        ("http://host/0", "scheme"),
        ("redis:///0", "no host"),
        ("redis://host:port/0", "port"),
        ("redis://host/0?x=1", "query"),
        ("redis://host/db", "database number"),
        ("redis://host:0/0", "port"),
        ("redis+cluster://host:1/2", "no path but /0"),
        ("redis+cluster://host:1,host:x", "host or port"),
        ("redis+cluster://host:1,,host:2", "each node"),
    ]:
        with pytest.raises(ValueError, match=reason):
            RedisBroker(url)


def test_a_cluster_url_names_its_seed_nodes() -> None:
    address = parse_redis_url("rediss+cluster://app:s%2Fcret@10.0.0.1:7000,10.0.0.2,[::1]:7002/0")
    assert address.cluster
    assert address.tls
    assert address.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert (address.username, address.password) == ("app", "s/cret")
    assert address.display == "rediss+cluster://10.0.0.1:7000,10.0.0.2:6379,[::1]:7002"
    assert "s/cret" not in repr(address)
    single = parse_redis_url("redis://10.0.0.1/3")
    assert not single.cluster
    assert single.nodes == (("10.0.0.1", 6379),)
    assert single.display == "redis://10.0.0.1:6379/3"
