"""The stdlib pcap reader/writer (toolkit/packets/pcapio.py), cross-checked with scapy and tshark."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import require_tool
from toolkit.errors import UsageError
from toolkit.packets import pcapio

FLOWS = [
    ("192.168.1.10", 41641, "203.0.113.7", 3478, b"hello v4"),
    ("2001:db8::1", 41641, "2001:db8::2", 41641, b"hello v6" * 3),
    ("10.0.0.1", 1, "10.0.0.2", 2, b""),
]


def _write(path: Path, ethernet: bool = True) -> None:
    lt = pcapio.LINKTYPE_ETHERNET if ethernet else pcapio.LINKTYPE_RAW
    with pcapio.PcapWriter(path, linktype=lt) as w:
        for i, (s, sp, d, dp, payload) in enumerate(FLOWS):
            w.write(pcapio.udp_frame(s, sp, d, dp, payload, ethernet=ethernet), ts=1700000000 + i + 0.25)


@pytest.mark.parametrize("ethernet", [True, False])
def test_round_trip(tmp_path: Path, ethernet: bool) -> None:
    path = tmp_path / "t.pcap"
    _write(path, ethernet)
    got = list(pcapio.udp_payloads(path))
    assert [(t.src, t.dst, t.payload) for t in got] == [
        ("192.168.1.10:41641", "203.0.113.7:3478", b"hello v4"),
        ("[2001:db8::1]:41641", "[2001:db8::2]:41641", b"hello v6" * 3),
        ("10.0.0.1:1", "10.0.0.2:2", b""),
    ]
    assert got[0].ts == pytest.approx(1700000000.25)


def test_scapy_reads_our_pcap_and_we_read_scapys_pcapng(tmp_path: Path) -> None:
    from scapy.all import IP, UDP, Ether, rdpcap, wrpcapng

    path = tmp_path / "t.pcap"
    _write(path)
    pkts = rdpcap(str(path))
    assert len(pkts) == len(FLOWS)
    assert bytes(pkts[0][UDP].payload) == b"hello v4"
    # scapy recomputes checksums: ours must equal them
    p = pkts[0]
    orig_ip, orig_udp = p[IP].chksum, p[UDP].chksum
    del p[IP].chksum, p[UDP].chksum
    rebuilt = Ether(bytes(p))
    assert (rebuilt[IP].chksum, rebuilt[UDP].chksum) == (orig_ip, orig_udp)

    ng = tmp_path / "t.pcapng"
    wrpcapng(str(ng), pkts)
    assert [t.payload for t in pcapio.udp_payloads(ng)] == [f[4] for f in FLOWS]


def test_tshark_validates_our_checksums(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    path = tmp_path / "t.pcap"
    _write(path)
    out = subprocess.run(
        [
            tshark,
            "-r",
            str(path),
            "-o",
            "udp.check_checksum:TRUE",
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "udp.checksum.status",
            "-e",
            "ip.checksum.status",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    rows = [line.split("\t") for line in out if line]
    assert len(rows) == len(FLOWS)
    # Wireshark's checksum status enum: 0 bad, 1 good, 2 unverified; the IPv6 row has no IP checksum
    assert all(r[0] == "1" for r in rows), rows
    assert rows[0][1] == "1"


def test_bad_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such capture file"):
        list(pcapio.read_records(tmp_path / "missing.pcap"))
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    with pytest.raises(UsageError, match="not a pcap"):
        list(pcapio.read_records(junk))


def test_truncated_last_record_ends_quietly(tmp_path: Path) -> None:
    path = tmp_path / "t.pcap"
    _write(path)
    path.write_bytes(path.read_bytes()[:-5])
    assert len(list(pcapio.udp_payloads(path))) == len(FLOWS) - 1


def test_tcp_segments_round_trip_and_tshark_checks_them(tmp_path: Path) -> None:
    path = tmp_path / "tcp.pcap"
    with pcapio.PcapWriter(path) as w:
        w.write(pcapio.tcp_frame("192.168.1.10", 50000, "203.0.113.201", 80, b"GET /derp HTTP/1.1\r\n\r\n", seq=1000))
        w.write(pcapio.tcp_frame("2001:db8::1", 50001, "2001:db8::2", 80, b"\x06\x00\x00\x00\x00", seq=7, ack=9))
    got = [pcapio.transport(r) for r in pcapio.read_records(path)]
    assert [(t.proto, t.src, t.dst, t.tcp_seq, t.payload[:3]) for t in got if t] == [
        (pcapio.IPPROTO_TCP, "192.168.1.10:50000", "203.0.113.201:80", 1000, b"GET"),
        (pcapio.IPPROTO_TCP, "[2001:db8::1]:50001", "[2001:db8::2]:80", 7, b"\x06\x00\x00"),
    ]
    tshark = require_tool("tshark")
    out = subprocess.run(
        [tshark, "-r", str(path), "-o", "tcp.check_checksum:TRUE", "-T", "fields", "-e", "tcp.checksum.status"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["1", "1"]
