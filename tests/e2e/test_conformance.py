"""The encoder against JavaScript's own JSON.stringify (Node), and round trips through the decoder.

The JavaScript library sends ``JSON.stringify(event.data)``; these tests hand
the same values to a real Node process and compare the bytes. Skipped when
Node is missing, except under CI, where that fails the run.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstream import NEED_DATA, ServerSentEvent, SSEDecoder, encode

# Reads one JSON text per line (ASCII, with \u escapes) and writes JSON.stringify of it.
_NODE_STRINGIFY = """
const rl = require("readline").createInterface({ input: process.stdin });
rl.on("line", (line) => process.stdout.write(JSON.stringify(JSON.parse(line)) + "\\n"));
"""


class NodeStringify:
    """One long-lived ``node`` process that answers JSON.stringify(value) per line."""

    def __init__(self, node: str) -> None:
        self.process = subprocess.Popen(
            [node, "-e", _NODE_STRINGIFY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def __call__(self, value: Any) -> bytes:
        """JSON.stringify(value) (sent to Node as ASCII JSON: lone surrogates travel as escapes)."""
        return self.restringify(json.dumps(value, ensure_ascii=True).encode("ascii"))

    def restringify(self, json_text: bytes) -> bytes:
        """JSON.stringify(JSON.parse(json_text)): what a JavaScript client makes of ``json_text``."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        assert b"\n" not in json_text
        self.process.stdin.write(json_text + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line.endswith(b"\n"), "node stopped answering"
        return line[:-1]

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self.process.stdout.close()


@pytest.fixture(scope="module")
def node_stringify() -> Iterator[NodeStringify]:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        message = "Node.js is not installed (Debian package nodejs)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    stringify = NodeStringify(node)
    try:
        yield stringify
    finally:
        stringify.close()


def decode_one(wire: bytes) -> ServerSentEvent:
    decoder = SSEDecoder()
    decoder.feed(wire)
    event = decoder.next_event()
    assert event is not NEED_DATA
    assert decoder.next_event() is NEED_DATA
    return event


# Any code point, lone surrogates included: Python strings can hold them, JSON can escape them.
any_text = st.text(st.characters(), max_size=12)
any_number = st.integers() | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | any_number | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
# Where the bytes can be identical: JavaScript puts keys that are array indices ("0")
# first in objects, writes 1.0 as 1 and 1e16 as 10000000000000000, and rounds
# integers beyond 2**53. Python keeps insertion order and its own number forms:
# the same values once parsed (test_a_javascript_client_reads_the_same_value).
safe_ints = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
non_index_keys = any_text.filter(lambda key: not key.isdigit())
byte_identical_values = st.recursive(
    st.none() | st.booleans() | safe_ints | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(non_index_keys, children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=byte_identical_values)
def test_data_is_sent_as_json_stringify_writes_it(node_stringify: NodeStringify, data: Any) -> None:
    event = ServerSentEvent(event="message", data=data)
    assert encode(event) == b"event: message\ndata: " + node_stringify(data) + b"\n\n"
    assert event.payload.encode("utf-8") == node_stringify(data)


@settings(max_examples=300, deadline=None)
@given(data=json_values)
def test_a_javascript_client_reads_the_same_value(node_stringify: NodeStringify, data: Any) -> None:
    wire = encode(ServerSentEvent(data=data))
    assert wire.startswith(b"data: ")
    assert wire.endswith(b"\n\n")
    assert wire.count(b"\n") == 2
    assert node_stringify.restringify(wire[len(b"data: ") : -2]) == node_stringify(data)


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (None, b"data: null\n\n"),
        ([None], b"data: [null]\n\n"),
        ("\ud800", b'data: "\\ud800"\n\n'),
        ({"k\udfff": "a\udc00b"}, b'data: {"k\\udfff":"a\\udc00b"}\n\n'),
        # A surrogate pair held as two code points is the character it encodes, as in JavaScript.
        ("\ud83d\ude00", 'data: "\U0001f600"\n\n'.encode()),
        ("\ude00\ud83d", b'data: "\\ude00\\ud83d"\n\n'),
    ],
)
def test_null_and_surrogates(data: Any, wire: bytes) -> None:
    assert encode(ServerSentEvent(data=data)) == wire


def test_no_data_is_one_empty_data_line() -> None:
    # The wire bytes of stream-open and keep-alive, as the JavaScript library sends them.
    assert encode(ServerSentEvent(event="stream-open")) == b"event: stream-open\ndata: \n\n"
    assert encode(ServerSentEvent(event="keep-alive")) == b"event: keep-alive\ndata: \n\n"
    assert ServerSentEvent(event="x").payload == ""
    assert ServerSentEvent(event="x") != ServerSentEvent(event="x", data=None)
    assert "data=<no data>" in repr(ServerSentEvent(event="x"))


def test_none_with_text_is_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        ServerSentEvent(data=None, text="x")


@pytest.mark.parametrize("field", ["event", "id", "text"])
@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "\ud83d\ude00"])
def test_surrogates_outside_data_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=f"{field} contains a surrogate code point"):
        ServerSentEvent(**{field: value})  # type: ignore[arg-type]


@given(data=json_values)
def test_round_trip_through_the_decoder(data: Any) -> None:
    event = ServerSentEvent(event="m", data=data, id="7")
    decoded = decode_one(encode(event))
    assert decoded.text == event.payload
    # JSON.parse on the client gives back the value, lone surrogates included;
    # a pair held as two code points comes back as the one character it encodes.
    assert decoded.json() == json.loads(json.dumps(data))
    assert decoded.json() == event.json() or _has_pair(data)
    # Re-encoding what the client received gives the same bytes: encode-once is stable.
    assert encode(ServerSentEvent(event="m", text=decoded.text, id="7")) == encode(event)


def _has_pair(value: Any) -> bool:
    if isinstance(value, str):
        pairs = itertools.pairwise(value)
        return any("\ud800" <= a <= "\udbff" and "\udc00" <= b <= "\udfff" for a, b in pairs)
    if isinstance(value, list):
        return any(_has_pair(item) for item in value)
    if isinstance(value, dict):
        return any(_has_pair(key) or _has_pair(item) for key, item in value.items())
    return False
