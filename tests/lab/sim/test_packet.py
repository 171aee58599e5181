"""Packet bytes of the sim (toolkit/lab/sim/packet.py): the same bytes as pcapio's frame builders, round
trips, checksums checked on parse, scapy agreeing on every checksum, and decoders raising only DecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import pcapio
from toolkit.errors import BadChecksumError, DecodeError
from toolkit.lab.sim.packet import TCP_ACK, TCP_SYN, Packet, TcpInfo, inet_checksum
from toolkit.types import Endpoint

V4 = (Endpoint.parse("192.168.1.10:41641"), Endpoint.parse("203.0.113.7:3478"))
V6 = (Endpoint.parse("[2001:db8:1::10]:41641"), Endpoint.parse("[2001:db8::100:10]:3478"))

ports = st.integers(0, 65535)


def _not_mapped(addr: object) -> bool:
    return getattr(addr, "ipv4_mapped", None) is None


v4 = st.builds(lambda a, p: Endpoint(a, p), st.ip_addresses(v=4), ports)
v6 = st.builds(lambda a, p: Endpoint(a, p), st.ip_addresses(v=6).filter(_not_mapped), ports)


@pytest.mark.parametrize("pair", [V4, V6], ids=["v4", "v6"])
@pytest.mark.parametrize("payload", [b"", b"x", b"\xff" * 7, bytes(range(256)) * 5])
def test_same_bytes_as_pcapio(pair: tuple[Endpoint, Endpoint], payload: bytes) -> None:
    s, d = pair
    udp = Packet.udp(s, d, payload)
    assert udp.raw == pcapio.udp_frame(str(s.ip), s.port, str(d.ip), d.port, payload, ethernet=False)
    tcp = Packet.tcp(s, d, payload, TcpInfo(7, 9))
    assert tcp.raw == pcapio.tcp_frame(str(s.ip), s.port, str(d.ip), d.port, payload, seq=7, ack=9, ethernet=False)


@settings(max_examples=200)
@given(pair=st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)), payload=st.binary(max_size=300), ttl=st.integers(1, 255))
def test_round_trip(pair: tuple[Endpoint, Endpoint], payload: bytes, ttl: int) -> None:
    s, d = pair
    p = Packet.udp(s, d, payload, ttl)
    assert Packet.parse(p.raw) == p
    t = Packet.tcp(s, d, payload, TcpInfo(1, 2, TCP_SYN | TCP_ACK, 1000), ttl)
    assert Packet.parse(t.raw) == t
    moved = p.rewrite(src=d, dst=s, ttl=ttl - 1 if ttl > 1 else 1)
    assert Packet.parse(moved.raw).src == d


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_parse_raises_only_decode_errors(data: bytes) -> None:
    try:
        Packet.parse(data)
    except DecodeError:
        pass


@pytest.mark.parametrize("pair", [V4, V6], ids=["v4", "v6"])
def test_a_flipped_bit_fails_a_checksum(pair: tuple[Endpoint, Endpoint]) -> None:
    raw = bytearray(Packet.udp(*pair, b"payload bytes").raw)
    raw[-3] ^= 0x40
    with pytest.raises(BadChecksumError):
        Packet.parse(bytes(raw))


def test_checksum_matches_rfc1071_example() -> None:
    # RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement
    assert inet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0xFFFF - 0xDDF2
    assert inet_checksum(b"") == 0xFFFF and inet_checksum(b"\xff\xff") == 0


@pytest.mark.parametrize("pair", [V4, V6], ids=["v4", "v6"])
def test_scapy_agrees_on_every_checksum(pair: tuple[Endpoint, Endpoint]) -> None:
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6

    for pkt in (Packet.udp(*pair, b"hello"), Packet.tcp(*pair, b"hello", TcpInfo(5, 6))):
        parsed = (IP if pkt.version == 4 else IPv6)(pkt.raw)
        layer = parsed[UDP] if pkt.is_udp else parsed[TCP]
        mine = layer.chksum
        del layer.chksum
        if pkt.version == 4:
            mine_ip = parsed[IP].chksum
            del parsed[IP].chksum
        rebuilt = (IP if pkt.version == 4 else IPv6)(bytes(parsed))
        assert (rebuilt[UDP] if pkt.is_udp else rebuilt[TCP]).chksum == mine
        if pkt.version == 4:
            assert rebuilt[IP].chksum == mine_ip
        assert bytes(rebuilt) == pkt.raw
