"""decode_entry, without I/O: the engine's messages are read whole, or refused with a clear error."""

from __future__ import annotations

import pytest

from eventstream._redis._wire import EngineEntry, decode_entry, traced_mark


def test_a_well_formed_message_is_read_field_by_field() -> None:
    entry = decode_entry(b"ep1\n7\nid-\xc3\xa9\nid-6\n1700000000123\ndata: a\ndata: b\n")
    assert entry == EngineEntry(
        epoch="ep1",
        seq=7,
        id="id-\u00e9",
        prev_id="id-6",
        published_ms=1700000000123,
        body=b"data: a\ndata: b\n",  # the body keeps its own newlines
    )


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        pytest.param(b"ep1\n7\nid\nprev\n1700000000123", "too few fields", id="missing-body"),
        pytest.param(b"ep1\nseven\nid\nprev\n1\ndata: x\n", "bad sequence number", id="bad-seq"),
        pytest.param(b"\n7\nid\nprev\n1\ndata: x\n", "bad sequence number", id="no-epoch"),
        pytest.param(b"ep1\n7\nid-\xff\nprev\n1\ndata: x\n", "can't decode", id="id-not-utf8"),
        pytest.param(b"ep1\n7\nid\nprev-\xc3\n1\ndata: x\n", "can't decode", id="prev-id-cut"),
        pytest.param(b"\xe9p\n7\nid\nprev\n1\ndata: x\n", "can't decode", id="epoch-not-ascii"),
        pytest.param(b"ep1\n7\nid\nprev\n" + b"9" * 16 + b"\ndata: x\n", "out of range", id="time-too-long"),
        pytest.param(b"ep1\n" + b"9" * 20 + b"\nid\nprev\n1\ndata: x\n", "out of range", id="seq-too-long"),
    ],
)
def test_a_message_another_writer_left_is_refused_with_a_value_error(message: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^not an eventstream entry: .*{reason}") as caught:
        decode_entry(message)
    assert not isinstance(caught.value, UnicodeDecodeError)  # a clear error, not the codec's


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_traced_message_carries_its_traceparent_after_the_time() -> None:
    entry = decode_entry(f"ep1\n7\nid\nprev\n1700000000123 {TRACEPARENT}\ndata: a\n".encode())
    assert (entry.published_ms, entry.traceparent, entry.body) == (1700000000123, TRACEPARENT, b"data: a\n")
    assert decode_entry(b"ep1\n7\nid\nprev\n1\ndata: a\n").traceparent is None  # an untraced (older) message


@pytest.mark.parametrize(
    "carried",
    [
        pytest.param(TRACEPARENT.upper(), id="uppercase"),
        pytest.param(TRACEPARENT[:-1], id="short"),
        pytest.param(TRACEPARENT + "0", id="long"),
        pytest.param("x" * 100_000, id="huge"),
        pytest.param(TRACEPARENT.replace("-", "_"), id="separators"),
        pytest.param("", id="empty"),
        pytest.param(TRACEPARENT + " " + TRACEPARENT, id="two"),
        pytest.param("00-\u0663" + TRACEPARENT[4:], id="unicode-digit"),
    ],
)
def test_a_malformed_traceparent_is_ignored_and_the_entry_read(carried: str) -> None:
    entry = decode_entry(f"ep1\n7\nid\nprev\n5 {carried}\ndata: a\n".encode())
    assert (entry.seq, entry.published_ms, entry.traceparent, entry.body) == (7, 5, None, b"data: a\n")


def test_only_a_traceparent_is_put_in_a_publish_argument() -> None:
    assert traced_mark(b"3\n", TRACEPARENT) == b"3 " + TRACEPARENT.encode() + b"\n"
    for bad in ("", "00-zz", TRACEPARENT + "\n", "\u0663" * 55):
        assert traced_mark(b"3\n", bad) == b"3\n"
