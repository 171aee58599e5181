"""The single-socket demux (toolkit/codec/demux.py; protocols.md §4.11, magicsock ``packetLooksLike``)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import disco, geneve, stun, wireguard
from toolkit.codec.demux import Decoded, Kind, classify, classify_strict, decode_datagram, is_stun_binding
from toolkit.errors import DecodeError, TruncatedError, UnknownTypeError
from toolkit.types import DiscoPublicKey

# protocols.md §3.1 / §3.2 worked examples (TxID 01..0c): Tailscale's Binding request and a response.
STUN_REQUEST = bytes.fromhex("000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f")
STUN_RESPONSE = bytes.fromhex("0101000c2112a4420102030405060708090a0b0c00200008000123252010a746")

# Tailscale's Test_packetLooksLike fixtures (wgengine/magicsock/magicsock_test.go): a disco key with
# byte1=1, byte30=30, byte31=31, a "naked disco" of magic + key only (38 bytes), and WireGuard type
# words at the start of zero buffers of the same length as the Geneve-wrapped disco.
_KEY = bytes(1) + b"\x01" + bytes(28) + b"\x1e\x1f"
NAKED_DISCO = disco.MAGIC + _KEY
GENEVE_DISCO = geneve.Header(geneve.PROTO_DISCO, 1, control=True).encode() + NAKED_DISCO


def _wg(t: int, size: int = len(GENEVE_DISCO)) -> bytes:
    return bytes((t, 0, 0, 0)) + bytes(size - 4)


GENEVE_WG = geneve.Header(geneve.PROTO_WIREGUARD, 1, control=True).encode() + _wg(1)


def _set(data: bytes, index: int, bits: int) -> bytes:
    b = bytearray(data)
    b[index] |= bits
    return bytes(b)


PACKET_LOOKS_LIKE = [
    ("STUN-binding-success-response", STUN_RESPONSE, Kind.STUN),
    ("STUN-binding-request", STUN_REQUEST, Kind.STUN),
    ("naked-disco", NAKED_DISCO, Kind.DISCO),
    ("geneve-encap-disco", GENEVE_DISCO, Kind.GENEVE_DISCO),
    ("geneve-encap-too-short-disco", GENEVE_DISCO[:-32], Kind.UNKNOWN),  # magicsock: WireGuard; 14 bytes
    ("geneve-encap-disco-nonzero-geneve-version", _set(GENEVE_DISCO, 0, 0x40), Kind.WIREGUARD),
    ("geneve-encap-disco-nonzero-geneve-reserved-bits", _set(GENEVE_DISCO, 1, 0x3F), Kind.WIREGUARD),
    ("geneve-encap-disco-nonzero-geneve-vni-lsb", _set(GENEVE_DISCO, 7, 0xFF), Kind.WIREGUARD),
    ("geneve-encap-wireguard", GENEVE_WG, Kind.GENEVE_WIREGUARD),
    ("naked-WireGuard-Initiation-type", _wg(1), Kind.WIREGUARD),
    ("naked-WireGuard-Response-type", _wg(2), Kind.WIREGUARD),
    ("naked-WireGuard-Cookie-Reply-type", _wg(3), Kind.WIREGUARD),
    ("naked-WireGuard-Transport-type", _wg(4), Kind.WIREGUARD),
    ("empty", b"", Kind.UNKNOWN),
    ("short-garbage", b"hello", Kind.UNKNOWN),
    ("garbage-32", b"x" * 32, Kind.WIREGUARD),  # "anything else is WireGuard"
]


@pytest.mark.parametrize(("data", "kind"), [c[1:] for c in PACKET_LOOKS_LIKE], ids=[c[0] for c in PACKET_LOOKS_LIKE])
def test_classify_like_packet_looks_like(data: bytes, kind: Kind) -> None:
    assert classify(data) is kind


def test_geneve_disco_without_magic_is_naked_wireguard() -> None:
    data = geneve.Header(geneve.PROTO_DISCO, 1).encode() + _wg(4, 40)
    assert classify(data) is Kind.WIREGUARD


def test_unknown_geneve_protocol_falls_through() -> None:
    other = geneve.Header(0x6558, 1).encode() + bytes(40)
    assert geneve.looks_like_geneve(other)
    assert classify(other) is Kind.WIREGUARD


def test_stun_needs_byte1_0x01() -> None:
    error_response = b"\x01\x11" + STUN_RESPONSE[2:]  # Binding error response: stun.Is, but b[1] == 0x11
    assert stun.is_stun(error_response) and not is_stun_binding(error_response)
    assert classify(error_response) is Kind.WIREGUARD
    assert is_stun_binding(STUN_REQUEST) and is_stun_binding(STUN_RESPONSE)
    assert not is_stun_binding(STUN_RESPONSE[:19])


def test_rules_do_not_collide() -> None:
    """The "why the rules do not collide" facts of protocols.md §4.11."""
    init = wireguard.Initiation(1, bytes(32), bytes(48), bytes(28), bytes(16)).encode()
    disco_pkt = disco.Wrapper(DiscoPublicKey(_KEY), bytes(24), bytes(16)).encode()
    # byte 1: STUN 0x01; WireGuard 0; Geneve low bit clear; disco 0x53 ('S')
    assert STUN_REQUEST[1] == 0x01 and init[1] == 0 and GENEVE_DISCO[1] & 0x01 == 0 and disco_pkt[1] == 0x53
    # disco byte 0 (0x54) is not a WireGuard type (1..4); it also has a Geneve version bit set (0x40)
    assert wireguard.message_type(disco_pkt) is None and not geneve.looks_like_geneve(disco_pkt)
    # bytes 2..4: disco f0 9f, WireGuard 00 00: neither is a Geneve protocol value we use
    for data in (disco_pkt, init):
        assert data[2:4] not in (b"\x7a\x11", b"\x7a\x12")
    # a WireGuard message does look like a Geneve header, but with protocol 0: it falls through
    assert geneve.looks_like_geneve(init) and classify(init) is Kind.WIREGUARD
    assert classify(disco_pkt) is Kind.DISCO
    # no STUN binding message is WireGuard or disco: b[1] == 1 excludes both
    assert not is_stun_binding(init) and not is_stun_binding(disco_pkt)


def test_classify_strict() -> None:
    assert classify_strict(b"x" * 32) is Kind.UNKNOWN
    assert classify_strict(_wg(1, 148)) is Kind.WIREGUARD
    assert classify_strict(_wg(1, 149)) is Kind.UNKNOWN  # handshakes have exact sizes
    assert classify_strict(_wg(4, 33)) is Kind.WIREGUARD  # transport: any length >= 32
    assert classify_strict(_wg(5, 64)) is Kind.UNKNOWN
    assert classify_strict(GENEVE_WG) is Kind.UNKNOWN  # 8 + 46 bytes: not a 148-byte initiation
    good = geneve.Header(geneve.PROTO_WIREGUARD, 9).encode() + _wg(2, 92)
    assert classify_strict(good) is Kind.GENEVE_WIREGUARD
    for _, data, kind in PACKET_LOOKS_LIKE:
        if kind not in (Kind.WIREGUARD, Kind.GENEVE_WIREGUARD):
            assert classify_strict(data) is kind


def test_decode_datagram_each_kind() -> None:
    d = decode_datagram(STUN_RESPONSE)
    assert d.kind is Kind.STUN and d.ok and isinstance(d.message, stun.Message)
    pkt = disco.Wrapper(DiscoPublicKey(_KEY), bytes(range(24)), bytes(20)).encode()
    d = decode_datagram(pkt)
    assert d == Decoded(Kind.DISCO, disco.decode_wrapper(pkt), None, None)
    hdr = geneve.Header(geneve.PROTO_DISCO, 5, control=True)
    d = decode_datagram(hdr.encode() + pkt)
    assert d.kind is Kind.GENEVE_DISCO and d.geneve == hdr and d.message == disco.decode_wrapper(pkt)
    init = wireguard.Initiation(0x1A2B3C4D, bytes(32), bytes(48), bytes(28), bytes(16))
    assert decode_datagram(init.encode()) == Decoded(Kind.WIREGUARD, init, None, None)
    hdr = geneve.Header(geneve.PROTO_WIREGUARD, 5)
    d = decode_datagram(hdr.encode() + init.encode())
    assert d == Decoded(Kind.GENEVE_WIREGUARD, init, None, hdr)


def test_decode_datagram_errors_are_captured() -> None:
    d = decode_datagram(NAKED_DISCO)  # magicsock calls it disco; too short for a wrapper
    assert d.kind is Kind.DISCO and d.message is None and isinstance(d.error, TruncatedError) and not d.ok
    d = decode_datagram(b"x" * 40)
    assert d.kind is Kind.WIREGUARD and isinstance(d.error, UnknownTypeError)
    d = decode_datagram(b"abc")
    assert d.kind is Kind.UNKNOWN and isinstance(d.error, TruncatedError)
    d = decode_datagram(GENEVE_WG)
    assert d.kind is Kind.GENEVE_WIREGUARD and d.geneve is not None and d.error is not None


def test_classify_is_fast() -> None:
    packets = [c[1] for c in PACKET_LOOKS_LIKE] * (100_000 // len(PACKET_LOOKS_LIKE))
    start = time.perf_counter()
    for p in packets:
        classify(p)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"classify took {elapsed:.3f}s for {len(packets)} packets"


@settings(max_examples=500)
@given(
    st.binary(max_size=200)
    | st.binary(max_size=150).map(lambda b: GENEVE_DISCO[:8] + b)
    | st.binary(max_size=150).map(lambda b: GENEVE_WG[:8] + b)
    | st.binary(max_size=150).map(lambda b: disco.MAGIC + b)
    | st.binary(max_size=60).map(lambda b: STUN_RESPONSE[:20] + b)
)
def test_decode_datagram_never_raises(data: bytes) -> None:
    d = decode_datagram(data)
    assert d.kind is classify(data)
    assert (d.message is None) != (d.error is None)
    assert d.error is None or isinstance(d.error, DecodeError)
    assert classify_strict(data) in (d.kind, Kind.UNKNOWN)
