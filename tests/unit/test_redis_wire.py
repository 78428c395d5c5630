"""decode_entry, without I/O: the engine's messages are read whole, or refused with a clear error."""

from __future__ import annotations

import pytest

from eventstream._redis._wire import EngineEntry, decode_entry


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
    ],
)
def test_a_message_another_writer_left_is_refused_with_a_value_error(message: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^not an eventstream entry: .*{reason}") as caught:
        decode_entry(message)
    assert not isinstance(caught.value, UnicodeDecodeError)  # a clear error, not the codec's
