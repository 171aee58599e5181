"""STUN codec against independent implementations: aioice's codec (in memory) and coturn (over UDP).

aioice (PyPI) parses what natkit encodes and natkit parses what aioice encodes, including aioice's
MESSAGE-INTEGRITY and FINGERPRINT. coturn (Debian ``turnserver``) runs on 127.0.0.1 (and 127.0.0.2
for RFC 5780 behaviour discovery) and answers natkit's requests from real UDP sockets.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aioice import stun as ai
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.coturn import Coturn, exchange, start_coturn
from toolkit.codec import stun
from toolkit.codec.stun import (
    ChangedAddress,
    ChangeRequest,
    Class,
    ErrorCode,
    Fingerprint,
    IceControlled,
    IceControlling,
    Lifetime,
    MappedAddress,
    Message,
    Method,
    Nonce,
    OtherAddress,
    Priority,
    Realm,
    ResponseOrigin,
    Software,
    SourceAddress,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
    XorRelayedAddress,
)
from toolkit.types import Endpoint, TxID

txids = st.binary(min_size=12, max_size=12).map(TxID)
ports = st.integers(0, 0xFFFF)
endpoints = st.one_of(
    st.builds(Endpoint, st.ip_addresses(v=4), ports), st.builds(Endpoint, st.ip_addresses(v=6), ports)
)
texts = st.text(st.characters(codec="utf-8"), max_size=30)
u64 = st.integers(0, 2**64 - 1)


def _pair(ep: Endpoint) -> tuple[str, int]:
    return (str(ep.ip), ep.port)


# --- natkit encodes, aioice parses ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(txids, texts, st.integers(0, 2**32 - 1), u64, texts, st.binary(min_size=1, max_size=32))
def test_aioice_parses_natkit_signed_request(
    txid: TxID, user: str, priority: int, tiebreak: int, software: str, key: bytes
) -> None:
    attrs = (Username(user), Priority(priority), IceControlling(tiebreak), UseCandidate(), Software(software))
    data = Message(Class.REQUEST, Method.BINDING, txid, attrs).encode(integrity_key=key, fingerprint=True)
    parsed = ai.parse_message(data)  # aioice checks FINGERPRINT itself and raises on a mismatch
    assert (parsed.message_method, parsed.message_class) == (ai.Method.BINDING, ai.Class.REQUEST)
    assert parsed.transaction_id == txid.raw
    assert parsed.attributes["USERNAME"] == user
    assert parsed.attributes["PRIORITY"] == priority
    assert parsed.attributes["ICE-CONTROLLING"] == tiebreak
    assert "USE-CANDIDATE" in parsed.attributes and parsed.attributes["SOFTWARE"] == software
    assert parsed.attributes["FINGERPRINT"] == stun.decode(data).attributes[-1].crc  # type: ignore[attr-defined]
    assert parsed.check_message_integrity(key)
    assert not parsed.check_message_integrity(key + b"x")


def test_aioice_rejects_natkit_message_with_a_broken_fingerprint() -> None:
    data = bytearray(stun.binding_request(TxID(bytes(12)), software="natkit"))
    ai.parse_message(bytes(data))
    data[-1] ^= 0x10
    with pytest.raises(ValueError, match="fingerprint"):
        ai.parse_message(bytes(data))


@settings(max_examples=100, deadline=None)
@given(txids, endpoints, endpoints, endpoints, texts)
def test_aioice_parses_natkit_binding_response(
    txid: TxID, mapped: Endpoint, origin: Endpoint, other: Endpoint, software: str
) -> None:
    data = stun.binding_response(
        txid, mapped, software=software, response_origin=origin, other_address=other, fingerprint=True
    )
    parsed = ai.parse_message(data)
    assert (parsed.message_method, parsed.message_class) == (ai.Method.BINDING, ai.Class.RESPONSE)
    assert parsed.transaction_id == txid.raw
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == _pair(mapped)
    assert parsed.attributes["RESPONSE-ORIGIN"] == _pair(origin)
    assert parsed.attributes["OTHER-ADDRESS"] == _pair(other)
    assert parsed.attributes["SOFTWARE"] == software


def test_aioice_parses_natkit_error_and_rfc5780_request() -> None:
    txid = TxID(bytes(range(12)))
    attrs = (ErrorCode(401, "Unauthorized"), Realm("example.org"), Nonce("abc123"))
    parsed = ai.parse_message(Message(Class.ERROR, Method.BINDING, txid, attrs).encode())
    assert parsed.message_class == ai.Class.ERROR and parsed.error_code == 401
    assert parsed.attributes["ERROR-CODE"] == (401, "Unauthorized")
    assert parsed.attributes["REALM"] == "example.org" and parsed.attributes["NONCE"] == b"abc123"
    parsed = ai.parse_message(stun.error_response(txid, Method.BINDING, 420, "Unknown Attribute", (0x7FF0,)))
    assert parsed.attributes["ERROR-CODE"] == (420, "Unknown Attribute")
    parsed = ai.parse_message(stun.binding_request(txid, change_ip=True, change_port=True))
    assert parsed.attributes["CHANGE-REQUEST"] == 0x6


def test_aioice_parses_natkit_allocate_response() -> None:
    txid = TxID(bytes(range(12, 24)))
    relayed, mapped = Endpoint.parse("198.51.100.9:50000"), Endpoint.parse("[2001:db8::9]:4000")
    attrs = (XorRelayedAddress(relayed), XorMappedAddress(mapped), Lifetime(600))
    parsed = ai.parse_message(Message(Class.SUCCESS, Method.ALLOCATE, txid, attrs).encode())
    assert (parsed.message_method, parsed.message_class) == (ai.Method.ALLOCATE, ai.Class.RESPONSE)
    assert parsed.attributes["XOR-RELAYED-ADDRESS"] == _pair(relayed)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == _pair(mapped)
    assert parsed.attributes["LIFETIME"] == 600


# --- aioice encodes, natkit parses ---------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(txids, texts, st.integers(0, 2**32 - 1), u64, texts, st.binary(min_size=1, max_size=32))
def test_natkit_parses_aioice_signed_request(
    txid: TxID, user: str, priority: int, tiebreak: int, software: str, key: bytes
) -> None:
    attributes: dict[str, Any] = {
        "USERNAME": user,
        "PRIORITY": priority,
        "ICE-CONTROLLED": tiebreak,
        "USE-CANDIDATE": None,
        "SOFTWARE": software,
    }
    m = ai.Message(ai.Method.BINDING, ai.Class.REQUEST, transaction_id=txid.raw, attributes=attributes)
    m.add_message_integrity(key)  # adds MESSAGE-INTEGRITY, then FINGERPRINT
    data = bytes(m)
    msg = stun.decode(data)
    assert (msg.msg_class, msg.method, msg.txid) == (Class.REQUEST, Method.BINDING, txid)
    assert msg.attributes[:5] == (
        Username(user),
        Priority(priority),
        IceControlled(tiebreak),
        UseCandidate(),
        Software(software),
    )
    assert stun.verify_integrity(data, key) is True
    assert stun.verify_integrity(data, key + b"x") is False
    assert stun.verify_fingerprint(data) is True
    assert msg.encode() == data


@settings(max_examples=100, deadline=None)
@given(txids, endpoints, endpoints, endpoints, endpoints, endpoints)
def test_natkit_parses_aioice_binding_response(
    txid: TxID, xor_mapped: Endpoint, mapped: Endpoint, origin: Endpoint, other: Endpoint, source: Endpoint
) -> None:
    attributes: dict[str, Any] = {
        "XOR-MAPPED-ADDRESS": _pair(xor_mapped),
        "MAPPED-ADDRESS": _pair(mapped),
        "RESPONSE-ORIGIN": _pair(origin),
        "OTHER-ADDRESS": _pair(other),
        "SOURCE-ADDRESS": _pair(source),
        "CHANGED-ADDRESS": _pair(other),
        "SOFTWARE": "aioice",
    }
    m = ai.Message(ai.Method.BINDING, ai.Class.RESPONSE, transaction_id=txid.raw, attributes=attributes)
    m.add_fingerprint()
    data = bytes(m)
    msg = stun.decode(data)
    assert (msg.msg_class, msg.method) == (Class.SUCCESS, Method.BINDING)
    assert msg.attributes[:-1] == (
        XorMappedAddress(xor_mapped),
        MappedAddress(mapped),
        ResponseOrigin(origin),
        OtherAddress(other),
        SourceAddress(source),
        ChangedAddress(other),
        Software("aioice"),
    )
    assert msg.mapped_endpoint == xor_mapped
    assert stun.verify_fingerprint(data) is True
    assert msg.encode() == data


def test_natkit_parses_aioice_long_term_request_and_error() -> None:
    txid = TxID(bytes(range(100, 112)))
    user, realm, password = "alice", "example.org", "s3cret"
    attributes: dict[str, Any] = {
        "USERNAME": user,
        "REALM": realm,
        "NONCE": b"nonce-1",
        "CHANGE-REQUEST": 0x4,
        "XOR-PEER-ADDRESS": ("192.0.2.5", 7000),
    }
    m = ai.Message(ai.Method.ALLOCATE, ai.Class.REQUEST, transaction_id=txid.raw, attributes=attributes)
    key = stun.long_term_key(user, realm, password)
    m.add_message_integrity(key)
    data = bytes(m)
    msg = stun.decode(data)
    assert msg.method == Method.ALLOCATE
    assert msg.get(Realm) == Realm(realm) and msg.get(Nonce) == Nonce("nonce-1")
    assert msg.get(ChangeRequest) == ChangeRequest(change_ip=True, change_port=False)
    assert stun.verify_integrity(data, key) is True and stun.verify_fingerprint(data) is True
    err = ai.Message(
        ai.Method.BINDING, ai.Class.ERROR, transaction_id=txid.raw, attributes={"ERROR-CODE": (438, "Stale Nonce")}
    )
    decoded = stun.decode(bytes(err))
    assert decoded.msg_class == Class.ERROR and decoded.get(ErrorCode) == ErrorCode(438, "Stale Nonce")
    assert decoded.summary() == "STUN Binding Error 438 Stale Nonce"


# --- coturn over UDP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """coturn with one address (plain STUN)."""
    yield from start_coturn(tmp_path_factory.mktemp("coturn"), ("127.0.0.1",))


@pytest.fixture(scope="module")
def coturn5780(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    """coturn with two addresses and two ports: RFC 5780 behaviour discovery."""
    yield from start_coturn(tmp_path_factory.mktemp("coturn5780"), ("127.0.0.1", "127.0.0.2"))


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


def _own(sock: socket.socket) -> Endpoint:
    host, port = sock.getsockname()
    return Endpoint.parse(f"{host}:{port}")


def _check_fingerprint(data: bytes) -> None:
    msg = stun.decode(data)
    if msg.get(Fingerprint) is not None:
        assert stun.verify_fingerprint(data) is True


@pytest.mark.tool
@pytest.mark.parametrize("kind", ["binding_request", "tailnode_request"])
def test_coturn_answers_natkit_request(coturn: Coturn, udp: socket.socket, kind: str) -> None:
    txid = TxID(random.randbytes(12))
    request = (
        stun.tailnode_request(txid) if kind == "tailnode_request" else stun.binding_request(txid, software="natkit")
    )
    data, src = exchange(udp, request, coturn.primary)
    assert src == coturn.primary
    msg = stun.decode(data)
    assert (msg.msg_class, msg.method, msg.txid) == (Class.SUCCESS, Method.BINDING, txid)
    assert msg.mapped_endpoint == _own(udp)
    assert msg.get(XorMappedAddress) == XorMappedAddress(_own(udp))
    assert msg.software is not None and msg.software.startswith("Coturn")
    assert stun.verify_fingerprint(data) is True  # started with --fingerprint
    assert msg.summary().startswith(f"STUN Binding Success  xor-mapped {_own(udp)}")


@pytest.mark.tool
def test_coturn_rejects_unknown_comprehension_required_attribute(coturn: Coturn, udp: socket.socket) -> None:
    txid = TxID(random.randbytes(12))
    request = Message(Class.REQUEST, Method.BINDING, txid, (UnknownAttribute(0x7FF0, b"abcd"),)).encode(
        fingerprint=True
    )
    data, _ = exchange(udp, request, coturn.primary)
    msg = stun.decode(data)
    assert (msg.msg_class, msg.txid) == (Class.ERROR, txid)
    err = msg.get(ErrorCode)
    assert err is not None and err.code == 420
    assert msg.get(UnknownAttributes) == UnknownAttributes((0x7FF0,))
    assert stun.verify_fingerprint(data) is True
    assert msg.summary().startswith("STUN Binding Error 420 Unknown Attribute  unknown-attributes 0x7ff0")


@pytest.mark.tool
def test_coturn_rfc5780_addresses(coturn5780: Coturn, udp: socket.socket) -> None:
    data, src = exchange(udp, stun.binding_request(TxID(random.randbytes(12))), coturn5780.primary)
    assert src == coturn5780.primary
    msg = stun.decode(data)
    assert msg.mapped_endpoint == _own(udp)
    assert msg.get(ResponseOrigin) == ResponseOrigin(Endpoint.parse(f"127.0.0.1:{coturn5780.port}"))
    assert msg.get(OtherAddress) == OtherAddress(Endpoint.parse(f"127.0.0.2:{coturn5780.alt_port}"))
    assert stun.verify_fingerprint(data) is True


@pytest.mark.tool
@pytest.mark.parametrize(("change_ip", "change_port"), [(False, False), (True, False), (False, True), (True, True)])
def test_coturn_rfc5780_change_request(
    coturn5780: Coturn, udp: socket.socket, change_ip: bool, change_port: bool
) -> None:
    request = stun.binding_request(TxID(random.randbytes(12)), change_ip=change_ip, change_port=change_port)
    data, src = exchange(udp, request, coturn5780.primary)
    expected = ("127.0.0.2" if change_ip else "127.0.0.1", coturn5780.alt_port if change_port else coturn5780.port)
    assert src == expected
    msg = stun.decode(data)
    assert msg.get(ResponseOrigin) == ResponseOrigin(Endpoint.parse(f"{expected[0]}:{expected[1]}"))
    assert msg.mapped_endpoint == _own(udp)
    _check_fingerprint(data)  # coturn leaves FINGERPRINT out of answers sent from the other address


@pytest.mark.tool
def test_coturn_rfc5780_response_port_and_padding(coturn5780: Coturn, udp: socket.socket) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        request = stun.binding_request(TxID(random.randbytes(12)), response_port=_own(other).port)
        data, _ = exchange(udp, request, coturn5780.primary, rsock=other)
    msg = stun.decode(data)
    assert msg.mapped_endpoint == _own(udp)  # the request's source, though the answer went to RESPONSE-PORT
    request = stun.binding_request(TxID(random.randbytes(12)), padding=100)
    data, _ = exchange(udp, request, coturn5780.primary)
    msg = stun.decode(data)
    assert msg.mapped_endpoint == _own(udp)
    _check_fingerprint(data)
