"""`natkit lab run` on the sim backend: every scenario in labs/ ends where its file says, walking the flowchart.

The kernel backends run the same scenarios in tests/lab/netns/test_run_netns.py and tests/lab/docker/.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.lab.noderun import first_peer, run_scenario, settled, start_pair, wait_until, with_latency
from toolkit.lab.runreport import check_walk
from toolkit.lab.sim import SimLab
from toolkit.lab.topology import Topology

LABS = Path(__file__).resolve().parents[2] / "labs"
SCENARIOS = sorted(p.stem for p in LABS.glob("*.yaml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_ends_where_its_file_says(scenario: str) -> None:
    report = asyncio.run(run_scenario(LABS / f"{scenario}.yaml", "sim"))
    assert report.problems == [] and check_walk(report.states) == []
    assert report.ok, report.format()
    assert report.states[0] == "Start" and report.final_state == report.states[-1]
    if report.final_path == "derp":
        assert report.final_state == "StayOnDERP" and report.time_to_direct_s is None
        assert report.traffic["answered"] > 0  # the relay carries the traffic
    else:
        assert report.final_state == "DirectActive" and report.time_to_direct_s is not None
    if scenario == "public-public":  # TryDirect succeeds at once, no DERP on the way
        assert report.states[:6] == ["Start", "GetInfo", "CheckDirect", "TryDirect", "DirectSuccess", "DirectActive"]


def test_lab_run_json_from_the_shell() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "toolkit", "lab", "run", "easy-easy", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert obj["scenario"] == "easy-easy" and obj["backend"] == "sim"
    assert obj["final_path"] == "direct" and obj["final_state"] == "DirectActive"
    assert 0 < obj["time_to_direct_s"] < 1.0
    assert obj["states"][-1] == "DirectActive" and "ValidatePath" in obj["states"]


def test_lab_run_bad_input_is_one_line_exit_2() -> None:
    for args in (["no-such-scenario"], ["easy-easy", "--timing-scale", "0"]):
        res = subprocess.run(
            [sys.executable, "-m", "toolkit", "lab", "run", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


async def _direct(lab: SimLab) -> tuple[dict[str, object], dict[str, object]]:
    pair = await start_pair(lab)
    a, b = pair.a, pair.b
    sa = await wait_until(lab, a, settled, 30.0)
    sb = await wait_until(
        lab, b, lambda s: first_peer(s) is not None and first_peer(s)["state"] == "DirectActive", 30.0
    )  # type: ignore[index]
    return sa, sb


def test_a_new_public_port_is_rediscovered_and_the_path_returns() -> None:
    async def go() -> None:
        async with SimLab(with_latency(Topology.from_yaml(LABS / "easy-easy.yaml")), seed=2) as lab:
            _, sb = await _direct(lab)
            old = first_peer(sb)["endpoint"]  # type: ignore[index]
            assert old == "203.0.113.1:41641"
            await lab.flush_nat("r1", renumber=True)  # every flow of alice leaves from a new public port now
            # alice's next re-STUN (20-26 s) learns the new port; CallMeMaybe and pings bring the path back
            b = lab.nodes["bob"]
            sb = await wait_until(
                lab,
                b,
                lambda s: first_peer(s)["path"] == "direct" and first_peer(s)["endpoint"] not in (old, None),
                90.0,  # type: ignore[index]
            )
            new = first_peer(sb)["endpoint"]  # type: ignore[index]
            assert new.startswith("203.0.113.1:") and new != old
            assert first_peer(await lab.nodes["alice"].status())["state"] == "DirectActive"  # type: ignore[index]

    asyncio.run(go())


def test_control_and_derp_restarts_keep_the_path_and_lose_nothing() -> None:
    async def go() -> None:
        async with SimLab(with_latency(Topology.from_yaml(LABS / "easy-easy.yaml")), seed=3) as lab:
            sa, _ = await _direct(lab)
            world = lab._world()
            world.restart_control_server()
            relay = world.derp_servers["derp1"]
            relay.close()
            await lab.sleep(2.0)
            world.start_derp_server("derp1")
            await lab.sleep(15.0)
            a = lab.nodes["alice"]
            after = await a.status()
            assert after["self"]["tunnel_ips"] == sa["self"]["tunnel_ips"]  # registration kept
            assert after["self"]["derp_connected"] == [1]  # reconnected to the relay
            peer = first_peer(after)
            assert peer is not None and peer["state"] == "DirectActive" and peer["path"] == "direct"
            lines = await a.ping("bob", count=2)
            assert lines and "via 203.0.113.2:41641" in lines[0]

    asyncio.run(go())
