"""TURN in the STUN codec (toolkit/codec/stun_attrs_turn.py): CHANNEL-NUMBER, LIFETIME, DATA,
REQUESTED-TRANSPORT and ChannelData framing (RFC 8656 §18, §12.4), byte for byte, round trips, aioice
as an independent codec, and how the single-socket demux classifies ChannelData.

coturn, the real TURN server, is exercised through these classes by tests/services/test_turnclient.py."""

from __future__ import annotations

from typing import Any

import pytest
from aioice import stun as ai
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import demux, stun
from toolkit.codec.stun import (
    ChannelData,
    ChannelNumber,
    Class,
    Data,
    Lifetime,
    Message,
    Method,
    RequestedTransport,
    XorPeerAddress,
)
from toolkit.errors import BadLengthError, BadValueError, DecodeError, TruncatedError
from toolkit.types import Endpoint, TxID

TXID = TxID(bytes(range(1, 13)))
PEER = Endpoint.parse("192.0.2.15:40001")
txids = st.binary(min_size=12, max_size=12).map(TxID)
channels = st.integers(stun.CHANNEL_MIN, stun.CHANNEL_MAX)


# --- the attributes, byte for byte (RFC 8656 §18) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "tlv"),
    [
        (ChannelNumber(0x4000), "000c0004 40000000"),  # §18.1: number, then 2 RFFU bytes
        (Lifetime(600), "000d0004 00000258"),  # §18.4: seconds, 32 bits
        (Lifetime(0), "000d0004 00000000"),  # a Refresh with LIFETIME 0 deletes the allocation (§8)
        (Data(b"abc"), "00130003 61626300"),  # §18.6: any length, padded to 4 like every attribute
        (Data(b""), "00130000"),
        (RequestedTransport(), "00190004 11000000"),  # §18.7: protocol 17 (UDP), then 3 RFFU bytes
        (RequestedTransport(stun.PROTO_TCP), "00190004 06000000"),  # RFC 6062 §6.1
    ],
)
def test_attribute_bytes(attr: stun.StunAttribute, tlv: str) -> None:
    wire = stun.encode_attribute(attr, TXID)
    assert wire == bytes.fromhex(tlv)
    length = int.from_bytes(wire[2:4], "big")
    assert stun.decode_attribute(attr.attr_type, wire[4 : 4 + length], TXID) == attr


def test_rffu_bytes_are_ignored_and_lengths_checked() -> None:
    assert ChannelNumber.from_value(b"\x40\x01\xff\xff", TXID) == ChannelNumber(0x4001)
    assert RequestedTransport.from_value(b"\x11\x01\x02\x03", TXID) == RequestedTransport(17)
    for cls, value in ((ChannelNumber, b"\x40\x00"), (Lifetime, b"\x00\x00\x02"), (RequestedTransport, b"\x11")):
        with pytest.raises(BadLengthError, match="expected 4"):
            cls.from_value(value, TXID)
    with pytest.raises(BadValueError):
        ChannelNumber(0x10000)
    with pytest.raises(BadValueError):
        Lifetime(-1)
    with pytest.raises(BadValueError):
        RequestedTransport(256)


def test_allocate_request_decodes_to_the_classes_and_summarises() -> None:
    msg = Message(Class.REQUEST, Method.ALLOCATE, TXID, (RequestedTransport(), Lifetime(600)))
    decoded = stun.decode(msg.encode(fingerprint=True))
    assert decoded.get(RequestedTransport) == RequestedTransport(17) and decoded.get(Lifetime) == Lifetime(600)
    assert decoded.summary() == "STUN Allocate Request  requested-transport udp lifetime 600s fingerprint ok"
    bind = Message(Class.REQUEST, Method.CHANNEL_BIND, TXID, (ChannelNumber(0x4ABC), XorPeerAddress(PEER)))
    assert stun.decode(bind.encode()).summary() == "STUN ChannelBind Request  channel 0x4abc xor-peer 192.0.2.15:40001"


# --- ChannelData (RFC 8656 §12.4, §12.5) ---------------------------------------------------------------------


def test_channel_data_bytes() -> None:
    assert ChannelData(0x4000, b"hello").encode() == bytes.fromhex("40000005") + b"hello"
    assert ChannelData(0x4000, b"hello").encode(pad=True) == bytes.fromhex("40000005") + b"hello\0\0\0"
    assert ChannelData(0x4FFF).encode(pad=True) == bytes.fromhex("4fff0000")
    assert ChannelData.decode(b"\x40\x01\x00\x02hi\x00\x00") == ChannelData(0x4001, b"hi")  # padding ignored
    assert ChannelData(0x4001, b"hi").summary() == "TURN ChannelData channel 0x4001 2B"


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (b"\x40\x00\x00", TruncatedError),  # no whole header
        (b"\x40\x00\x00\x10abc", TruncatedError),  # says 16 bytes, has 3
        (b"\x50\x00\x00\x00", BadValueError),  # 0x5000: reserved, not a channel (§12)
        (b"\x3f\xff\x00\x00", BadValueError),
    ],
)
def test_channel_data_errors(wire: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        ChannelData.decode(wire)


def test_channel_data_values_are_checked() -> None:
    with pytest.raises(BadValueError):
        ChannelData(0x3FFF)
    with pytest.raises(BadLengthError):
        ChannelData(0x4000, bytes(0x10000))


@settings(max_examples=200)
@given(channels, st.binary(max_size=300), st.booleans())
def test_channel_data_round_trip(channel: int, data: bytes, pad: bool) -> None:
    wire = ChannelData(channel, data).encode(pad=pad)
    assert len(wire) % 4 == 0 or not pad
    assert stun.is_channel_data(wire) and not stun.is_stun(wire)
    assert ChannelData.decode(wire) == ChannelData(channel, data)


@settings(max_examples=300)
@given(st.binary(max_size=40))
def test_channel_data_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        cd = ChannelData.decode(data)
    except DecodeError:
        return
    assert stun.is_channel_data(data) and len(cd.data) <= len(data) - 4


@settings(max_examples=200)
@given(txids, channels, st.integers(0, 0xFFFFFFFF), st.binary(max_size=64))
def test_turn_attributes_round_trip(txid: TxID, channel: int, lifetime: int, data: bytes) -> None:
    attrs = (ChannelNumber(channel), Lifetime(lifetime), Data(data), RequestedTransport(), XorPeerAddress(PEER))
    msg = Message(Class.INDICATION, Method.SEND, txid, attrs)
    assert stun.decode(msg.encode(fingerprint=True)).attributes[:-1] == attrs


# --- aioice, an independent codec ------------------------------------------------------------------------------


def test_aioice_parses_natkit_turn_attributes() -> None:
    attrs = (RequestedTransport(), Lifetime(3600), XorPeerAddress(PEER), Data(b"\x00\x01payload"))
    parsed = ai.parse_message(Message(Class.REQUEST, Method.ALLOCATE, TXID, attrs).encode())
    assert parsed.attributes["REQUESTED-TRANSPORT"] == 17 << 24  # aioice reads the RFFU bytes as part of a u32
    assert parsed.attributes["LIFETIME"] == 3600
    assert parsed.attributes["XOR-PEER-ADDRESS"] == ("192.0.2.15", 40001)
    assert parsed.attributes["DATA"] == b"\x00\x01payload"


def test_natkit_parses_aioice_send_indication() -> None:
    attributes: dict[str, Any] = {"XOR-PEER-ADDRESS": ("192.0.2.15", 40001), "DATA": b"relay me", "LIFETIME": 0}
    m = ai.Message(ai.Method.SEND, ai.Class.INDICATION, transaction_id=TXID.raw, attributes=attributes)
    msg = stun.decode(bytes(m))
    assert msg.attributes == (XorPeerAddress(PEER), Data(b"relay me"), Lifetime(0))
    assert msg.encode() == bytes(m)


# --- the demux (protocols.md §4.11) ---------------------------------------------------------------------------


@settings(max_examples=200)
@given(channels, st.binary(max_size=200))
def test_demux_never_takes_channel_data_for_stun_disco_or_valid_wireguard(channel: int, data: bytes) -> None:
    """magicsock's rules know no TURN: ChannelData (first byte 0x40-0x4F) is not STUN, Geneve or disco, so
    ``classify`` hands it to WireGuard as magicsock would (or UNKNOWN when short), and ``classify_strict``,
    which checks WireGuard's type byte (1-4), always says UNKNOWN."""
    wire = ChannelData(channel, data).encode()
    assert demux.classify(wire) in (demux.Kind.WIREGUARD, demux.Kind.UNKNOWN)
    assert demux.classify_strict(wire) is demux.Kind.UNKNOWN
