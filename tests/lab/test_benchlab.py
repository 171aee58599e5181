"""`natkit bench lab` (toolkit/lab/benchlab.py): real labs brought up until reachable and down, on sim, netns
and docker; skipped backends; a lab whose services cannot be reached counts as failed, not as fast."""

from __future__ import annotations

import json

import pytest

from tests.support import require_root, require_tool
from toolkit.cli import main
from toolkit.errors import UsageError
from toolkit.lab import benchlab, labprobe
from toolkit.lab.registry import load_topology


def test_sim_bench_probes_through_each_nat() -> None:
    lines: list[str] = []
    report = benchlab.run_lab_bench("easy-easy", 2, ["sim"], explicit=True, progress=lines.append)
    sim = report["sim"]
    assert sim["error"] is None and sim["runs"] == 2 and sim["left_behind"] == []
    assert 0 < sim["median_lab_up"] < sim["median_up"]
    assert sim["median_up"] == pytest.approx(sum(sim["up"]) / 2, abs=2e-6)  # the median of two runs
    # the STUN answers came through the NAT routers: alice appears as r1's WAN address, bob as r2's
    assert any(x.startswith("alice -> stun 198.51.100.10:3478: mapped 203.0.113.1:") for x in sim["probe_lines"])
    assert any(x.startswith("bob -> stun 198.51.100.11:3479: mapped 203.0.113.2:") for x in sim["probe_lines"])
    assert report["goals"]["sim_up"]["goal"] == "< 50 ms"
    assert any(x.startswith("sim: run 2/2: up ") for x in lines)


def test_probe_targets_and_expected_addresses() -> None:
    topo = load_topology("cgnat")
    targets = {f"{kind} {ep}" for kind, ep in labprobe.probe_targets(topo)}
    assert {"udp 198.51.100.10:3478", "udp 198.51.100.11:3479", "tcp 198.51.100.20:3340"} <= targets
    for host in labprobe.probe_sources(topo):  # behind two NATs: the outer one's WAN address is what STUN sees
        outer = [r for r in topo.path_to_internet(host) if r.nat is not None][-1]
        assert labprobe.expected_public(topo, host) == str(outer.wan_v4)
        assert outer.wan == "internet"


def test_unreachable_services_fail_the_backend(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "lab", "--scenario", "udp-blocked", "--backends", "sim", "--repeat", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "sim: run 1/1 failed: probe from alice: no answer from 198.51.100.10:3478 in the sim" in err
    assert "FAILED: probe from alice" in out


def test_a_backend_that_cannot_run_is_skipped_or_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(benchlab.os, "geteuid", lambda: 1000)  # as an ordinary user
    with pytest.raises(UsageError, match=r"netns: needs root .* run `sudo natkit bench lab`"):
        benchlab.run_lab_bench("easy-easy", 1, ["netns"], explicit=True)
    code = main(["bench", "lab", "--backends", "netns", "--repeat", "1"])
    assert code == 2 and capsys.readouterr().err.startswith("natkit: error: netns: needs root")
    code = main(["bench", "lab", "--backends", "sim,netns", "--repeat", "1", "--format", "json"])
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert code == 0 and report["sim"]["runs"] == 1 and "netns" not in report
    assert report["skipped"]["netns"].startswith("needs root")
    assert "netns: skipped: needs root" in err


def test_docker_offline_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATKIT_DOCKER_OFFLINE", "1")
    assert benchlab.docker_offline(None) == (True, "NATKIT_DOCKER_OFFLINE=1")
    monkeypatch.setenv("NATKIT_DOCKER_OFFLINE", "0")
    assert benchlab.docker_offline(None) == (False, "NATKIT_DOCKER_OFFLINE=0")


def test_unknown_backend_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown lab backend 'vm'"):
        benchlab.run_lab_bench("easy-easy", 1, ["sim", "vm"], explicit=True)
    with pytest.raises(UsageError, match="--repeat must be at least 1"):
        benchlab.run_lab_bench("easy-easy", 0)


def test_netns_bench_up_until_reachable_and_nothing_left() -> None:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    report = benchlab.run_lab_bench("easy-easy", 1, ["sim", "netns"], explicit=True)
    netns = report["netns"]
    assert netns["error"] is None and netns["left_behind"] == []
    assert netns["median_up"] == pytest.approx(netns["median_lab_up"] + netns["median_probe"], rel=1e-3)
    assert "alice -> tcp 198.51.100.20:3340: connected" in netns["probe_lines"]
    assert any(x.startswith("bob -> stun 198.51.100.10:3478: mapped 203.0.113.2:") for x in netns["probe_lines"])
    assert report["ratios"]["netns/sim"]["up"] > 1
    text = benchlab.format_report(report)
    assert "netns " in text and "up < 0.5 s:" in text and "ratios (up / down): netns/sim" in text


def test_docker_bench_prepares_before_timing() -> None:
    require_root()
    for tool in ("docker", "dockerd", "debootstrap"):
        require_tool(tool, "docker.io" if tool.startswith("docker") else tool)
    report = benchlab.run_lab_bench("easy-easy", 1, ["netns", "docker"], explicit=True)
    docker = report["docker"]
    assert docker["error"] is None and docker["left_behind"] == []
    assert any(x.startswith("alice -> stun 198.51.100.10:3478: mapped 203.0.113.1:") for x in docker["probe_lines"])
    prep = docker["prepare"]
    assert prep["images"][0].startswith("natkit/node:") and prep["images_seconds"] >= 0
    assert "docker_up" in report["goals"] and report["ratios"]["docker/netns"]["up"] > 0
    text = benchlab.format_report(report)
    assert "docker preparation (not in up)" in text and "up <= 10x netns (" in text
