"""The sans-I/O wire format: encoding, validation and WHATWG-conformant decoding."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import pickle
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstream import NEED_DATA, ServerSentEvent, SSEDecoder, encode
from eventstream._sse import MAX_RETRY, header_problem


def decode_all(data: bytes, *, chunk: int | None = None) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        decoder.feed(piece)
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
    return events


@pytest.mark.parametrize(
    ("event", "wire"),
    [
        (
            ServerSentEvent(event="message", data={"name": "John"}),
            b'event: message\ndata: {"name":"John"}\n\n',
        ),
        (ServerSentEvent(event="stream-open"), b"event: stream-open\ndata: \n\n"),
        (ServerSentEvent(data=[1, 2.5, None, True]), b"data: [1,2.5,null,true]\n\n"),
        (ServerSentEvent(data="hi"), b'data: "hi"\n\n'),
        (ServerSentEvent(data={"t": "é\u2028"}), 'data: {"t":"é\u2028"}\n\n'.encode()),
        (ServerSentEvent(data={"multi": "a\nb"}), b'data: {"multi":"a\\nb"}\n\n'),
        (ServerSentEvent(text="plain"), b"data: plain\n\n"),
        (ServerSentEvent(text="a\nb\r\nc\rd"), b"data: a\ndata: b\ndata: c\ndata: d\n\n"),
        (ServerSentEvent(text=""), b"data: \n\n"),
        (ServerSentEvent(text=" lead"), b"data:  lead\n\n"),
        (
            ServerSentEvent(event="tick", id="7", retry=3000, data=1),
            b"event: tick\nretry: 3000\ndata: 1\nid: 7\n\n",
        ),
        (ServerSentEvent(id=""), b"data: \nid: \n\n"),
    ],
)
def test_encode(event: ServerSentEvent, wire: bytes) -> None:
    assert encode(event) == wire


def test_encoding_is_computed_once() -> None:
    event = ServerSentEvent(event="x", data={"a": 1})
    assert encode(event) is encode(event)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"event": "a\nb"}, ValueError, "CR, LF or NUL"),
        ({"event": "a\rb"}, ValueError, "CR, LF or NUL"),
        ({"event": "a\0b"}, ValueError, "CR, LF or NUL"),
        ({"event": ""}, ValueError, "must not be empty"),
        ({"id": "1\n2"}, ValueError, "CR, LF or NUL"),
        ({"id": "1\r"}, ValueError, "CR, LF or NUL"),
        ({"id": "\0"}, ValueError, "CR, LF or NUL"),
        ({"id": "evt-1 "}, ValueError, "Last-Event-ID header: it starts or ends with ' '"),
        ({"id": "  evt"}, ValueError, "Last-Event-ID header: it starts or ends with ' '"),
        ({"id": "\tevt"}, ValueError, r"Last-Event-ID header: it starts or ends with '\\t'"),
        ({"id": "a\vb"}, ValueError, r"Last-Event-ID header: it contains the control character '\\x0b'"),
        ({"id": "a\fb"}, ValueError, r"Last-Event-ID header: it contains the control character '\\x0c'"),
        ({"id": "a\x01b"}, ValueError, r"control character '\\x01'"),
        ({"id": "a\x7fb"}, ValueError, r"control character '\\x7f'"),
        ({"retry": MAX_RETRY + 1}, ValueError, "MAX_RETRY"),
        ({"retry": 10**400}, ValueError, "MAX_RETRY"),
        ({"retry": -1}, ValueError, "retry"),
        ({"retry": 1.5}, ValueError, "retry"),
        ({"retry": True}, ValueError, "retry"),
        ({"retry": "10"}, ValueError, "retry"),
        ({"data": 1, "text": "x"}, ValueError, "not both"),
        ({"data": float("nan")}, ValueError, "Out of range"),
        ({"data": object()}, TypeError, "not JSON serializable"),
        ({"data": {1, 2}}, TypeError, "not JSON serializable"),
        ({"event": 5}, TypeError, "must be a str"),
        ({"id": 5}, TypeError, "must be a str"),
        ({"text": b"bytes"}, TypeError, "text must be a str"),
    ],
)
def test_invalid_events_are_refused(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ServerSentEvent(**kwargs)


def test_event_is_frozen() -> None:
    event = ServerSentEvent(event="a")
    with pytest.raises(AttributeError):
        event.event = "b"  # type: ignore[misc]


def test_an_event_behaves_as_the_frozen_dataclass_it_is() -> None:
    # Its __init__ is written by hand (for speed): replace, copy, pickle, equality,
    # hashing and the keyword-only signature must still be a dataclass's.
    event = ServerSentEvent(event="tick", text="a", id="1", retry=5)
    names = [f.name for f in dataclasses.fields(event)]
    assert names == ["event", "data", "text", "id", "retry", "_body", "_wire"]
    moved = dataclasses.replace(event, id="2")
    assert encode(moved) == b"event: tick\nretry: 5\ndata: a\nid: 2\n\n"
    assert encode(dataclasses.replace(moved, id=None)) == b"event: tick\nretry: 5\ndata: a\n\n"
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        dataclasses.replace(event, id="x\ny")
    for twin in (copy.copy(event), copy.deepcopy(event), pickle.loads(pickle.dumps(event))):
        assert twin == event
        assert hash(twin) == hash(event)
        assert encode(twin) == encode(event)
    assert event != moved
    assert repr(event) == "ServerSentEvent(event='tick', data=<no data>, text='a', id='1', retry=5)"
    with pytest.raises(TypeError):
        ServerSentEvent("tick")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ServerSentEvent(name="tick")  # type: ignore[call-arg]


def test_none_data_is_json_null() -> None:
    # None is JSON null, as JSON.stringify(null) writes it; an event built without data
    # carries one empty data line.
    assert encode(ServerSentEvent(data=None)) == b"data: null\n\n"
    assert encode(ServerSentEvent()) == b"data: \n\n"


def test_payload_and_json() -> None:
    assert ServerSentEvent(data={"a": [1]}).payload == '{"a":[1]}'
    assert ServerSentEvent(data={"a": [1]}).json() == {"a": [1]}
    assert ServerSentEvent(text='{"b":2}').json() == {"b": 2}
    assert ServerSentEvent(text="x\r\ny").payload == "x\ny"
    assert ServerSentEvent().payload == ""


# Each row: stream bytes, then the (event, text, id, retry) of each dispatched event.
DECODE_CASES: list[tuple[bytes, list[tuple[str | None, str, str | None, int | None]]]] = [
    (b"data: hello\n\n", [(None, "hello", None, None)]),
    (b"data:hello\n\n", [(None, "hello", None, None)]),
    (b"data:  two spaces\n\n", [(None, " two spaces", None, None)]),
    (b"data: a\r\ndata: b\r\n\r\n", [(None, "a\nb", None, None)]),
    (b"data: a\rdata: b\r\r", [(None, "a\nb", None, None)]),
    (b"data: a\ndata: b\n\n", [(None, "a\nb", None, None)]),
    (b"event: tick\ndata: 1\n\n", [("tick", "1", None, None)]),
    (b"event:\ndata: 1\n\n", [(None, "1", None, None)]),
    (b": comment\ndata: x\n: another\n\n", [(None, "x", None, None)]),
    (b"\xef\xbb\xbfdata: bom\n\n", [(None, "bom", None, None)]),
    (b"id: 5\ndata: x\n\n", [(None, "x", "5", None)]),
    (b"id: a\0b\ndata: x\n\n", [(None, "x", None, None)]),
    (b"retry: 1500\ndata: x\n\n", [(None, "x", None, 1500)]),
    (b"retry: 15x\ndata: x\n\n", [(None, "x", None, None)]),
    (b"retry: -1\ndata: x\n\n", [(None, "x", None, None)]),
    (b"retry: " + b"9" * 400 + b"\ndata: x\n\n", [(None, "x", None, MAX_RETRY)]),
    (b"retry: " + b"9" * 5000 + b"\ndata: x\n\n", [(None, "x", None, MAX_RETRY)]),
    (b"retry: " + b"0" * 5000 + b"12\ndata: x\n\n", [(None, "x", None, 12)]),
    (b"retry: 2147483648\ndata: x\n\n", [(None, "x", None, MAX_RETRY)]),
    (b"id: evt-1 \ndata: x\n\n", [(None, "x", "evt-1 ", None)]),
    (b"id:   two\ndata: x\n\n", [(None, "x", "  two", None)]),
    (b"id: a\x0bb\x0cc\ndata: x\n\n", [(None, "x", "a\x0bb\x0cc", None)]),
    (b"event: only\n\n", []),
    (b"data: no blank line at the end\n", []),
    (b"data\n\n", [(None, "", None, None)]),
    (b"data:\ndata:\n\n", [(None, "\n", None, None)]),
    (b"unknown: field\ndata: y\n\n", [(None, "y", None, None)]),
    (b"data: \xff\xfe\n\n", [(None, "\ufffd\ufffd", None, None)]),
    (b"data: nul\0inside\n\n", [(None, "nul\0inside", None, None)]),
    (b"event: a\0b\ndata: x\n\n", [(None, "x", None, None)]),
    (b"data: 1\n\ndata: 2\n\n", [(None, "1", None, None), (None, "2", None, None)]),
    (b"data: a:b:c\n\n", [(None, "a:b:c", None, None)]),
]


@pytest.mark.parametrize(("wire", "expected"), DECODE_CASES)
@pytest.mark.parametrize("chunk", [None, 1, 2, 3])
def test_decode(
    wire: bytes, expected: list[tuple[str | None, str, str | None, int | None]], chunk: int | None
) -> None:
    events = decode_all(wire, chunk=chunk)
    assert [(e.event, e.text, e.id, e.retry) for e in events] == expected


def test_decoder_reports_need_data_until_blank_line() -> None:
    decoder = SSEDecoder()
    for byte in b"data: x\n":
        decoder.feed(bytes([byte]))
        assert decoder.next_event() is NEED_DATA
    decoder.feed(b"\n")
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert event.text == "x"
    assert decoder.next_event() is NEED_DATA


def test_decoder_crlf_split_across_chunks_is_one_line_end() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\r")
    decoder.feed(b"\ndata: b\r")
    decoder.feed(b"\n\r")
    decoder.feed(b"\n")
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert event.text == "a\nb"
    assert decoder.next_event() is NEED_DATA


def test_decoder_keeps_last_event_id_and_retry_like_a_browser() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\nretry: 10\ndata: a\n\ndata: b\n\nid\ndata: c\n\n")
    first, second, third = (decoder.next_event() for _ in range(3))
    assert first is not NEED_DATA
    assert second is not NEED_DATA
    assert third is not NEED_DATA
    assert (first.id, second.id, third.id) == ("1", None, "")
    assert decoder.last_event_id == ""
    assert decoder.retry == 10


def test_bom_only_skipped_at_start() -> None:
    events = decode_all(b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n")
    assert [e.text for e in events] == ["1"]  # "\ufeffdata" is an unknown field


def test_utf8_split_across_chunks() -> None:
    wire = encode(ServerSentEvent(data={"emoji": "\U0001f600é"}))
    events = decode_all(wire, chunk=1)
    assert events[0].json() == {"emoji": "\U0001f600é"}


field_text = st.text(st.characters(exclude_characters="\r\n\0", codec="utf-8"))
names = field_text.filter(bool)
# Ids a client can send back in Last-Event-ID: no control character but a tab, none at the ends.
_controls = "".join(chr(c) for c in [*range(9), *range(10, 32), 127])
event_ids = st.text(st.characters(exclude_characters=_controls, codec="utf-8")).map(lambda t: t.strip(" \t"))
texts = st.text(st.characters(exclude_characters="\r", codec="utf-8"))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


@given(
    event=st.none() | names,
    id_=st.none() | event_ids,
    retry=st.none() | st.integers(min_value=0, max_value=MAX_RETRY),
    text=texts,
    chunk=st.integers(min_value=1, max_value=64),
)
def test_round_trip_text(
    event: str | None, id_: str | None, retry: int | None, text: str, chunk: int
) -> None:
    original = ServerSentEvent(event=event, id=id_, retry=retry, text=text)
    (decoded,) = decode_all(encode(original), chunk=chunk)
    assert decoded == original


@given(event=st.none() | names, data=json_values)
def test_round_trip_json(event: str | None, data: Any) -> None:
    original = ServerSentEvent(event=event, data=data)
    wire = encode(original)
    (decoded,) = decode_all(wire)
    assert decoded.event == event
    assert decoded.json() == json.loads(json.dumps(data))
    assert encode(ServerSentEvent(event=event, text=decoded.text)) == wire


@given(
    st.lists(st.builds(ServerSentEvent, event=st.none() | names, text=texts), max_size=8), st.integers(1, 7)
)
def test_round_trip_sequence(events: list[ServerSentEvent], chunk: int) -> None:
    wire = b"".join(encode(e) for e in events)
    assert decode_all(wire, chunk=chunk) == events


# last_event_id follows the WHATWG "dispatch the event" steps: the id buffer is
# set by an ``id:`` line, the last event ID string only when a blank line ends
# the event (even one without data), and the bytes after the last blank line
# are discarded at the end of the stream.

CUT_INSIDE = b"data: a\nid: 1\n\ndata: b\nid: 2\n"


def test_last_event_id_ignores_an_event_cut_before_its_blank_line() -> None:
    decoder = SSEDecoder()
    decoder.feed(CUT_INSIDE)
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert (event.text, event.id) == ("a", "1")
    assert decoder.next_event() is NEED_DATA
    assert decoder.last_event_id == "1"


def test_last_event_id_byte_at_a_time_moves_only_on_blank_lines() -> None:
    wire = b"data: a\nid: 1\n\nid: 2\ndata: b\n\ndata: c\nid: 3\n"
    decoder = SSEDecoder()
    seen: list[str] = []
    for byte in wire:
        decoder.feed(bytes([byte]))
        while decoder.next_event() is not NEED_DATA:
            pass
        seen.append(decoder.last_event_id)
    first_blank = wire.index(b"\n\n") + 1
    second_blank = wire.index(b"\n\n", first_blank + 1) + 1
    assert set(seen[:first_blank]) == {""}
    assert set(seen[first_blank:second_blank]) == {"1"}
    assert set(seen[second_blank:]) == {"2"}  # "3" never ended


def test_an_id_only_event_moves_last_event_id_without_dispatching() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: a\nid: 1\n\nid: 2\n\n")
    assert decoder.next_event() is not NEED_DATA
    assert decoder.next_event() is NEED_DATA
    assert decoder.last_event_id == "2"


def test_an_event_without_id_keeps_the_previous_id() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [decoder.next_event(), decoder.next_event(), decoder.next_event()][2] is NEED_DATA
    assert decoder.last_event_id == "1"
    decoder.feed(b"id:\ndata: c\n\n")  # an empty id resets it
    assert decoder.next_event() is not NEED_DATA
    assert decoder.last_event_id == ""


def test_last_event_id_moves_as_events_are_taken_not_as_they_arrive() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\ndata: a\n\nid: 2\n\ndata: b\n\nid: 3\ndata: c\n\nid: 4\n\n")
    assert decoder.last_event_id == ""  # nothing taken yet
    taken: list[tuple[str | None, str]] = []
    while (event := decoder.next_event()) is not NEED_DATA:
        taken.append((event.text, decoder.last_event_id))
    # "b" has no id of its own: a browser reports the id before it, "2".
    assert taken == [("a", "1"), ("b", "2"), ("c", "3")]
    assert decoder.last_event_id == "4"


def test_blank_lines_without_events_queue_nothing() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\n" + b"\n" * 10_000)
    assert len(decoder._ready) == 1
    assert decoder.next_event() is NEED_DATA
    assert decoder.last_event_id == "1"


def test_a_decoder_for_a_reconnection_starts_from_the_id_it_sent() -> None:
    decoder = SSEDecoder(last_event_id="7")
    decoder.feed(b"data: a\n\n")
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert event.id is None
    assert decoder.last_event_id == "7"
    decoder.feed(b"id: 8\ndata: b\n")
    assert decoder.last_event_id == "7"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_a_starting_id_with_line_breaks_or_nul_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="last_event_id"):
        SSEDecoder(last_event_id=bad)
    with pytest.raises(TypeError, match="last_event_id"):
        SSEDecoder(last_event_id=b"1")  # type: ignore[arg-type]


def _expected_last_id(events: list[ServerSentEvent], ended: int) -> str:
    last = ""
    for event in events[:ended]:
        if event.id is not None:
            last = event.id
    return last


@given(
    st.lists(
        st.builds(ServerSentEvent, text=texts, id=st.none() | event_ids),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_last_event_id_is_the_id_of_the_last_event_received_whole(
    events: list[ServerSentEvent], data: st.DataObject
) -> None:
    wire = b"".join(encode(e) for e in events)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire)), label="cut")
    chunk = data.draw(st.integers(min_value=1, max_value=16), label="chunk")
    decoder = SSEDecoder()
    received: list[ServerSentEvent] = []
    for start in range(0, cut, chunk):
        decoder.feed(wire[start : min(start + chunk, cut)])
        while (event := decoder.next_event()) is not NEED_DATA:
            received.append(event)
    assert received == events[: len(received)]
    assert decoder.last_event_id == _expected_last_id(events, len(received))
    # A reconnection sending that id and getting the rest of the events loses none.
    resumed = SSEDecoder(last_event_id=decoder.last_event_id)
    rest = b"".join(encode(e) for e in events[len(received) :])
    resumed.feed(rest)
    while (event := resumed.next_event()) is not NEED_DATA:
        received.append(event)
    assert received == events
    assert resumed.last_event_id == _expected_last_id(events, len(events))


_pieces = st.sampled_from(
    [
        *(b"data: ", b"data:", b"id: ", b"id: 7", b"event: e", b"retry: 5", b":c", b"x"),
        *(b"\r", b"\n", b"\r\n", b"\xc3\xa9", b"\xef\xbb\xbf", b"\x00"),
    ]
)


def _decode_in_pieces(
    wire: bytes, cuts: list[int]
) -> tuple[list[ServerSentEvent], list[str], int, int | None]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    ids: list[str] = []
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    for start, end in itertools.pairwise(bounds):
        decoder.feed(wire[start:end])
        while (event := decoder.next_event()) is not NEED_DATA:
            events.append(event)
            ids.append(decoder.last_event_id)
    return events, ids, decoder.buffered, decoder.retry


@given(st.lists(_pieces, max_size=40).map(b"".join), st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_decodes_like_one_chunk(wire: bytes, cuts: list[int]) -> None:
    assert _decode_in_pieces(wire, cuts) == _decode_in_pieces(wire, [])


def test_buffered_counts_the_event_being_received() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"data: abc\ndata: de")
    assert decoder.buffered == len("abc") + 24 + len("data: de")  # 24 a data line: what it costs besides
    for _ in range(1000):
        decoder.feed(b"x")
    assert decoder.buffered == len("abc") + 24 + len("data: de") + 1000
    decoder.feed(b"\ndata\ndata:\n")
    assert decoder.buffered == len("abc") + len("de") + 1000 + 4 * 24  # empty lines are not free
    decoder.feed(b"\n\n")
    assert decoder.buffered == 0
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert event.text == "abc\nde" + "x" * 1000 + "\n\n"


def test_a_long_line_in_small_chunks_takes_linear_time() -> None:
    # Joining the pending line on every feed would take minutes for this.
    line = b"data: " + b"x" * 4_000_000 + b"\n\n"
    decoder = SSEDecoder()
    deadline = time.monotonic() + 20  # linear: well under a second; quadratic: minutes
    for start in range(0, len(line), 64):
        decoder.feed(line[start : start + 64])
        assert time.monotonic() < deadline, f"fed {start} bytes"
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert event.text == "x" * 4_000_000


@given(
    zeros=st.integers(min_value=0, max_value=6000),
    value=st.integers(min_value=0, max_value=10**6000),
    chunk=st.integers(min_value=1, max_value=5000),
)
def test_any_retry_is_clamped_and_the_event_beside_it_kept(zeros: int, value: int, chunk: int) -> None:
    """Digits past what int() parses (4300) or a float holds never make feed() raise."""
    digits = "0" * zeros + (str(value) if value.bit_length() < 10_000 else "9" * 3011)
    wire = b"data: before\n\nretry: " + digits.encode() + b"\ndata: beside\n\n"
    events = decode_all(wire, chunk=chunk)
    expected = min(value if value.bit_length() < 10_000 else MAX_RETRY, MAX_RETRY)
    assert [(e.text, e.retry) for e in events] == [("before", None), ("beside", expected)]


@given(st.text(st.characters(exclude_characters="\r\n\0", codec="utf-8")))
def test_any_received_id_is_kept_as_sent_and_checked_like_an_event_id(id_: str) -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: " + id_.encode() + b"\ndata: x\n\n")
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert (event.id, decoder.last_event_id) == (id_, id_)
    assert encode(event) == b"data: x\nid: " + id_.encode() + b"\n\n"
    if header_problem(id_) is None:
        assert ServerSentEvent(text="x", id=id_) == event
    else:
        with pytest.raises(ValueError, match="Last-Event-ID header"):
            ServerSentEvent(text="x", id=id_)
