"""The RESP2 wire format the feed's connection speaks: commands out, replies in, hostile bytes refused."""

from __future__ import annotations

import pytest

from eventstream._redis._resp import (
    MAX_DEPTH,
    MAX_LINE,
    NEED_DATA,
    ErrorReply,
    RespError,
    RespParser,
    command,
)


def parse_all(data: bytes, *, max_bulk: int = 1024, step: int | None = None) -> list[object]:
    parser = RespParser(max_bulk=max_bulk)
    replies: list[object] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        while (reply := parser.next_reply()) is not NEED_DATA:
            replies.append(reply)
    return replies


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert (
        command("SUBSCRIBE", b"a\r\nb", "é") == b"*3\r\n$9\r\nSUBSCRIBE\r\n$4\r\na\r\nb\r\n$2\r\n\xc3\xa9\r\n"
    )


REPLIES = (
    b"+OK\r\n"
    b"-NOPERM no permissions to access the 'x' channel\r\n"
    b":-12\r\n"
    b"$-1\r\n"
    b"*-1\r\n"
    b"$0\r\n\r\n"
    b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nx\r\ny\x00\r\n"
    b"*2\r\n*1\r\n:1\r\n*0\r\n"
)
PARSED = [
    b"OK",
    ErrorReply("NOPERM no permissions to access the 'x' channel"),
    -12,
    None,
    None,
    b"",
    [b"subscribe", b"a", 1],
    [b"message", b"a", b"x\r\ny\x00"],
    [[1], []],
]


@pytest.mark.parametrize("step", [None, 1, 2, 7])
def test_replies_are_parsed_whole_however_the_bytes_arrive(step: int | None) -> None:
    assert parse_all(REPLIES, step=step) == PARSED


def test_a_channel_or_kind_with_cr_or_lf_in_it_is_read_whole_too() -> None:
    # (The common replies are read with one match that stops at CR or LF; these take the full parse.)
    data = (
        b"*3\r\n$7\r\nmessage\r\n$4\r\na\r\nb\r\n$1\r\nx\r\n"
        b"*3\r\n$9\r\nsubscribe\r\n$3\r\na\rb\r\n:1\r\n"
        b"*3\r\n$3\r\nk\nd\r\n$1\r\nc\r\n:2\r\n"
    )
    expected = [[b"message", b"a\r\nb", b"x"], [b"subscribe", b"a\rb", 1], [b"k\nd", b"c", 2]]
    assert parse_all(data) == expected
    assert parse_all(data, step=3) == expected


def test_nothing_is_taken_before_a_reply_is_whole() -> None:
    parser = RespParser(max_bulk=100)
    parser.feed(b"*2\r\n$3\r\nabc\r\n$3\r\nde")
    assert parser.next_reply() is NEED_DATA
    parser.feed(b"f\r\n+next\r\n")
    assert parser.next_reply() == [b"abc", b"def"]
    assert parser.next_reply() == b"next"
    assert parser.next_reply() is NEED_DATA


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello\r\n", r"starts with b'h', not a RESP2 type"),
        (b":12a\r\n", "is not an integer"),
        (b":--1\r\n", "is not an integer"),
        (b":\r\n", "is not an integer"),
        (b":123456789012345678901\r\n", "is not an integer"),
        (b"$5\r\nabcdefg\r\n", "does not end with CRLF"),
        (b"*3\r\n$1\r\nab\r\n$1\r\nc\r\n:1\r\n", "does not end with CRLF"),  # (a message's shape)
        (b"*3\r\n$1\r\na\r\n$1\r\nb\r\n:x\r\n", "is not an integer"),
        (b"*3\r\n$1\r\na\r\n$2000\r\n", "a bulk string of 2000 bytes"),
        (b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2000\r\n", "a bulk string of 2000 bytes"),
        (b"*3\r\n$9\r\nsubscribe\r\n$3\r\nab\r\n:1\r\n", "does not end with CRLF"),  # (its header lies)
        (b"$1025\r\n", r"a bulk string of 1025 bytes \(at most 1024\)"),
        (b"$-2\r\n", "a bulk string of -2 bytes"),
        (b"*-5\r\n", "an array of -5 items"),
        (b"*9\r\n", "an array of 9 items"),
        (b"*1\r\n" * (MAX_DEPTH + 1) + b":1\r\n", f"arrays nested deeper than {MAX_DEPTH}"),
        (b"+" + b"x" * (MAX_LINE + 1), f"longer than {MAX_LINE} bytes"),
    ],
)
def test_bytes_that_are_not_resp_or_pass_a_limit_are_refused(data: bytes, match: str) -> None:
    with pytest.raises(RespError, match=match):
        parse_all(data)


def test_a_confirmation_s_channel_longer_than_the_bulk_limit_is_refused() -> None:
    # (The common replies' one match takes channels up to 1 KiB: the limit is still the parser's.)
    data = b"*3\r\n$9\r\nsubscribe\r\n$200\r\n" + b"c" * 200 + b"\r\n:1\r\n"
    with pytest.raises(RespError, match="a bulk string of 200 bytes"):
        parse_all(data, max_bulk=100)


def test_a_long_line_is_refused_before_it_is_buffered_whole() -> None:
    parser = RespParser(max_bulk=10)
    parser.feed(b"+" + b"x" * (MAX_LINE - 1))
    assert parser.next_reply() is NEED_DATA  # (exactly at the limit, still waiting for CRLF)
    parser.feed(b"xx")
    with pytest.raises(RespError):
        parser.next_reply()


def test_a_reply_that_never_ends_is_refused_past_the_largest_message() -> None:
    # Arrays within the limits whose items keep coming (8 arrays of 8 strings of 64 KiB): once
    # held and parsed again at every chunk, for ever (the bytes kept the idle check content).
    parser = RespParser(max_bulk=1 << 20)
    chunks = [b"*8\r\n"]
    for _ in range(8):
        chunks += [b"*8\r\n", *(b"$65536\r\n" + b"x" * 65536 + b"\r\n" for _ in range(8))]
    fed = 0
    outcome: object = NEED_DATA
    while outcome is NEED_DATA and chunks:
        chunk = chunks.pop(0)
        parser.feed(chunk)
        fed += len(chunk)
        try:
            outcome = parser.next_reply()
        except RespError as exc:
            outcome = exc
    assert isinstance(outcome, RespError), outcome
    assert "unfinished after" in str(outcome)
    assert fed <= (1 << 20) + 5 * MAX_LINE + 65536  # refused once past the largest message
