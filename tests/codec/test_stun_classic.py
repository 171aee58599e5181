"""Classic RFC 3489 messages in the STUN codec (toolkit/codec/stun.py: decode_classic, encode_classic).

RFC 3489 §11.1 has a 16-byte transaction id where RFC 5389 put the magic cookie; the codec reads such a
message by putting the cookie in and writes it by taking the cookie out. The request bytes below were
captured from Debian's ``stun`` client (stund 0.97); tests/services/test_stunserver.py runs the client
itself against natkit's server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import stun
from toolkit.codec.stun import (
    ChangedAddress,
    ChangeRequest,
    Class,
    ErrorCode,
    MappedAddress,
    Message,
    Method,
    SourceAddress,
    UnknownAttributes,
)
from toolkit.errors import BadValueError, DecodeError, TruncatedError
from toolkit.types import Endpoint, TxID

# Debian's `stun` Test I request: type 0x0001, length 8, a 16-byte transaction id, CHANGE-REQUEST 0
STUND_TEST1 = bytes.fromhex("0001000801ff93545268f8066006843eba1a6d660003000400000000")
TXID16 = STUND_TEST1[4:20]
CLIENT, A, B = Endpoint.parse("1.2.3.4:567"), Endpoint.parse("192.0.2.1:3478"), Endpoint.parse("198.51.100.1:3479")
ports = st.integers(0, 0xFFFF)
endpoints = st.builds(Endpoint, st.ip_addresses(v=4), ports) | st.builds(Endpoint, st.ip_addresses(v=6), ports)


def test_debian_stun_request_decodes_and_re_encodes_exactly() -> None:
    txid16, msg = stun.decode_classic(STUND_TEST1)
    assert txid16 == TXID16 and msg.txid == TxID(TXID16[4:])
    assert (msg.msg_class, msg.method) == (Class.REQUEST, Method.BINDING)
    assert msg.attributes == (ChangeRequest(False, False),)
    assert stun.encode_classic(msg, txid16) == STUND_TEST1
    with pytest.raises(DecodeError):
        stun.decode(STUND_TEST1)  # no magic cookie: not an RFC 8489 message


def test_classic_response_keeps_the_16_byte_id_and_has_no_cookie() -> None:
    attrs = (MappedAddress(CLIENT), SourceAddress(A), ChangedAddress(B))  # RFC 3489 §11.2
    wire = stun.encode_classic(Message(Class.SUCCESS, Method.BINDING, TxID(TXID16[4:]), attrs), TXID16)
    assert wire[:2] == b"\x01\x01" and wire[4:20] == TXID16
    assert wire[20:] == b"".join(stun.encode_attribute(a, TxID(TXID16[4:])) for a in attrs)
    _, back = stun.decode_classic(wire)
    assert back.attributes == attrs and back.mapped_endpoint == CLIENT


def test_classic_error_response() -> None:
    attrs = (ErrorCode(420, "Unknown Attribute   "), UnknownAttributes((3, 3)))  # RFC 3489 §11.2.9, §11.2.10
    wire = stun.encode_classic(Message(Class.ERROR, Method.BINDING, TxID(TXID16[4:]), attrs), TXID16)
    assert wire[:2] == b"\x01\x11"
    assert stun.decode_classic(wire)[1].attributes == attrs


def test_classic_errors() -> None:
    with pytest.raises(TruncatedError):
        stun.decode_classic(STUND_TEST1[:19])
    with pytest.raises(TruncatedError):
        stun.decode_classic(STUND_TEST1[:-4])  # the header says 8 bytes of attributes
    msg = stun.decode_classic(STUND_TEST1)[1]
    for bad in (TXID16[:15], bytes(16), TXID16 + b"\x00"):
        with pytest.raises(BadValueError, match="16 bytes"):
            stun.encode_classic(msg, bad)


@settings(max_examples=300)
@given(st.binary(max_size=80))
def test_decode_classic_raises_only_decode_error(data: bytes) -> None:
    try:
        txid16, msg = stun.decode_classic(data)
    except DecodeError:
        return
    assert txid16 == data[4:20] and msg.txid.raw == data[8:20]


@settings(max_examples=200)
@given(st.binary(min_size=16, max_size=16), st.sampled_from(Class), endpoints, endpoints, endpoints)
def test_classic_round_trip(txid16: bytes, cls: Class, mapped: Endpoint, source: Endpoint, changed: Endpoint) -> None:
    attrs = (MappedAddress(mapped), SourceAddress(source), ChangedAddress(changed))
    msg = Message(cls, Method.BINDING, TxID(txid16[4:]), attrs)
    wire = stun.encode_classic(msg, txid16)
    assert wire[4:20] == txid16
    assert stun.decode_classic(wire) == (txid16, msg)
