"""Disco wire format (toolkit/codec/disco.py): golden vectors, Tailscale's parse rules, Hypothesis."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import VECTORS
from toolkit.codec import disco
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, DecodeError, TruncatedError, UnknownTypeError
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey, TxID

VECTOR_FILE = json.loads((VECTORS / "disco.json").read_text())
TXID = TxID(bytes(range(1, 13)))


def _key(extra: int | None = None) -> bytes:
    """Tailscale's fixture key K: byte1=01 byte2=02 byte30=1e byte31=1f; ``extra`` also sets byte extra=extra."""
    raw = bytearray(32)
    for i in (1, 2, 30, 31) if extra is None else (1, 2, 30, 31, extra):
        raw[i] = i
    return bytes(raw)


K = DiscoPublicKey(_key())
CD0 = DiscoPublicKey(_key(3))
CD1 = DiscoPublicKey(_key(4))
RELAY_EPS = (Endpoint.parse("1.2.3.4:567"), Endpoint.parse("[2001::3456]:789"))
RELAY_FIELDS: dict[str, Any] = {
    "server_disco": K,
    "client_disco": (CD0, CD1),
    "lamport_id": 123,
    "vni": 456,
    "bind_lifetime_ns": 1_000_000_000,
    "steady_state_lifetime_ns": 60_000_000_000,
    "endpoints": RELAY_EPS,
}
SOURCE = "Tailscale disco/disco_test.go TestMarshalAndParse (protocols.md §1.3)"
# The relay vectors of protocols.md §1.3, not in vectors/disco.json: (name, message, plaintext hex as in the source).
RELAY_VECTORS = [
    (
        "bind_udp_relay_endpoint",
        disco.BindUDPRelayEndpoint(1, 2, K, bytes(range(32))),
        (
            "04 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
            "00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d "
            "1e 1f"
        ),
    ),
    (
        "bind_udp_relay_endpoint_challenge",
        disco.BindUDPRelayEndpointChallenge(1, 2, K, bytes(range(32))),
        (
            "05 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
            "00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d "
            "1e 1f"
        ),
    ),
    (
        "bind_udp_relay_endpoint_answer",
        disco.BindUDPRelayEndpointAnswer(1, 2, K, bytes(range(32))),
        (
            "06 00 00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
            "00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d "
            "1e 1f"
        ),
    ),
    (
        "call_me_maybe_via",
        disco.CallMeMaybeVia(**RELAY_FIELDS),
        (
            "07 00 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 "
            "02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 00 04 00 "
            "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 00 00 00 00 7b 00 00 "
            "01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 58 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 "
            "20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15"
        ),
    ),
    (
        "allocate_udp_relay_endpoint_request",
        disco.AllocateUDPRelayEndpointRequest((CD0, CD1), 1),
        (
            "08 00 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 "
            "02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 01"
        ),
    ),
    (
        "allocate_udp_relay_endpoint_response",
        disco.AllocateUDPRelayEndpointResponse(1, **RELAY_FIELDS),
        (
            "09 00 00 00 00 01 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 "
            "1e 1f 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 "
            "02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 00 00 00 "
            "00 7b 00 00 01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 58 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 "
            "03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15"
        ),
    ),
]


def _expected(case: dict[str, Any]) -> disco.Message:
    txid = TxID(bytes.fromhex(case.get("txid", "00" * 12)))
    if case["type"] == "Ping":
        nk = NodePublicKey(bytes.fromhex(case["node_key"])) if case["node_key"] else None
        return disco.Ping(txid, nk, case["padding"])
    if case["type"] == "Pong":
        return disco.Pong(txid, Endpoint.parse(case["src"]))
    assert case["type"] == "CallMeMaybe"
    return disco.CallMeMaybe(tuple(Endpoint.parse(e) for e in case["endpoints"]))


@pytest.mark.parametrize("case", VECTOR_FILE["cases"], ids=[c["name"] for c in VECTOR_FILE["cases"]])
def test_golden_vector(case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["hex"])
    msg = disco.decode_message(raw)
    assert msg == _expected(case)
    assert msg.encode() == raw


@pytest.mark.parametrize(("name", "msg", "hexstr"), RELAY_VECTORS, ids=[v[0] for v in RELAY_VECTORS])
def test_relay_vector(name: str, msg: disco.Message, hexstr: str) -> None:
    raw = bytes.fromhex(hexstr.replace(" ", ""))
    assert msg.encode() == raw, SOURCE
    assert disco.decode_message(raw) == msg, SOURCE


def test_relay_vector_sizes() -> None:
    sizes = {name: len(bytes.fromhex(h.replace(" ", ""))) for name, _, h in RELAY_VECTORS}
    assert sizes["bind_udp_relay_endpoint"] == 2 + disco.BIND_COMMON_LEN == 74
    assert sizes["call_me_maybe_via"] == 2 + 124 + 2 * 18
    assert sizes["allocate_udp_relay_endpoint_request"] == 2 + disco.ALLOC_REQUEST_LEN == 70
    assert sizes["allocate_udp_relay_endpoint_response"] == 2 + 128 + 2 * 18


def test_constants() -> None:
    assert disco.MAGIC == "TS💬".encode()
    assert (disco.HEADER_LEN, disco.WRAPPER_MIN_LEN, disco.PING_LEN, disco.PONG_LEN) == (38, 62, 44, 30)
    assert (disco.EP_LEN, disco.MESSAGE_HEADER_LEN, disco.PING_PACKET_SIZE, disco.PONG_PACKET_SIZE) == (18, 2, 124, 110)
    assert disco.CALL_ME_MAYBE_PACKET_BASE == 80


# Tailscale's parse rules (disco/disco.go; protocols.md §1.2)


def test_ping_key_then_padding() -> None:
    nk = NodePublicKey(_key())
    payload = TXID.raw + nk.raw + b"\x07" * 5  # padding bytes need not be zero to be counted
    assert disco.decode_message(b"\x01\x00" + payload) == disco.Ping(TXID, nk, 5)
    # 31 bytes after the TxID are too short for a key: all padding
    assert disco.decode_message(b"\x01\x00" + TXID.raw + bytes(31)) == disco.Ping(TXID, None, 31)


def test_ping_zero_key_is_no_key() -> None:
    assert disco.Ping(TXID, NodePublicKey(bytes(32))).node_key is None
    m = disco.Ping(TXID, None, 40)
    assert disco.decode_message(m.encode()) == m


@pytest.mark.parametrize("version", [1, 0xFF])
def test_version_ignored_for_ping_pong_bind(version: int) -> None:
    for msg in (disco.Ping(TXID), disco.Pong(TXID, Endpoint.parse("2.3.4.5:1234")), RELAY_VECTORS[0][1]):
        raw = bytearray(msg.encode())
        raw[1] = version
        assert disco.decode_message(bytes(raw)) == msg


@pytest.mark.parametrize(
    "payload",
    [b"", bytes(17), bytes(19), bytes(36) + b"\x01"],
    ids=["empty", "17-bytes", "19-bytes", "37-bytes"],
)
def test_call_me_maybe_bad_length_is_empty_not_error(payload: bytes) -> None:
    assert disco.decode_message(b"\x03\x00" + payload) == disco.CallMeMaybe(())


def test_call_me_maybe_other_version_is_empty() -> None:
    good = disco.CallMeMaybe(RELAY_EPS).encode()
    assert disco.decode_message(b"\x03\x01" + good[2:]) == disco.CallMeMaybe(())


@pytest.mark.parametrize(
    "name", ["call_me_maybe_via", "allocate_udp_relay_endpoint_request", "allocate_udp_relay_endpoint_response"]
)
def test_relay_messages_other_version_rejected(name: str) -> None:
    msg = next(m for n, m, _ in RELAY_VECTORS if n == name)
    raw = bytearray(msg.encode())
    raw[1] = 1
    with pytest.raises(BadMagicError):
        disco.decode_message(bytes(raw))


def test_trailing_bytes_ignored_where_tailscale_ignores_them() -> None:
    pong = disco.Pong(TXID, Endpoint.parse("[fed0::12]:6666"))
    assert disco.decode_message(pong.encode() + b"future") == pong
    bind = RELAY_VECTORS[0][1]
    assert disco.decode_message(bind.encode() + b"\x01\x02") == bind
    req = disco.AllocateUDPRelayEndpointRequest((CD0, CD1), 7)
    assert disco.decode_message(req.encode() + b"\xff") == req


def test_relay_endpoint_partial_trailer_rejected() -> None:
    via = disco.CallMeMaybeVia(**RELAY_FIELDS).encode()
    with pytest.raises(BadLengthError):
        disco.decode_message(via + b"\x00")
    with pytest.raises(TruncatedError):  # N = 0: Tailscale's decode wants at least one endpoint
        disco.decode_message(via[: 2 + disco.RELAY_ENDPOINT_FIXED_LEN])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (b"\x01", TruncatedError),
        (b"\x01\x00" + bytes(11), TruncatedError),
        (b"\x02\x00" + bytes(29), TruncatedError),
        (b"\x04\x00" + bytes(71), TruncatedError),
        (b"\x08\x00" + bytes(67), TruncatedError),
        (b"\x09\x00\x00", TruncatedError),
        (b"\x00\x00", UnknownTypeError),
        (b"\x0a\x00" + bytes(100), UnknownTypeError),
        (b"\xff\x00", UnknownTypeError),
    ],
)
def test_decode_errors(raw: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        disco.decode_message(raw)


def test_summaries() -> None:
    assert disco.Ping(TXID, NodePublicKey(_key())).summary() == "disco Ping tx=0102.. nodekey:00010200.."
    assert disco.Pong(TXID, Endpoint.parse("2.3.4.5:1234")).summary() == "disco Pong tx=0102.. src=2.3.4.5:1234"
    assert disco.CallMeMaybe(RELAY_EPS).summary() == "disco CallMeMaybe 2 endpoints"
    assert disco.CallMeMaybe(RELAY_EPS[:1]).summary() == "disco CallMeMaybe 1 endpoint"
    assert "padding=3" in disco.Ping(TXID, None, 3).summary()
    for _, msg, _ in RELAY_VECTORS:
        assert msg.summary().startswith(f"disco {type(msg).__name__} ")


def test_bad_field_values() -> None:
    with pytest.raises(BadValueError):
        disco.Ping(TXID, padding=-1)
    with pytest.raises(BadValueError):
        disco.BindUDPRelayEndpoint(2**32, 0, K)
    with pytest.raises(BadValueError):
        disco.BindUDPRelayEndpoint(1, 0, K, b"short")
    with pytest.raises(BadValueError):
        disco.CallMeMaybeVia(**{**RELAY_FIELDS, "endpoints": ()})


# The wrapper (protocols.md §1.1)


def test_wrapper_round_trip_and_layout() -> None:
    w = disco.Wrapper(K, bytes(range(24)), bytes(16) + b"ct")
    raw = w.encode()
    assert raw[:6] == disco.MAGIC and raw[6:38] == K.raw and raw[38:62] == bytes(range(24))
    assert w.sealed == raw[38:]
    assert disco.decode_wrapper(raw) == w
    assert disco.looks_like_disco(raw)


def test_wrapper_rules() -> None:
    header = disco.MAGIC + K.raw
    assert disco.looks_like_disco(header)  # magicsock needs only 38 bytes
    assert not disco.looks_like_disco(header[:-1])
    assert not disco.looks_like_disco(b"TS\xf0\x9f\x92\xad" + K.raw)
    with pytest.raises(TruncatedError):  # but a wrapper needs 62 + a 16-byte tag
        disco.decode_wrapper(header + bytes(24 + 15))
    with pytest.raises(BadMagicError):
        disco.decode_wrapper(b"\x01\x00\x00\x00" + bytes(100))
    with pytest.raises(TruncatedError):
        disco.decode_wrapper(b"TS")


# Hypothesis

keys32 = st.binary(min_size=32, max_size=32)
disco_keys = keys32.map(DiscoPublicKey)
txids = st.binary(min_size=12, max_size=12).map(TxID)
endpoints = st.builds(
    Endpoint, st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.integers(min_value=0, max_value=0xFFFF)
)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
u64 = st.integers(min_value=0, max_value=2**64 - 1)
relay_bodies = st.fixed_dictionaries(
    {
        "server_disco": disco_keys,
        "client_disco": st.tuples(disco_keys, disco_keys),
        "lamport_id": u64,
        "vni": u32,
        "bind_lifetime_ns": u64,
        "steady_state_lifetime_ns": u64,
        "endpoints": st.lists(endpoints, min_size=1, max_size=5).map(tuple),
    }
)
_bind_types = st.sampled_from(
    [disco.BindUDPRelayEndpoint, disco.BindUDPRelayEndpointChallenge, disco.BindUDPRelayEndpointAnswer]
)
messages: st.SearchStrategy[disco.Message] = st.one_of(
    st.builds(disco.Ping, txids, st.none() | keys32.map(NodePublicKey), st.integers(min_value=0, max_value=1500)),
    st.builds(disco.Pong, txids, endpoints),
    st.builds(disco.CallMeMaybe, st.lists(endpoints, max_size=6).map(tuple)),
    st.tuples(_bind_types, u32, u32, disco_keys, st.binary(min_size=32, max_size=32)).map(lambda t: t[0](*t[1:])),
    relay_bodies.map(lambda b: disco.CallMeMaybeVia(**b)),
    st.builds(disco.AllocateUDPRelayEndpointRequest, st.tuples(disco_keys, disco_keys), u32),
    st.tuples(u32, relay_bodies).map(lambda t: disco.AllocateUDPRelayEndpointResponse(t[0], **t[1])),
)


@settings(max_examples=400)
@given(messages)
def test_round_trip(msg: disco.Message) -> None:
    raw = msg.encode()
    assert raw[0] == msg.TYPE and raw[1] == 0
    assert disco.decode_message(raw) == msg


@settings(max_examples=400)
@given(
    st.binary(max_size=300)
    | st.integers(min_value=0, max_value=12).flatmap(lambda t: st.binary(max_size=200).map(lambda b: bytes([t, 0]) + b))
)
def test_decode_message_raises_only_decode_error(data: bytes) -> None:
    try:
        msg = disco.decode_message(data)
    except DecodeError:
        return
    assert isinstance(msg.encode(), bytes)


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.binary(max_size=120).map(lambda b: disco.MAGIC + b))
def test_decode_wrapper_raises_only_decode_error(data: bytes) -> None:
    try:
        w = disco.decode_wrapper(data)
    except DecodeError:
        assert len(data) < 78 or data[:6] != disco.MAGIC
        return
    assert w.encode() == data
