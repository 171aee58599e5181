"""Trace records <-> JSON lines: exact round trips, strict readers that raise only DecodeError."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import BadValueError, DecodeError
from toolkit.sansio.peergraph import NEXT, State, transition
from toolkit.sansio.trace import TRACE_KINDS, TraceRecord
from toolkit.sansio.tracejson import dumps_line, parse_line, record_from_json, record_to_json
from toolkit.types import DiscoPublicKey, Endpoint, Key32, NodePublicKey

keys = st.one_of(
    st.none(),
    st.binary(min_size=32, max_size=32).map(NodePublicKey),
    st.binary(min_size=32, max_size=32).map(DiscoPublicKey),
    st.binary(min_size=32, max_size=32).map(Key32),
)
ips = st.one_of(
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address),
)
endpoints = st.one_of(st.none(), st.builds(Endpoint, ips, st.integers(0, 65535)))
records = st.builds(
    TraceRecord,
    at=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
    node=st.text(max_size=20),
    peer=keys,
    kind=st.sampled_from(TRACE_KINDS),
    detail=st.text(max_size=80),
    reason=st.one_of(st.none(), st.text(max_size=20)),
    raw=st.binary(max_size=200),
    endpoint=endpoints,
)


@settings(max_examples=300)
@given(records)
def test_round_trip_is_exact(record: TraceRecord) -> None:
    line = dumps_line(record)
    assert line.endswith("\n") and "\n" not in line[:-1], "one record is one line"
    back = parse_line(line)
    assert back == record
    assert type(back.peer) is type(record.peer)
    assert back.raw == record.raw
    assert record_from_json(record_to_json(record)) == record


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_parse_line_raises_only_decode_errors(junk: str | bytes) -> None:
    try:
        parse_line(junk)
    except DecodeError:
        pass


field_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.lists(st.integers(), max_size=2)
)


@settings(max_examples=300)
@given(st.sampled_from(["at", "node", "peer", "kind", "detail", "reason", "endpoint", "raw"]), field_values)
def test_any_field_value_is_read_or_refused_with_decode_error(name: str, value: object) -> None:
    obj = record_to_json(TraceRecord(1.5, "alice", None, "sent", "Ping", raw=b"\x01"))
    obj[name] = value
    try:
        record = record_from_json(obj)
    except DecodeError:
        return
    assert isinstance(record, TraceRecord)


def test_format_fields_and_transition_record() -> None:
    peer = NodePublicKey(bytes(range(32)))
    record = transition(State.Start, NEXT).record(3.25, "alice", peer)
    obj = json.loads(dumps_line(record))
    assert sorted(obj) == sorted(["at", "node", "peer", "kind", "detail", "reason", "endpoint", "raw"])
    assert obj["peer"] == "nodekey:" + bytes(range(32)).hex()
    assert obj["kind"] == "transition" and obj["raw"] == "" and obj["endpoint"] is None
    assert parse_line(json.dumps(obj)) == record


def test_raw_is_base64_and_endpoint_text() -> None:
    record = TraceRecord(0.5, "bob", None, "received", "STUN", raw=b"\xff\x00abc", endpoint=Endpoint.parse("[::1]:7"))
    obj = record_to_json(record)
    assert obj["raw"] == "/wBhYmM=" and obj["endpoint"] == "[::1]:7"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "exploded", "'kind'"),
        ("peer", "privkey:" + "00" * 32, "'peer'"),
        ("peer", "nodekey:" + "zz" * 32, "'peer'"),
        ("raw", "not base64!", "'raw'"),
        ("endpoint", "1.2.3.4", "'endpoint'"),
        ("at", "soon", "'at'"),
        ("node", None, "'node'"),
    ],
)
def test_bad_fields_are_named(field: str, value: object, message: str) -> None:
    obj = record_to_json(TraceRecord(1.0, "alice", None, "sent", "Ping"))
    obj[field] = value
    with pytest.raises(BadValueError, match=message):
        record_from_json(obj)


def test_not_an_object() -> None:
    with pytest.raises(BadValueError, match="not a JSON object"):
        parse_line("[1, 2]")
    with pytest.raises(BadValueError, match="not JSON"):
        parse_line("{")
