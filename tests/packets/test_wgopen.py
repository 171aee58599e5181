"""The sniffer opens WireGuard transport data with session keys from the keys file."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP

from toolkit.crypto import keys, noise
from toolkit.errors import UsageError
from toolkit.packets import pcapio
from toolkit.packets.dissect import Analyzer
from toolkit.packets.keyring import Keyring
from toolkit.packets.sniffer import read_file
from toolkit.packets.wgopen import WireGuardSession, describe_ip

A, B = ("10.99.0.1", 51820), ("10.99.0.2", 41641)


def _session() -> tuple[noise.SessionKeys, noise.SessionKeys, list[bytes]]:
    a_priv, _ = keys.node_key_pair(b"wgopen a")
    b_priv, b_pub = keys.node_key_pair(b"wgopen b")
    init, st = noise.create_initiation(a_priv, b_pub, ephemeral=bytes(range(32)), now_wall=1.7e9, sender_index=7)
    _, _, rst = noise.consume_initiation(b_priv, init)
    resp, b_keys = noise.create_response(rst, ephemeral=bytes(range(1, 33)), sender_index=9, now=0.0)
    return noise.consume_response(st, resp, now=0.0), b_keys, [init, resp]


def _pcap(tmp_path: Path) -> tuple[Path, noise.SessionKeys]:
    a_keys, b_keys, handshake = _session()
    ping = bytes(IP(src="100.64.0.1", dst="100.64.0.2") / ICMP(type=8, seq=3) / b"hello")
    pong = bytes(IP(src="100.64.0.2", dst="100.64.0.1") / ICMP(type=0, seq=3) / b"hello")
    path = tmp_path / "t.pcap"
    with pcapio.PcapWriter(path) as w:
        w.write(pcapio.udp_frame(*A, *B, handshake[0]), 1.0)
        w.write(pcapio.udp_frame(*B, *A, handshake[1]), 1.1)
        w.write(pcapio.udp_frame(*A, *B, noise.seal_transport(a_keys, 0, noise.pad(ping, 1420))), 1.2)
        w.write(pcapio.udp_frame(*B, *A, noise.seal_transport(b_keys, 0, noise.pad(pong, 1420))), 1.3)
        w.write(pcapio.udp_frame(*A, *B, noise.seal_transport(a_keys, 1, b"")), 1.4)
    return path, a_keys


def test_transport_data_is_decrypted_with_one_sides_session_keys(tmp_path: Path) -> None:
    path, a_keys = _pcap(tmp_path)
    ring = Keyring()
    ring.add_session_keys(a_keys, "a<->b")
    analyzer = Analyzer(ring)
    events = list(read_file(path, analyzer=analyzer))
    lines = [e.summary for e in events]
    assert "100.64.0.1 -> 100.64.0.2 ICMP echo-request" in lines[2] and "[a<->b out]" in lines[2]
    assert "100.64.0.2 -> 100.64.0.1 ICMP echo-reply" in lines[3] and "[a<->b in]" in lines[3]
    assert lines[4].endswith(": keepalive")
    assert (analyzer.stats.wg_decrypted, analyzer.stats.wg_sealed) == (3, 0)
    assert "WireGuard transport: 3 decrypted, 0 left sealed" in analyzer.stats.format()
    shown = events[2].dissection()
    assert "###[ WireGuard Transport Data ]###" in shown and "###[ ICMP ]###" in shown
    assert events[2].inner == bytes(IP(src="100.64.0.1", dst="100.64.0.2") / ICMP(type=8, seq=3) / b"hello")


def test_without_keys_or_with_wrong_keys_it_stays_sealed(tmp_path: Path) -> None:
    path, _ = _pcap(tmp_path)
    plain = [e.summary for e in read_file(path)]
    assert "ICMP" not in " ".join(plain)
    other, _, _ = _session()
    wrong = Keyring(wireguard=[WireGuardSession(other.remote_index, bytes(32), "wrong")])
    analyzer = Analyzer(wrong)
    lines = [e.summary for e in read_file(path, analyzer=analyzer)]
    assert lines[2].endswith("(no session key opens it)")
    assert (analyzer.stats.wg_decrypted, analyzer.stats.wg_sealed) == (0, 3)  # all three transport messages


def test_keys_file_round_trip_and_errors(tmp_path: Path) -> None:
    _, a_keys = _pcap(tmp_path)
    ring = Keyring()
    ring.add_session_keys(a_keys, "a")
    f = tmp_path / "keys.json"
    ring.save(f)
    again = Keyring.load(f)
    assert again.wireguard == ring.wireguard and len(again.wireguard) == 2
    f.write_text('{"version": 1, "wireguard": [{"receiver_index": "zz", "key": "AAAA"}]}')
    with pytest.raises(UsageError, match=r"wireguard\[0\]: receiver_index must be a 32-bit number"):
        Keyring.load(f)
    f.write_text('{"version": 1, "wireguard": [{"receiver_index": 5, "key": "AAAA"}]}')
    with pytest.raises(UsageError, match=r"wireguard\[0\]: key must be 32 bytes"):
        Keyring.load(f)


def test_describe_ip_v6_and_truncated() -> None:
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6

    v6 = bytes(IPv6(src="fd7a::1", dst="fd7a::2") / ICMPv6EchoRequest())
    assert describe_ip(v6).startswith("fd7a::1 -> fd7a::2 ICMP echo-request")
    assert describe_ip(b"\x45\x00") == "truncated IP packet (2B)"
