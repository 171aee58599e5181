"""`natkit bench upgrade` on netns (root): natkit node processes and aioice agents take turns on one easy-easy lab
with kernel NAT; every natkit run reaches a direct path; the report has every figure the issue asks for."""

from __future__ import annotations

from tests.lab.netns.netnslab import require_netns
from toolkit.lab import benchupgrade

RUNS = 5  # aioice is bimodal (~45 / ~530 ms): the median needs at least five


def test_netns_natkit_against_aioice() -> None:
    require_netns()
    lines: list[str] = []
    report = benchupgrade.run_upgrade_bench(RUNS, ["netns"], idle=3.0, explicit=True, progress=lines.append)
    print("\n" + benchupgrade.format_report(report))
    netns = report["netns"]
    assert netns["error"] is None and netns["failures"] == [], netns
    assert len(netns["runs"]) == RUNS and len(netns["aioice"]["runs"]) == RUNS
    for run in netns["runs"]:  # natkit reached a direct path in every run, both nodes
        assert run["alice_state"] == run["bob_state"] == "DirectActive"
        assert run["alice_path"] == run["bob_path"] == "direct"
        assert 0 < run["bob_s"] <= run["both_s"] < 5.0 and run["both_s"] == max(run["alice_s"], run["bob_s"])
        assert run["cmm_delivery_s"] is not None and 0 < run["cmm_delivery_s"] < run["bob_s"]
        assert run["rtt_s"] is not None and run["rtt_s"] > 0
        assert run["alice_peak_kib"] > 10_000 and run["bob_peak_kib"] > 10_000  # natkit node processes, not `ip`
    for key in ("alice", "bob", "both", "cmm_delivery", "rtt", "minimum"):
        assert netns[f"min_{key}_s"] <= netns[f"median_{key}_s"] <= netns[f"max_{key}_s"]
    ice = netns["aioice"]
    assert ice["ok"] >= 1 and all(r["direct"] for r in ice["runs"] if r["ok"])
    assert ice["min_s"] <= ice["median_s"] <= ice["max_s"]
    assert set(netns["ratio_vs_aioice"]) == {"alice", "bob", "both"}
    goal = report["goals"]["netns"]
    assert goal["goal"] == "<= 0.5x aioice" and goal["value"] == netns["ratio_vs_aioice"]["both"]
    idle = netns["idle"]
    assert 2.9 < idle["seconds"] < 4.0
    assert 0 <= idle["alice"] < 50 and 0 <= idle["bob"] < 50  # % of one core, heartbeats only
    assert netns["peak_kib"]["alice"] > 10_000 and netns["peak_kib"]["bob"] > 10_000
    assert sum(x.startswith("netns: run ") and ": aioice: " in x for x in lines) == RUNS
