"""Hole punching by hand on the netns backend: every ordered pair of the presets nftables can express.

One lab holds the whole grid (two NAT routers per preset, tests/lab/punchgrid.py): every pair punches at
once on its own ports (test_punch_sim shows on the sim that pairs in one lab do not interfere). About
17 s for the 100 pairs of the 10 expressible presets on this 2-core machine.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.lab.netns.netnslab import new_lab, require_netns, unique_prefix
from tests.lab.punchgrid import LABS, expressible, grid_outcomes, mismatches, outcome, sim_grid, theory
from toolkit.errors import UsageError
from toolkit.lab.nat import PRESETS
from toolkit.lab.netns import NetnsLab
from toolkit.lab.punch import grid_topology, punch
from toolkit.lab.topology import Topology

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_the_backend_refuses_what_it_cannot_express() -> None:
    require_netns()
    assert set(PRESETS) - set(expressible()) == {"symmetric-preserving", "symmetric-sequential"}
    lab = NetnsLab(grid_topology(["symmetric-sequential"]), name_prefix=unique_prefix())
    with pytest.raises(UsageError, match="symmetric-sequential"):
        asyncio.run(lab.up())
    asyncio.run(lab.down())


def test_every_expressible_pair_matches_theory_and_sim() -> None:
    names = expressible()
    lab = new_lab(grid_topology(names))

    async def go() -> dict[tuple[str, str], tuple[bool, str | None, str | None]]:
        async with lab:
            return await grid_outcomes(lab, names)

    t0 = time.monotonic()
    measured = asyncio.run(go())
    elapsed = time.monotonic() - t0
    assert mismatches(measured, theory(names)) == []
    # the same outcome as the sim backend for every pair both express (also how each side heard the other)
    assert mismatches(measured, asyncio.run(sim_grid(names))) == []
    assert elapsed < 60, f"the netns grid took {elapsed:.1f} s"


@pytest.mark.parametrize(("scenario", "expected"), [("broken-router", False), ("broken-router-fixed", True)])
def test_broken_router_fails_on_purpose_and_its_twin_succeeds(scenario: str, expected: bool) -> None:
    lab = new_lab(Topology.from_yaml(LABS / f"{scenario}.yaml"))

    async def go() -> tuple[bool, str | None, str | None]:
        async with lab:
            result = await punch(lab, "alice", "bob")
            if scenario == "broken-router":  # bob's router took alice's early probe as its own input
                table = await lab.nat_table("r2")
                assert any(m.private.port != m.public.port for m in table if m.proto == "udp"), table
            return outcome(result)

    assert asyncio.run(go())[0] is expected
