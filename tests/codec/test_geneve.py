"""Geneve header for peer relays (toolkit/codec/geneve.py; protocols.md §1.5, RFC 8926 §3.4)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import geneve
from toolkit.errors import BadMagicError, BadValueError, DecodeError, TruncatedError


@pytest.mark.parametrize(
    ("header", "hexstr"),
    [
        # Tailscale net/packet/geneve.go Encode: version 0, control -> 0x80 in byte 1, VNI << 8.
        (geneve.Header(geneve.PROTO_DISCO, 1, control=True), "00 80 7a 11 00 00 01 00"),
        (geneve.Header(geneve.PROTO_WIREGUARD, 1), "00 00 7a 12 00 00 01 00"),
        (geneve.Header(geneve.PROTO_WIREGUARD, 0xABCDEF), "00 00 7a 12 ab cd ef 00"),
        (geneve.Header(0x6558, 0), "00 00 65 58 00 00 00 00"),
    ],
)
def test_encode_decode(header: geneve.Header, hexstr: str) -> None:
    raw = bytes.fromhex(hexstr)
    assert header.encode() == raw
    assert geneve.decode(raw) == header
    assert geneve.decode(raw + b"payload") == header  # decode reads only the first 8 bytes
    assert geneve.looks_like_geneve(raw)


def test_constants() -> None:
    assert (geneve.HEADER_LEN, geneve.PROTO_DISCO, geneve.PROTO_WIREGUARD) == (8, 0x7A11, 0x7A12)


def test_summary() -> None:
    assert geneve.Header(geneve.PROTO_DISCO, 7, True).summary() == "Geneve vni=7 proto=disco control"
    assert geneve.Header(geneve.PROTO_WIREGUARD, 7).summary() == "Geneve vni=7 proto=WireGuard"
    assert geneve.Header(0x6558, 7).summary() == "Geneve vni=7 proto=0x6558"


@pytest.mark.parametrize(
    ("hexstr", "error"),
    [
        ("00 80 7a 11 00 00", TruncatedError),
        ("40 80 7a 11 00 00 01 00", BadMagicError),  # version 1
        ("01 80 7a 11 00 00 01 00", BadValueError),  # 4 bytes of options
        ("00 81 7a 11 00 00 01 00", BadValueError),  # reserved bit
        ("00 c0 7a 11 00 00 01 00", BadValueError),  # RFC 8926 C bit (critical options)
        ("00 80 7a 11 00 00 01 ff", BadValueError),  # reserved byte 7
    ],
)
def test_strict_decode(hexstr: str, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        geneve.decode(bytes.fromhex(hexstr))


def test_looks_like_geneve_is_magicsocks_rule() -> None:
    base = bytearray(geneve.Header(geneve.PROTO_DISCO, 1, True).encode())
    assert geneve.looks_like_geneve(bytes(base))
    assert not geneve.looks_like_geneve(bytes(base[:7]))
    for index, bits, expected in [
        (0, 0x40, False),
        (0, 0x3F, True),
        (1, 0x01, False),
        (1, 0x40, True),
        (7, 0x01, False),
    ]:
        b = bytearray(base)
        b[index] |= bits
        assert geneve.looks_like_geneve(bytes(b)) is expected, (index, bits)


def test_bad_field_values() -> None:
    with pytest.raises(BadValueError):
        geneve.Header(geneve.PROTO_DISCO, 1 << 24)
    with pytest.raises(BadValueError):
        geneve.Header(0x10000, 1)


headers = st.builds(
    geneve.Header,
    st.integers(min_value=0, max_value=0xFFFF),
    st.integers(min_value=0, max_value=0xFFFFFF),
    st.booleans(),
)


@settings(max_examples=300)
@given(headers)
def test_round_trip(header: geneve.Header) -> None:
    raw = header.encode()
    assert len(raw) == geneve.HEADER_LEN
    assert geneve.decode(raw) == header


@settings(max_examples=300)
@given(st.binary(max_size=16))
def test_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        h = geneve.decode(data)
    except DecodeError:
        return
    assert h.encode() == data[:8]
