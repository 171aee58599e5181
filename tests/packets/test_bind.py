"""Content-based binding: natkit's layers under UDP on any port, by the codec's demux rules."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from toolkit.codec import demux, geneve, stun, wireguard
from toolkit.packets import bind, crafter
from toolkit.packets.disco import Disco, TSGeneve
from toolkit.packets.stun import STUN
from toolkit.packets.wireguard import WireGuard, WireGuardInitiation, WireGuardTransport
from toolkit.types import Endpoint, TxID

TX = TxID(bytes(range(12)))
PAYLOADS = {
    "stun": (stun.tailnode_request(TX), STUN),
    "disco": (b"TS\xf0\x9f\x92\xac" + bytes(32 + 24 + 16 + 30), Disco),
    "wireguard": (wireguard.Initiation(1, bytes(32), bytes(48), bytes(28), bytes(16)).encode(), WireGuardInitiation),
    "geneve-wg": (geneve.Header(geneve.PROTO_WIREGUARD, 9).encode() + b"\x04\x00\x00\x00" + bytes(28), TSGeneve),
}


def _over_udp(payload: bytes, sport: int, dport: int, v6: bool = False) -> IP:
    ip = IPv6(src="::1", dst="::1") if v6 else IP(src="127.0.0.1", dst="127.0.0.1")
    cls = IPv6 if v6 else IP
    return cls(bytes(ip / UDP(sport=sport, dport=dport) / Raw(payload)))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(PAYLOADS)), st.integers(1024, 65535), st.integers(1024, 65535), st.booleans())
def test_layers_are_found_on_random_ports(name: str, sport: int, dport: int, v6: bool) -> None:
    payload, cls = PAYLOADS[name]
    pkt = _over_udp(payload, sport, dport, v6)
    assert isinstance(pkt[UDP].payload, cls)
    assert bytes(pkt[UDP].payload) == payload


def test_binding_uses_the_codec_demux() -> None:
    for payload, cls in PAYLOADS.values():
        kind = demux.classify(payload)
        assert bind.datagram_class(payload) is cls
        assert kind is not demux.Kind.UNKNOWN
    assert isinstance(_over_udp(PAYLOADS["geneve-wg"][0], 5000, 6000)[TSGeneve].payload, WireGuardTransport)


def test_other_udp_stays_raw() -> None:
    dns_like = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
    assert isinstance(_over_udp(dns_like, 40000, 5353)[UDP].payload, Raw)
    assert bind.datagram_class(b"short") is Raw


def test_malformed_wireguard_still_shows_as_wireguard_with_the_reason() -> None:
    bad = b"\x01\x00\x00\x00" + bytes(100)  # an initiation of the wrong size
    layer = _over_udp(bad, 41641, 41641)[UDP].payload
    assert isinstance(layer, WireGuard)
    assert "malformed: truncated" in layer.mysummary()


def test_uninstall_and_install() -> None:
    payload = PAYLOADS["stun"][0]
    try:
        bind.uninstall()
        assert not bind.installed()
        assert isinstance(_over_udp(payload, 40000, 40001)[UDP].payload, Raw)
    finally:
        bind.install()
        bind.install()  # idempotent
    assert sum(upper is bind.NatkitDatagram for _, upper in UDP.payload_guess) == 1
    assert isinstance(_over_udp(payload, 40000, 40001)[UDP].payload, STUN)


def test_crafted_udp_packet_carries_the_layer() -> None:
    pkt = crafter.udp(PAYLOADS["stun"][0], "192.0.2.1:1234", Endpoint.parse("198.51.100.2:40000"))
    again = IP(bytes(pkt))
    assert isinstance(again[UDP].payload, STUN) and again[UDP].sport == 1234 and again.dst == "198.51.100.2"


def test_import_toolkit_does_not_import_scapy() -> None:
    code = "import sys, toolkit, toolkit.cli; print('scapy' in sys.modules, 'toolkit.packets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
