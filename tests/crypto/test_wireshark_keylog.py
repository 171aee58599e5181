"""Wireshark's own WireGuard implementation decrypts a natkit handshake and its transport data.

An independent check of the whole key schedule (protocols.md §8.3) and of the key-log format:
natkit makes a handshake and transport packets in memory, writes them to a pcap with the
initiator's key log, and tshark (Debian) must find the handshake valid and dissect the inner
ICMP packets both ways.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP

from tests.support import require_tool
from toolkit.crypto import keys, noise
from toolkit.crypto.keylog import HandshakeSecrets, append_keylog, read_keylog
from toolkit.errors import UsageError
from toolkit.packets import pcapio

A, B = ("10.99.0.1", 51820), ("10.99.0.2", 51820)


def _capture(tmp_path: Path, psk: bytes) -> tuple[Path, Path, str]:
    a_priv, a_pub = keys.node_key_pair(b"keylog a")
    b_priv, b_pub = keys.node_key_pair(b"keylog b")
    a_eph = keys.generate_node_key(b"keylog a eph").raw
    init, i_state = noise.create_initiation(
        a_priv, b_pub, ephemeral=a_eph, now_wall=1_700_000_000.0, sender_index=0x11223344, psk=psk
    )
    _, _, r_state = noise.consume_initiation(b_priv, init)
    resp, b_keys = noise.create_response(
        r_state, ephemeral=keys.generate_node_key(b"keylog b eph").raw, sender_index=0x55667788, now=0.0, psk=psk
    )
    a_keys = noise.consume_response(i_state, resp, now=0.0)
    ping = bytes(IP(src="100.64.0.1", dst="100.64.0.2") / ICMP(type=8, id=7, seq=1) / b"natkit")
    pong = bytes(IP(src="100.64.0.2", dst="100.64.0.1") / ICMP(type=0, id=7, seq=1) / b"natkit")
    pcap = tmp_path / "wg.pcap"
    with pcapio.PcapWriter(pcap) as w:
        w.write(pcapio.udp_frame(*A, *B, init), 1.0)
        w.write(pcapio.udp_frame(*B, *A, resp), 1.1)
        w.write(pcapio.udp_frame(*A, *B, noise.seal_transport(a_keys, 0, noise.pad(ping, 1420))), 1.2)
        w.write(pcapio.udp_frame(*B, *A, noise.seal_transport(b_keys, 0, noise.pad(pong, 1420))), 1.3)
        w.write(pcapio.udp_frame(*A, *B, noise.seal_transport(a_keys, 1, b"")), 1.4)  # keepalive
    keylog = tmp_path / "wg.keys"
    append_keylog(keylog, [HandshakeSecrets(a_priv, b_pub, a_eph, psk)])
    return pcap, keylog, a_pub.b64()


@pytest.mark.parametrize("psk", [bytes(32), bytes(range(32))], ids=["no-psk", "psk"])
def test_tshark_decrypts_natkit_wireguard(tmp_path: Path, psk: bytes) -> None:
    tshark = require_tool("tshark")
    pcap, keylog, a_pub = _capture(tmp_path, psk)
    fields = ["wg.type", "wg.handshake_ok", "wg.keepalive", "icmp.type", "icmp.seq", "wg.static", "wg.timestamp.value"]
    cmd = [tshark, "-r", str(pcap), "-o", f"wg.keylog_file:{keylog}", "-d", "udp.port==51820,wg", "-T", "fields"]
    out = subprocess.run([*cmd, *[x for f in fields for x in ("-e", f)]], capture_output=True, text=True, check=True)
    rows = [line.split("\t") for line in out.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "4", "4", "4"]
    assert rows[0][5] == a_pub and "2023" in rows[0][6], rows  # initiation: static key and TAI64N decrypted
    assert rows[1][1] == "1", rows  # response: handshake verified
    assert rows[2][3:5] == ["8", "1"], rows  # echo request, decrypted from A's transport data
    assert rows[3][3:5] == ["0", "1"], rows  # echo reply, from B's
    assert rows[4][2] == "1", rows  # keepalive


def test_without_the_key_log_tshark_sees_only_ciphertext(tmp_path: Path) -> None:
    tshark = require_tool("tshark")
    pcap, _, _ = _capture(tmp_path, bytes(32))
    out = subprocess.run(
        [tshark, "-r", str(pcap), "-d", "udp.port==51820,wg", "-T", "fields", "-e", "icmp.type"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == []


def test_key_log_round_trip_and_errors(tmp_path: Path) -> None:
    _, keylog, _ = _capture(tmp_path, bytes(range(32)))
    parsed = read_keylog(keylog)
    assert [len(parsed[k]) for k in ("LOCAL_STATIC_PRIVATE_KEY", "REMOTE_STATIC_PUBLIC_KEY")] == [1, 1]
    assert len(parsed["LOCAL_EPHEMERAL_PRIVATE_KEY"]) == 1 and len(parsed["PRESHARED_KEY"]) == 1
    bad = tmp_path / "bad.keys"
    bad.write_text("LOCAL_STATIC_PRIVATE_KEY = notbase64!!\n")
    with pytest.raises(UsageError, match=r"bad.keys:1: LOCAL_STATIC_PRIVATE_KEY"):
        read_keylog(bad)
    bad.write_text("SOMETHING = x\n")
    with pytest.raises(UsageError, match="expected '<key-type> = <base64>'"):
        read_keylog(bad)
