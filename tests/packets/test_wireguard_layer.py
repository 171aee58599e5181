"""The scapy WireGuard layers against the codec: the four message types, offsets of protocols.md §8.1."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import wireguard as codec
from toolkit.packets import wireguard as layer
from toolkit.packets.wireguard import WireGuard

E, S, T = bytes(range(32)), bytes(range(100, 148)), bytes(range(200, 228))
M1, M2 = b"\x11" * 16, b"\x22" * 16
MESSAGES = {
    "initiation": codec.Initiation(0x01020304, E, S, T, M1, M2),
    "response": codec.Response(0x0A0B0C0D, 0x01020304, E, b"\x33" * 16, M1),
    "cookie_reply": codec.CookieReply(0x01020304, b"\x44" * 24, b"\x55" * 32),
    "transport": codec.Transport(0x0A0B0C0D, 2**40 + 5, b"\x66" * 48),
    "keepalive": codec.Transport(0x0A0B0C0D, 1, b"\x77" * 16),
}


def layer_message(m: codec.Message) -> WireGuard:
    match m:
        case codec.Initiation():
            return layer.WireGuardInitiation(
                sender_index=m.sender_index,
                ephemeral=m.ephemeral,
                encrypted_static=m.encrypted_static,
                encrypted_timestamp=m.encrypted_timestamp,
                mac1=m.mac1,
                mac2=m.mac2,
            )
        case codec.Response():
            return layer.WireGuardResponse(
                sender_index=m.sender_index,
                receiver_index=m.receiver_index,
                ephemeral=m.ephemeral,
                encrypted_nothing=m.encrypted_nothing,
                mac1=m.mac1,
                mac2=m.mac2,
            )
        case codec.CookieReply():
            return layer.WireGuardCookieReply(
                receiver_index=m.receiver_index, nonce=m.nonce, encrypted_cookie=m.encrypted_cookie
            )
        case codec.Transport():
            return layer.WireGuardTransport(
                receiver_index=m.receiver_index, counter=m.counter, encrypted_packet=m.encrypted_packet
            )
    raise AssertionError(m)


@pytest.mark.parametrize("name", list(MESSAGES))
def test_layer_and_codec_give_the_same_bytes(name: str) -> None:
    msg = MESSAGES[name]
    wire = msg.encode()
    assert bytes(layer_message(msg)) == wire
    pkt = WireGuard(wire)
    assert type(pkt) is type(layer_message(msg))
    assert bytes(pkt) == wire
    assert pkt.to_codec() == msg
    assert pkt.mysummary() == msg.summary()


def test_sizes_and_offsets_follow_protocols_8_1() -> None:
    init = MESSAGES["initiation"].encode()
    assert len(init) == 148 and init[:4] == b"\x01\x00\x00\x00"
    assert init[4:8] == (0x01020304).to_bytes(4, "little")  # u32 LE sender index
    assert init[8:40] == E and init[40:88] == S and init[88:116] == T and init[116:132] == M1 and init[132:] == M2
    resp = WireGuard(MESSAGES["response"].encode())
    assert len(resp) == 92 and resp.receiver_index == 0x01020304
    assert len(WireGuard(MESSAGES["cookie_reply"].encode())) == 64
    tr = WireGuard(MESSAGES["transport"].encode())
    assert tr.counter == 2**40 + 5 and bytes(tr)[8:16] == (2**40 + 5).to_bytes(8, "little")


def test_summaries_read_like_lessons() -> None:
    assert WireGuard(MESSAGES["initiation"].encode()).mysummary() == "WireGuard Initiation sender=0x01020304 mac2"
    assert WireGuard(MESSAGES["keepalive"].encode()).mysummary().endswith("keepalive")


def test_malformed_messages_are_shown_with_the_reason() -> None:
    short = WireGuard(MESSAGES["initiation"].encode()[:100])
    assert "(malformed: truncated" in short.mysummary()
    assert "(malformed: unknown-type" in WireGuard(b"\x09\x00\x00\x00" + bytes(40)).mysummary()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5).flatmap(lambda t: st.binary(max_size=160).map(lambda b: bytes([t, 0, 0, 0]) + b)))
def test_arbitrary_bytes_dissect_round_trip_and_summarise(data: bytes) -> None:
    pkt = WireGuard(data)
    assert bytes(pkt) == data
    assert isinstance(pkt.mysummary(), str)
    pkt.show(dump=True)
