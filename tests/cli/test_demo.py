"""`natkit demo`: the node demo on sim walks the flowchart; `--packets`: the packet walk-through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from toolkit.packets import pcapio


def _demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "demo", *args], capture_output=True, text=True, check=False, timeout=120
    )


def test_demo_walks_through_every_frame_kind(tmp_path: Path) -> None:
    res = _demo("--packets", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for expected in (
        'STUN Binding Request  software="tailnode" fingerprint ok  (40 bytes',
        "STUN Binding Success  xor-mapped 203.0.113.7:40001",
        "on the wire: 124 bytes",
        "B opens it with its private key",
        "A's own key cannot open what A sealed to B: OpenError",
        "WireGuard Initiation sender=0x1a2b3c4d  (148 bytes)",
        "WireGuard Response sender=0x5e6f7081 rx=0x1a2b3c4d  (92 bytes)",
        "WireGuard CookieReply rx=0x1a2b3c4d  (64 bytes)",
        "keepalive  (32 bytes)",
        '{"version":2,"CanAckPings":true}',
        "->  stun",
        "->  disco",
        "->  wireguard",
        "disco: 3 opened, 0 left sealed",
        "A sends with what B receives with: True",
        "[A<->B out]: 100.64.0.1 -> 100.64.0.2 ICMP echo-request",
        "[A<->B in]: 100.64.0.2 -> 100.64.0.1 ICMP echo-reply",
        "WireGuard transport: 3 decrypted, 0 left sealed",
        "malformed: 0",
        "###[ disco Ping ]###",
    ):
        assert expected in out, f"missing {expected!r} in demo output"
    pcap = tmp_path / "natkit-demo.pcap"
    assert len(list(pcapio.read_records(pcap))) == 14
    assert (tmp_path / "natkit-demo.pcap.keys.json").exists()


def test_demo_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert _demo("--packets", "--out", str(a), "--no-dissect").returncode == 0
    assert _demo("--packets", "--out", str(b), "--no-dissect").returncode == 0
    assert (a / "natkit-demo.pcap").read_bytes() == (b / "natkit-demo.pcap").read_bytes()


def test_demo_out_must_be_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    res = _demo("--packets", "--out", str(f))
    assert res.returncode == 2
    assert res.stderr.strip().startswith("natkit: error: --out") and res.stderr.count("\n") == 1


def test_node_demo_walks_the_flowchart_falls_back_and_returns() -> None:
    res = _demo()
    assert res.returncode == 0, res.stderr
    out = res.stdout
    lines = out.splitlines()
    assert lines[0].startswith("natkit demo: easy-easy on sim:")
    # the seed's edges in order, each printed with its label and, where a packet caused it, the packet
    for edge in (
        "Start -> GetInfo",
        "CheckDirect -[Behind NAT]-> StartDERP",
        "StartDERP -> DERPActive",
        "SendSTUN -> MultiProbe",
        "AnalyzeResponses -[Yes]-> ValidatePath",
        "DirectStable -[Yes]-> DirectActive",
        "DirectStable -[No]-> FallbackDERP",
    ):
        assert edge in out, f"missing {edge!r}"
    assert "disco Pong" in next(line for line in lines if "MultiProbe -> AnalyzeResponses" in line)
    assert out.index("FallbackDERP") < out.rindex("DirectStable -[Yes]-> DirectActive")
    assert "pong from bob (100.64.0.2) via 203.0.113.2:41641" in out
    fell = next(line for line in lines if line.startswith("fell back to DERP"))
    assert float(fell.split()[4]) <= 6.5 + 5.0  # trust window + one ping timeout
    assert "direct again" in out and out.rstrip().endswith("lab down")


def test_node_demo_flags_belong_to_their_mode() -> None:
    res = _demo("--out", "/tmp")
    assert res.returncode == 2 and "add --packets" in res.stderr
