"""Independent cross-check: tshark reads a pcap written by natkit and agrees with natkit's dissection.

The capture holds a STUN request and responses (XOR-MAPPED-ADDRESS v4 and v6, FINGERPRINT good and
bad) and the four WireGuard message types, on ports that are *not* tshark's defaults (3478 for STUN,
51820 for WireGuard). With its heuristic dissectors off (``--disable-heuristic stun_udp`` and
``wg``), tshark binds by port and needs ``-d udp.port==N,stun`` / ``-d udp.port==N,wg`` (decode as);
natkit finds them by content. tshark's fields are compared with natkit's, frame by frame.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import require_tool
from toolkit.codec import stun, wireguard
from toolkit.packets import crafter
from toolkit.packets.dissect import Analyzer
from toolkit.packets.sniffer import read_file
from toolkit.types import Endpoint, TxID

STUN_PORT, WG_PORT = 40000, 41000  # deliberately not 3478 / 51820
BY_PORT_ONLY = ["--disable-heuristic", "stun_udp", "--disable-heuristic", "wg"]
TX = TxID(bytes(range(1, 13)))
FIELDS = (
    "frame.number",
    "stun.type",
    "stun.att.ipv4",
    "stun.att.ipv6",
    "stun.att.port",
    "stun.att.crc32.status",
    "wg.type",
    "wg.sender",
    "wg.receiver",
    "wg.counter",
)


def _bad_fingerprint(wire: bytes) -> bytes:
    out = bytearray(wire)
    out[-1] ^= 0x01
    return bytes(out)


def write_capture(path: Path) -> None:
    a, s, p = "192.168.1.10:41641", f"203.0.113.1:{STUN_PORT}", f"198.51.100.9:{WG_PORT}"
    payloads = [
        (crafter.stun_binding_request(TX), a, s),
        (crafter.stun_binding_response(TX, Endpoint.parse("198.51.100.7:40001")), s, a),
        (crafter.stun_binding_response(TX, Endpoint.parse("[2001:db8::5]:40002")), s, a),
        (_bad_fingerprint(crafter.stun_binding_request(TX)), a, s),
        (crafter.wireguard_initiation(0x11223344), a, p),
        (crafter.wireguard_response(0x55667788, 0x11223344), p, a),
        (crafter.wireguard_cookie_reply(0x11223344), p, a),
        (crafter.wireguard_transport(0x55667788, 2**33 + 7, 100), a, p),
    ]
    crafter.write_pcap(path, [crafter.udp(data, src, dst) for data, src, dst in payloads])


def tshark_rows(tshark: str, path: Path) -> list[dict[str, str]]:
    cmd = [tshark, "-r", str(path), "-n", *BY_PORT_ONLY]
    cmd += ["-d", f"udp.port=={STUN_PORT},stun", "-d", f"udp.port=={WG_PORT},wg"]
    cmd += ["-T", "fields", "-E", "separator=|"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=60
    ).stdout  # root: a warning on stderr
    return [dict(zip(FIELDS, line.split("|"), strict=True)) for line in out.splitlines()]


def natkit_rows(path: Path) -> list[dict[str, str]]:
    """natkit's view, in tshark's field vocabulary."""
    rows = []
    for ev in read_file(path, analyzer=Analyzer()):
        row = dict.fromkeys(FIELDS, "")
        row["frame.number"] = str(ev.index)
        payload = ev.payload
        if ev.kind == "stun":
            msg = stun.decode(payload)
            row["stun.type"] = f"0x{msg.msg_type:04x}"
            ep = msg.mapped_endpoint
            if ep is not None:
                row["stun.att.ipv6" if ep.is_ipv6 else "stun.att.ipv4"] = str(ep.ip)
                row["stun.att.port"] = str(ep.port)
            ok = stun.verify_fingerprint(payload)
            row["stun.att.crc32.status"] = "" if ok is None else ("1" if ok else "0")  # tshark: 1 good, 0 bad
        elif ev.kind == "wireguard":
            msg = wireguard.decode(payload)
            row["wg.type"] = str(int(msg.TYPE))
            if hasattr(msg, "sender_index"):
                row["wg.sender"] = f"0x{msg.sender_index:08x}"
            if hasattr(msg, "receiver_index"):
                row["wg.receiver"] = f"0x{msg.receiver_index:08x}"
            if isinstance(msg, wireguard.Transport):
                row["wg.counter"] = str(msg.counter)
        rows.append(row)
    return rows


@pytest.mark.tool
def test_tshark_agrees_with_natkit_on_stun_and_wireguard(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    path = tmp_path / "natkit.pcap"
    write_capture(path)
    theirs, ours = tshark_rows(tshark, path), natkit_rows(path)
    assert len(theirs) == len(ours) == 8
    assert theirs == ours
    # and the values are the ones that were crafted (so the comparison is not vacuous)
    assert ours[1]["stun.att.ipv4"] == "198.51.100.7" and ours[1]["stun.att.port"] == "40001"
    assert ours[2]["stun.att.ipv6"] == "2001:db8::5"
    assert [r["stun.att.crc32.status"] for r in ours[:4]] == ["1", "1", "1", "0"]
    assert [r["wg.type"] for r in ours[4:]] == ["1", "2", "3", "4"]
    assert ours[7]["wg.counter"] == str(2**33 + 7)


@pytest.mark.tool
def test_by_port_tshark_misses_them_natkit_finds_them_by_content(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    path = tmp_path / "natkit.pcap"
    write_capture(path)
    cmd = [tshark, "-r", str(path), "-n", *BY_PORT_ONLY, "-T", "fields", "-e", "stun.type", "-e", "wg.type"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == []  # by port, tshark looks at 3478 and 51820, and these are elsewhere
    assert [e.kind for e in read_file(path)] == ["stun"] * 4 + ["wireguard"] * 4


@pytest.mark.tool
def test_tshark_reads_a_natkit_pcapng(tmp_path: Path) -> None:
    from toolkit.packets import pcapio
    from toolkit.packets.sniffer import PcapNgWriter

    tshark = require_tool("tshark")
    src, ng = tmp_path / "a.pcap", tmp_path / "a.pcapng"
    write_capture(src)
    w = PcapNgWriter(ng, pcapio.LINKTYPE_ETHERNET)
    for rec in pcapio.read_records(src):
        w.write(rec.data, rec.ts)
    w.close()
    assert tshark_rows(tshark, ng) == tshark_rows(tshark, src)
