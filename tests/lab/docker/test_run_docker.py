"""``natkit lab run`` on the docker backend: ``natkit node`` in two containers per scenario (issue 6).

The same run as tests/lab/netns/test_run_netns.py (:func:`toolkit.lab.noderun.run_nodes`: the lab's STUN,
DERP and control servers, a node on alice and bob, ``ping`` through the tunnel), on the session's engine
and offline-built images (tests/lab/docker/conftest.py). Each scenario ends where its file says, on the
flowchart's edges; the scenarios that end on DERP run at a fifth of the real timers and answer the traffic
over the relay.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from toolkit.lab.docker import DockerLab
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.noderun import run_nodes
from toolkit.lab.registry import load_topology
from toolkit.lab.runreport import RunReport, check_walk

pytestmark = [pytest.mark.root, pytest.mark.slow]

# every scenario of labs/ (6-15 s each on docker; the issue asks for all three backends)
SCENARIOS = sorted(p.stem for p in (Path(__file__).resolve().parents[3] / "labs").glob("*.yaml"))
DERP_SCALE = 0.2


def _run(scenario: str, engine: Engine, images: Images) -> RunReport:
    topo = load_topology(scenario)
    scale = DERP_SCALE if topo.expect == "relayed" else 1.0
    lab = DockerLab(topo, name_prefix=f"n{uuid.uuid4().hex[:8]}", engine=engine, images=images)

    async def go() -> RunReport:
        async with lab:
            return await run_nodes(lab, timing_scale=scale, timeout=60.0)

    return asyncio.run(go())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_ends_where_its_file_says(scenario: str, docker_engine: Engine, docker_images: Images) -> None:
    report = _run(scenario, docker_engine, docker_images)
    why = report.dumps()
    assert report.ok, why
    assert report.final_path == report.expect, why
    assert check_walk(report.states) == [] and report.states[0] == "Start", why
    assert report.traffic["answered"] > 0, why
    if report.expect == "derp":
        assert report.final_state == "StayOnDERP" and "RetryProbes" in report.states, why
        assert "DirectActive" not in report.states and report.time_to_direct_s is None, why
    else:
        assert report.final_state == "DirectActive" and report.time_to_direct_s is not None, why
    if scenario == "public-public":
        assert "TryDirect" in report.states and "StartDERP" not in report.states, "TryDirect succeeds at once"
