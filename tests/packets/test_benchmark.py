"""`natkit bench`: the mixed capture is what it says, and natkit and tshark agree on it.

These tests check correctness of the benchmark, not speed (figures come from `natkit bench`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_tool
from toolkit.codec import demux
from toolkit.crypto.disco import DiscoKeyring
from toolkit.packets import pcapio
from toolkit.packets.benchmark import make_capture, run_decode_bench
from toolkit.types import DiscoPrivateKey


def test_make_capture_is_deterministic_and_mixed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    info = make_capture(a, n=600, seed=7)
    make_capture(b, n=600, seed=7)
    assert a.read_bytes() == b.read_bytes()
    make_capture(b, n=600, seed=8)
    assert a.read_bytes() != b.read_bytes()
    mix = info["mix"]
    assert isinstance(mix, dict) and sum(mix.values()) == 600
    assert {"stun-request", "stun-response", "disco-ping", "disco-pong", "wg-transport"} <= set(mix)


def test_every_packet_decodes_and_disco_opens_with_the_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "m.pcap"
    info = make_capture(path, n=800, seed=3)
    keys = json.loads(Path(str(info["keys"])).read_text())
    ring = DiscoKeyring([DiscoPrivateKey.parse(k) for k in keys["disco_private"]])
    opened = 0
    for t in pcapio.udp_payloads(path):
        d = demux.decode_datagram(t.payload)
        assert d.error is None, d.error
        if d.kind is demux.Kind.DISCO:
            assert ring.try_open(t.payload) is not None
            opened += 1
    assert opened > 100


def test_decode_bench_reports_and_tshark_agrees(tmp_path: Path) -> None:
    require_tool("tshark")
    path = tmp_path / "m.pcap"
    make_capture(path, n=1500, seed=5)
    r = run_decode_bench(path, repeat=1, scapy_sample=200)
    kinds = r["kinds"]
    assert isinstance(kinds, dict) and "error" not in kinds
    counts = r["tshark_counts"]
    assert isinstance(counts, dict)
    assert counts["rows"] == 1500
    assert counts["stun"] == kinds["stun"]
    assert counts["wireguard"] == kinds["wireguard"]
    for key in ("natkit_end_to_end_pps", "natkit_codec_only_pps", "tshark_pps", "scapy_dissect_pps"):
        assert isinstance(r[key], float) and r[key] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bench", "decode", "/nonexistent.pcap"], "no such capture file"),
        (["bench", "make-pcap", "/tmp/x.pcap", "-n", "0"], "-n must be positive"),
        (["bench", "decode", "/tmp/x.pcap", "--repeat", "0"], "--repeat must be at least 1"),
    ],
)
def test_bench_cli_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    res = subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, check=False)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and message in res.stderr
