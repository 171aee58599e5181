"""Hole punching by hand on the sim backend: every ordered pair of presets gives what theory predicts."""

from __future__ import annotations

import asyncio

import pytest

from tests.lab.punchgrid import LABS, grid_outcomes, mismatches, outcome, pair_topology, sim_grid, theory
from toolkit.errors import UsageError
from toolkit.lab.nat import PRESETS
from toolkit.lab.punch import Pair, grid_topology, punch, run_sim
from toolkit.lab.scenario import TopologyBuilder
from toolkit.lab.sim import SimLab, SimWorld
from toolkit.lab.topology import Topology
from toolkit.types import Endpoint

NAMES = list(PRESETS)


async def one_pair(topo: Topology, seed: int = 0) -> tuple[bool, str | None, str | None]:
    async with SimLab(topo, seed=seed) as lab:
        return outcome(await punch(lab, "alice", "bob"))


def test_every_ordered_pair_in_its_own_lab_matches_theory() -> None:
    expected = theory(NAMES)

    async def measure() -> dict[tuple[str, str], tuple[bool, str | None, str | None]]:
        return {key: await one_pair(pair_topology(*key)) for key in expected}

    measured = asyncio.run(measure())
    assert mismatches(measured, expected) == []
    assert sum(d for d, _, _ in measured.values()) == 78  # the ✓ of the grid in labs/README.md


def test_one_lab_for_the_whole_grid_gives_the_same_outcomes() -> None:
    # the netns/docker tests run every pair at once in one lab: show here that pairs do not interfere
    assert mismatches(asyncio.run(sim_grid(NAMES, seed=3)), theory(NAMES)) == []


@pytest.mark.parametrize("path", sorted(p for p in LABS.glob("*.yaml") if p.stem != "same-lan"), ids=lambda p: p.stem)
def test_scenario_files(path: object) -> None:
    """alice <-> bob in each scenario: direct exactly when the file expects direct (same-lan is "local":
    its hosts share one public address, and a punch via the public endpoints needs hairpinning)."""
    topo = Topology.from_yaml(path)  # type: ignore[arg-type]
    direct, *_ = asyncio.run(one_pair(topo))
    assert direct == (topo.expect == "direct"), topo.name


def test_broken_router_fails_and_its_twin_succeeds() -> None:
    broken = Topology.from_yaml(LABS / "broken-router.yaml")
    fixed = Topology.from_yaml(LABS / "broken-router-fixed.yaml")
    assert asyncio.run(one_pair(broken)) == (False, None, None)
    assert asyncio.run(one_pair(fixed)) == (True, "stun", "stun")


def test_what_was_measured() -> None:
    world = SimWorld(pair_topology("easyaf", "hard"), seed=1)
    world.start_stun_servers()
    (r,) = run_sim(world, [Pair("alice", "bob")], stun=world.stun_endpoint())
    assert r.direct and r.via == ("other", "stun")
    assert r.public[0] == Endpoint.parse("203.0.113.1:41641")  # easyaf keeps the port
    assert r.heard[1] == (r.public[0],)
    assert r.heard[0][0].ip == r.public[1].ip and r.heard[0][0].port != r.public[1].port  # hard: a new port
    assert r.sent[0] >= 20 and r.sent[1] >= 20
    assert "alice -> bob: direct" in r.summary()
    # the NAT tables show it: bob's hard NAT holds one mapping for STUN and one for alice
    bob_maps = world.nat_table("r2")
    assert {m.remote for m in bob_maps} == {world.stun_endpoint(), r.public[0]}


def test_deterministic() -> None:
    names = ["easy", "hard", "easyaf", "broken-router"]
    assert asyncio.run(sim_grid(names, seed=5)) == asyncio.run(sim_grid(names, seed=5))


def test_needs_a_stun_server_and_a_running_lab() -> None:
    topo = grid_topology(["easy"])
    lab = SimLab(topo)
    with pytest.raises(UsageError, match="not up"):
        asyncio.run(punch(lab, "ha0", "hb0"))

    async def go() -> None:
        async with lab:
            await grid_outcomes(lab, ["easy"])

    asyncio.run(go())
    t = TopologyBuilder("no-stun")
    t.nat_router("r1", lan=t.lan("home1"))
    t.host("alice", "home1")
    t.host("bob")

    async def without_stun() -> None:
        async with SimLab(t.build()) as lab:
            await punch(lab, "alice", "bob")

    with pytest.raises(UsageError, match="no stun-server"):
        asyncio.run(without_stun())
