"""`natkit bench upgrade` on sim (toolkit/lab/benchupgrade.py): two real sim nodes on easy-easy with link latencies
go from alice's first packet to DirectActive within 1.2x of the physical minimum; the figures come from the trace
records. The netns half (against aioice) is in tests/lab/netns/test_benchupgrade.py."""

from __future__ import annotations

import json
import os
import time

import pytest

from toolkit.cli import main
from toolkit.errors import UsageError
from toolkit.lab import benchupgrade
from toolkit.lab.upgrademeasure import cmm_delivery, cpu_ticks, direct_rtt, first_packet, peak_kib
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Endpoint, NodePublicKey

ALICE, BOB = NodePublicKey(bytes([1]) * 32), NodePublicKey(bytes([2]) * 32)


def test_sim_reaches_direct_within_the_goal_of_the_physical_minimum() -> None:
    lines: list[str] = []
    report = benchupgrade.run_upgrade_bench(3, ["sim"], explicit=True, progress=lines.append)
    sim = report["sim"]
    assert sim["error"] is None and sim["failures"] == [] and len(sim["runs"]) == 3
    # the physical minimum on easy-easy with 10 ms internet / 1 ms LAN links, one way: the CallMeMaybe goes
    # alice -> r1 -> DERP -> r2 -> bob (2 x 11 ms), a direct round trip is alice <-> bob (2 x 12 ms)
    assert sim["median_cmm_delivery_s"] == pytest.approx(0.022, abs=1e-6)
    assert sim["median_rtt_s"] == pytest.approx(0.024, abs=1e-6)
    assert sim["median_minimum_s"] == pytest.approx(0.046, abs=1e-6)
    for run in sim["runs"]:
        assert run["alice_path"] == run["bob_path"] == "direct"
        assert run["alice_state"] == run["bob_state"] == "DirectActive"
        # nothing beats physics: bob needs the CallMeMaybe and a pong; alice needs bob's ping to open bob's NAT
        assert run["bob_s"] >= run["minimum_s"] - 1e-9
        assert run["alice_s"] >= run["bob_s"]
        assert run["both_s"] == max(run["alice_s"], run["bob_s"])
    assert 1.0 <= sim["ratio"] <= benchupgrade.GOAL_SIM_RATIO
    assert report["goals"]["sim"] == {"goal": "<= 1.2x minimum", "value": sim["ratio"], "met": True}
    print(f"\nsim: bob {sim['median_bob_s'] * 1000:.1f} ms, alice {sim['median_alice_s'] * 1000:.1f} ms,", end=" ")
    print(f"minimum {sim['median_minimum_s'] * 1000:.1f} ms, ratio {sim['ratio']:.2f}x")
    assert any(x.startswith("sim: run 3/3: direct alice ") for x in lines)
    text = benchupgrade.format_report(report)
    assert "bob / minimum = 1.00x   goal <= 1.2x minimum: met" in text


def test_cli_json_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "upgrade", "--backends", "sim", "--repeat", "1", "--format", "json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 0 and report["sim"]["median_bob_s"] > 0 and "netns" not in report
    assert "sim: run 1/1: direct" in err


def test_usage_errors_and_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="runs on sim, netns, not 'docker'"):
        benchupgrade.run_upgrade_bench(1, ["sim", "docker"])
    with pytest.raises(UsageError, match="--repeat must be at least 1"):
        benchupgrade.run_upgrade_bench(0, ["sim"])
    with pytest.raises(UsageError, match="--idle must be 0 or more"):
        benchupgrade.run_upgrade_bench(1, ["sim"], idle=-1)
    monkeypatch.setattr(benchupgrade.os, "geteuid", lambda: 1000)  # not root: netns cannot run
    with pytest.raises(UsageError, match=r"netns: needs root .* `sudo natkit bench upgrade`"):
        benchupgrade.run_upgrade_bench(1, ["netns"], explicit=True)
    report = benchupgrade.run_upgrade_bench(1, None, progress=lambda line: None)
    assert report["skipped"]["netns"].startswith("needs root") and report["sim"]["failures"] == []
    assert not benchupgrade.failed(report)


def _rec(at: float, node: str, peer: NodePublicKey, kind: str, detail: str, raw: bytes = b"",
         endpoint: Endpoint | None = None) -> TraceRecord:  # fmt: skip
    return TraceRecord(at, node, peer, kind, detail, None, raw, endpoint)  # type: ignore[arg-type]


def test_the_figures_read_from_records() -> None:
    a_key, b_key = ALICE.text(), BOB.text()
    magic = derp_magic_endpoint(1)
    cmm = bytes(38)  # a CallMeMaybe with 2 endpoints: sealed, 78 + 38 = 116 bytes
    alice = [
        _rec(0.5, "alice", BOB, "sent", "WireGuard Initiation", endpoint=magic),
        _rec(0.5, "alice", BOB, "sent", "disco CallMeMaybe 2 endpoints", cmm, magic),
        _rec(0.4, "alice derp r1", BOB, "sent", "DERP SendPacket to bob 116B"),  # a driver's stale clock: unused
    ]
    frame = bytes(5) + ALICE.raw
    bob = [
        _rec(0.52, "bob derp r1", ALICE, "received", "DERP RecvPacket 148B", frame + bytes(148)),  # the handshake
        _rec(0.53, "bob derp r1", ALICE, "received", "DERP RecvPacket 116B", frame + bytes(116)),  # the CMM
        _rec(0.60, "bob", ALICE, "received", "disco Pong tx=01.. 3.0ms", endpoint=magic),  # over DERP: not direct
        _rec(0.61, "bob", ALICE, "received", "disco Pong tx=02.. 24.0ms", endpoint=Endpoint.parse("203.0.113.1:1")),
    ]
    assert first_packet(alice, "alice", b_key) == 0.5
    assert first_packet(alice, "alice", a_key) is None
    assert cmm_delivery(alice, bob, "alice", "bob", a_key, b_key) == pytest.approx(0.03)
    assert direct_rtt(bob, "bob", a_key) == pytest.approx(0.024)
    # a node that traces the CallMeMaybe it receives is read directly
    bob.append(_rec(0.525, "bob", ALICE, "received", "disco CallMeMaybe 2 endpoints", cmm, magic))
    assert cmm_delivery(alice, bob, "alice", "bob", a_key, b_key) == pytest.approx(0.025)


def test_cpu_and_memory_of_a_process() -> None:
    before = cpu_ticks(os.getpid())
    end = time.process_time() + 0.1
    while time.process_time() < end:  # burn 100 ms of CPU: at least a few clock ticks
        pass
    assert cpu_ticks(os.getpid()) > before
    assert 10_000 < peak_kib(os.getpid()) < 10_000_000  # a Python interpreter with pytest: tens of MiB
