"""WireGuard message layouts (toolkit/codec/wireguard.py; protocols.md §8.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import wireguard as wg
from toolkit.errors import BadLengthError, BadValueError, DecodeError, TruncatedError, UnknownTypeError

# A real handshake initiation, "captured as the first packet from a WireGuard session"
# (Tailscale wgengine/magicsock/magicsock_test.go Test_looksLikeInitiationMsg).
CAPTURED_INITIATION = bytes.fromhex(
    "01000000d9205f67915a500e377b409e0c3d97ca91e68654b95952de965e75df491000cce00632678cd9e8c8525556aa8daf24e6cfc4"
    "4c48812bb560ff3c1c5dee061b3f833dfaa48acf13b64bd1e0027aa4d977a3721b82fd6072338702fc3193651404980ad46dae2869ba64"
    "16cc0eb38621a4140b5b918eb6402b697202adb3002a6d00000000000000000000000000000000"
)


def test_captured_initiation() -> None:
    msg = wg.decode(CAPTURED_INITIATION)
    assert isinstance(msg, wg.Initiation)
    assert msg.sender_index == 0x675F20D9  # bytes d9 20 5f 67, little-endian
    assert msg.ephemeral == CAPTURED_INITIATION[8:40]
    assert msg.mac1 == CAPTURED_INITIATION[wg.INITIATION_MAC1_OFFSET : wg.INITIATION_MAC2_OFFSET]
    assert msg.mac2 == bytes(16)  # no cookie
    assert msg.encode() == CAPTURED_INITIATION
    assert msg.summary() == "WireGuard Initiation sender=0x675f20d9"


def test_sizes_and_offsets() -> None:
    assert (wg.INITIATION_LEN, wg.RESPONSE_LEN, wg.COOKIE_REPLY_LEN) == (148, 92, 64)
    assert (wg.TRANSPORT_HEADER_LEN, wg.TRANSPORT_MIN_LEN) == (16, 32)
    assert (wg.INITIATION_MAC1_OFFSET, wg.INITIATION_MAC2_OFFSET) == (116, 132)
    assert (wg.RESPONSE_MAC1_OFFSET, wg.RESPONSE_MAC2_OFFSET) == (60, 76)
    assert wg.INITIATION_MAC2_OFFSET + 16 == wg.INITIATION_LEN
    assert wg.RESPONSE_MAC2_OFFSET + 16 == wg.RESPONSE_LEN


def test_layouts_put_fields_at_their_offsets() -> None:
    init = wg.Initiation(0x1A2B3C4D, b"E" * 32, b"S" * 48, b"T" * 28, b"1" * 16, b"2" * 16).encode()
    assert init[:8] == bytes.fromhex("01000000 4d3c2b1a")
    assert init[wg.INITIATION_STATIC_OFFSET : wg.INITIATION_STATIC_OFFSET + 1] == b"S"
    assert init[wg.INITIATION_TIMESTAMP_OFFSET : wg.INITIATION_MAC1_OFFSET] == b"T" * 28
    resp = wg.Response(1, 2, b"E" * 32, b"N" * 16, b"1" * 16, b"2" * 16).encode()
    assert resp[:12] == bytes.fromhex("02000000 01000000 02000000")
    assert resp[wg.RESPONSE_EMPTY_OFFSET : wg.RESPONSE_MAC1_OFFSET] == b"N" * 16
    cookie = wg.CookieReply(5, b"n" * 24, b"c" * 32).encode()
    assert cookie[:8] == bytes.fromhex("03000000 05000000") and cookie[8:32] == b"n" * 24
    tr = wg.Transport(7, 0x0102030405060708, b"x" * 48).encode()
    assert tr[:16] == bytes.fromhex("04000000 07000000 0807060504030201")


def test_summaries() -> None:
    assert wg.Initiation(0x1A2B3C4D, bytes(32), bytes(48), bytes(28), bytes(16)).summary() == (
        "WireGuard Initiation sender=0x1a2b3c4d"
    )
    assert wg.Transport(0xAB, 7, bytes(64)).summary() == "WireGuard Transport rx=0x000000ab ctr=7 48B"
    assert wg.Transport(0xAB, 8, bytes(16)).summary() == "WireGuard Transport rx=0x000000ab ctr=8 keepalive"
    assert "rx=0x00000002" in wg.Response(1, 2, bytes(32), bytes(16), bytes(16)).summary()
    assert wg.CookieReply(3, bytes(24), bytes(32)).summary() == "WireGuard CookieReply rx=0x00000003"


def test_transport_any_length_from_32() -> None:
    # wireguard-go pads payloads to 16 bytes when sending, but accepts any length >= 32.
    for n in (32, 33, 47, 48, 1500):
        raw = b"\x04\x00\x00\x00" + bytes(n - 4)
        msg = wg.decode(raw)
        assert isinstance(msg, wg.Transport) and msg.encode() == raw
        assert msg.padded is ((n - 32) % 16 == 0)
    assert wg.decode(b"\x04" + bytes(31)).is_keepalive  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (b"\x01\x00\x00", TruncatedError),
        (b"\x05\x00\x00\x00" + bytes(28), UnknownTypeError),
        (b"\x00\x00\x00\x00" + bytes(28), UnknownTypeError),
        (b"\x01\x01\x00\x00" + bytes(144), UnknownTypeError),  # not three zero bytes
        (b"\x04\x00\x00\x01" + bytes(28), UnknownTypeError),
        (b"\x01\x00\x00\x00" + bytes(143), TruncatedError),
        (b"\x01\x00\x00\x00" + bytes(145), BadLengthError),  # handshakes have exact sizes
        (b"\x02\x00\x00\x00" + bytes(89), BadLengthError),
        (b"\x03\x00\x00\x00" + bytes(59), TruncatedError),
        (b"\x04\x00\x00\x00" + bytes(27), TruncatedError),
    ],
)
def test_decode_errors(raw: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        wg.decode(raw)


def test_message_type() -> None:
    assert wg.message_type(b"\x02\x00\x00\x00") is wg.MsgType.RESPONSE
    assert wg.message_type(b"\x02\x00\x00") is None
    assert wg.message_type(b"TS\xf0\x9f") is None


def test_bad_field_values() -> None:
    with pytest.raises(BadValueError):
        wg.Initiation(0, bytes(31), bytes(48), bytes(28), bytes(16))
    with pytest.raises(BadValueError):
        wg.Transport(0, 2**64, bytes(16))
    with pytest.raises(BadValueError):
        wg.Transport(0, 0, bytes(15))


def _b(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


u32 = st.integers(min_value=0, max_value=2**32 - 1)
messages: st.SearchStrategy[wg.Message] = st.one_of(
    st.builds(wg.Initiation, u32, _b(32), _b(48), _b(28), _b(16), _b(16)),
    st.builds(wg.Response, u32, u32, _b(32), _b(16), _b(16), _b(16)),
    st.builds(wg.CookieReply, u32, _b(24), _b(32)),
    st.builds(wg.Transport, u32, st.integers(min_value=0, max_value=2**64 - 1), st.binary(min_size=16, max_size=200)),
)


@settings(max_examples=400)
@given(messages)
def test_round_trip(msg: wg.Message) -> None:
    raw = msg.encode()
    assert raw[:4] == bytes((msg.TYPE, 0, 0, 0))
    assert wg.decode(raw) == msg


@settings(max_examples=400)
@given(
    st.binary(max_size=200)
    | st.tuples(st.integers(0, 5), st.binary(max_size=160)).map(lambda t: bytes([t[0], 0, 0, 0]) + t[1])
)
def test_decode_raises_only_decode_error(data: bytes) -> None:
    try:
        msg = wg.decode(data)
    except DecodeError:
        return
    assert msg.encode() == data
