"""The offline pipeline (``natkit decode``): a capture with malformed packets mixed in.

Every malformed packet is shown with its reason and counted, nothing stops the reading, and the
keyring opens the disco boxes it has keys for.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether

from toolkit.codec import derp, disco, geneve, stun
from toolkit.crypto import keys
from toolkit.packets import crafter, pcapio
from toolkit.packets.disco import Disco, DiscoCallMeMaybe, DiscoPing
from toolkit.packets.dissect import Analyzer, Event
from toolkit.packets.keyring import Keyring
from toolkit.packets.sniffer import read_file
from toolkit.types import Endpoint, TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"dissect-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"dissect-b")
C_PRIV, C_PUB = keys.disco_key_pair(b"dissect-c")
_, NODE = keys.node_key_pair(b"dissect-node")
_, SERVER = keys.node_key_pair(b"dissect-derp")
TX = TxID(bytes(range(1, 13)))
A, B, STUN_SRV = "192.168.1.10:41641", "198.51.100.9:41641", "203.0.113.1:3478"


def _bad_fingerprint() -> bytes:
    wire = bytearray(stun.tailnode_request(TX))
    wire[-1] ^= 0xFF
    return bytes(wire)


def build_capture(path: Path) -> list[str]:
    """Write the mixed capture; return the expected kind of each UDP line, in order."""
    ping = crafter.disco_ping(A_PRIV, B_PUB, txid=TX, node_key=NODE)
    packets = [
        (crafter.udp(crafter.stun_binding_request(TX), A, STUN_SRV), "stun"),
        (crafter.udp(crafter.stun_binding_response(TX, Endpoint.parse("203.0.113.7:40001")), STUN_SRV, A), "stun"),
        (crafter.udp(stun.tailnode_request(TX)[:30], A, STUN_SRV), "stun"),  # truncated
        (crafter.udp(_bad_fingerprint(), A, STUN_SRV), "stun"),  # bad FINGERPRINT
        (crafter.udp(ping, A, B), "disco"),  # opens (we hold B's key)
        (crafter.udp(crafter.disco_ping(C_PRIV, A_PUB), B, A), "disco"),  # nobody's key
        (crafter.udp(ping[:70], A, B), "disco"),  # truncated wrapper
        (crafter.udp(crafter.wireguard_initiation(7), A, B), "wireguard"),
        (crafter.udp(crafter.wireguard_initiation(7)[:120], A, B), "wireguard"),  # wrong size
        (crafter.udp(geneve.Header(geneve.PROTO_DISCO, 5).encode() + ping, A, B), "geneve-disco"),
        (crafter.udp(b"\x12\x34\x01\x00" + bytes(30), A, "192.0.2.53:53"), "unknown"),  # DNS-ish
        (Ether() / ARP(), None),  # not IP
        (IP(src="192.0.2.1", dst="192.0.2.2", frag=10, proto=17) / b"fragment", None),  # a later fragment
    ]
    conv = crafter.tcp_conversation(
        "192.168.1.10:50000",
        "203.0.113.5:443",
        [
            (True, derp.upgrade_request("derp.example")),
            (False, derp.upgrade_response(SERVER) + derp.ServerKey(SERVER).encode()),
            (True, derp.SendPacket(NODE, crafter.disco_call_me_maybe(A_PRIV, B_PUB, [Endpoint.parse(A)])).encode()),
            (True, derp.frame_header(derp.FrameType.NOTE_PREFERRED, 2) + b"\x01\x01"),  # bad length
        ],
        segment=29,
    )
    crafter.write_pcap(path, [p for p, _ in packets] + conv)
    return [k for _, k in packets if k is not None]


@pytest.fixture
def capture(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "mixed.pcap"
    return path, build_capture(path)


def _read(path: Path, keyring: Keyring | None = None) -> tuple[list[Event], Analyzer]:
    analyzer = Analyzer(keyring)
    return list(read_file(path, analyzer=analyzer)), analyzer


def test_malformed_packets_are_counted_with_reasons_and_reading_goes_on(capture: tuple[Path, list[str]]) -> None:
    path, kinds = capture
    events, analyzer = _read(path, Keyring([B_PRIV]))
    udp = [e for e in events if e.transport == "udp"]
    assert [e.kind for e in udp] == kinds
    s = analyzer.stats
    assert s.packets == len(list(pcapio.read_records(path)))
    assert s.other == 2  # ARP and the fragment
    assert s.malformed == {"truncated": 3, "bad-checksum": 1, "bad-length": 1}
    assert s.internal_errors == 0
    reasons = [e.error.reason for e in events if e.error is not None]
    assert sorted(reasons) == ["bad-checksum", "bad-length", "truncated", "truncated", "truncated"]
    for e in events:
        if e.error is not None:
            assert f"({e.error.reason})" in e.summary or f"[malformed: {e.error.reason}]" in e.summary
    assert "UDP 34B, not STUN, disco or WireGuard" in udp[10].summary
    assert "Geneve vni=5 proto=disco | disco Ping" in udp[9].summary


def test_keyring_opens_the_disco_ping_in_the_capture(capture: tuple[Path, list[str]]) -> None:
    path, _ = capture
    events, analyzer = _read(path, Keyring([B_PRIV]))
    ping = next(e for e in events if e.opened is not None and e.transport == "udp")
    assert ping.summary == f"disco Ping tx=0102.. {NODE.short()} from {A_PUB.short()} to {B_PUB.short()}"
    pkt = ping.packet()
    assert isinstance(pkt[Disco].payload, DiscoPing) and pkt[DiscoPing].node_key == NODE.raw
    assert "###[ disco Ping ]###" in ping.dissection()
    assert analyzer.stats.disco_opened == 3  # the ping, the Geneve-wrapped ping, CallMeMaybe over DERP
    assert analyzer.stats.disco_sealed == 1


def test_without_keys_disco_stays_sealed_and_says_how_to_open(capture: tuple[Path, list[str]]) -> None:
    events, analyzer = _read(capture[0])
    disco_lines = [e.summary for e in events if e.kind == "disco" and e.error is None]
    assert disco_lines and all("--keys FILE opens it" in s for s in disco_lines)
    assert analyzer.stats.disco_opened == 0


def test_derp_frames_are_cut_from_the_tcp_stream(capture: tuple[Path, list[str]]) -> None:
    events, analyzer = _read(capture[0], Keyring([B_PRIV]))
    derp_events = [e for e in events if e.kind == "derp"]
    texts = [e.summary for e in derp_events]
    assert texts[0] == "DERP upgrade request GET /derp Upgrade: DERP"
    assert texts[1].startswith("DERP upgrade response 101 Switching Protocols, version 2 server nodekey:")
    assert texts[2] == f"DERP ServerKey {SERVER.short()}"
    assert texts[3].startswith(f"DERP SendPacket to {NODE.short()}") and "disco CallMeMaybe 1 endpoint" in texts[3]
    assert derp_events[4].error is not None and derp_events[4].error.reason == "bad-length"
    assert dict(analyzer.stats.derp_frames) == {"ServerKey": 1, "SendPacket": 1}
    pkt = derp_events[3].packet()
    assert pkt.haslayer(Disco) and pkt.haslayer(DiscoCallMeMaybe) and not pkt.haslayer(DiscoPing)
    assert "###[ disco CallMeMaybe ]###" in derp_events[3].dissection()


def test_lines_and_stats_read_like_lessons(capture: tuple[Path, list[str]]) -> None:
    events, analyzer = _read(capture[0], Keyring([B_PRIV]))
    first = events[0].line(events[0].ts)
    assert first == (
        "    1   0.000000  192.168.1.10:41641 -> 203.0.113.1:3478  "
        'STUN Binding Request  software="tailnode" fingerprint ok'
    )
    text = analyzer.stats.format()
    assert "malformed: 5 (bad-checksum 1, bad-length 1, truncated 3)" in text
    assert "disco: 3 opened, 1 left sealed" in text


def test_truncated_capture_file_and_garbage_record_do_not_stop(tmp_path: Path) -> None:
    path = tmp_path / "cut.pcap"
    with pcapio.PcapWriter(path, pcapio.LINKTYPE_RAW) as w:
        w.write(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / stun.tailnode_request(TX)), 1.0)
        w.write(b"\x45\x00\x00", 2.0)  # a broken IP header
        w.write(b"\x60" + bytes(10), 3.0)  # a broken IPv6 header
        w.write(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP(sport=1, dport=2) / stun.tailnode_request(TX)), 4.0)
    path.write_bytes(path.read_bytes()[:-7])  # the last record is cut short
    events, analyzer = _read(path)
    assert len(events) == 1 and analyzer.stats.other == 2 and analyzer.stats.internal_errors == 0


def test_unexpected_exception_is_an_event_not_a_crash(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    crafter.write_pcap(path, [crafter.udp(stun.tailnode_request(TX), A, STUN_SRV)] * 2)
    analyzer = Analyzer()
    calls = iter([RuntimeError("boom"), None])

    def flaky(payload: bytes) -> object:
        exc = next(calls)
        if exc is not None:
            raise exc
        return Analyzer.describe(analyzer, payload)

    monkeypatch.setattr(analyzer, "describe", flaky)
    events = list(read_file(path, analyzer=analyzer))
    assert [e.kind for e in events] == ["internal-error", "stun"]
    assert "RuntimeError: boom" in events[0].summary
    assert analyzer.stats.internal_errors == 1


def test_pong_message_round_trip_through_a_file(tmp_path: Path) -> None:
    pong = disco.Pong(TX, Endpoint.parse("[2001:db8::7]:40001"))
    path = tmp_path / "pong.pcap"
    crafter.write_pcap(
        path, [crafter.udp(crafter.disco_bytes(pong, B_PRIV, A_PUB), "[2001:db8::1]:1", "[2001:db8::2]:2")]
    )
    (event,) = _read(path, Keyring([A_PRIV]))[0]
    assert event.opened is not None and event.opened.message == pong
    assert event.src == "[2001:db8::1]:1"


def test_names_from_the_keyring_replace_keys_in_lines(capture: tuple[Path, list[str]]) -> None:
    ring = Keyring([B_PRIV])
    ring.name(A_PUB, "alice")
    ring.name(B_PUB, "bob")
    ring.name(NODE, "bob-node")
    events, _ = _read(capture[0], ring)
    assert any(e.summary == "disco Ping tx=0102.. bob-node from alice to bob" for e in events)
    assert any(e.summary.startswith("DERP SendPacket to bob-node ") for e in events)
