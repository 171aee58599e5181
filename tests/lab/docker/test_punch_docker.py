"""Hole punching by hand on the docker backend: a representative subset, to keep the suite time reasonable.

The subset is the grid of ``easy``, ``easyaf``, ``hard`` and ``broken-router`` in one lab (8 NAT router
containers, 8 hosts, stun1): 16 ordered pairs, among them easy-easy (the broken router's fixed twin),
easy-hard, easyaf-hard, hard-hard and broken-router with itself and with easy in both orders. Every
pair must give what theory predicts and what the sim backend measures (tests/lab/test_punch_netns.py compares netns
with the sim for all its pairs, so the three backends agree wherever they overlap).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.lab.punchgrid import grid_outcomes, mismatches, sim_grid, theory
from toolkit.lab.docker import DockerLab
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.punch import grid_topology

pytestmark = [pytest.mark.root, pytest.mark.slow]

SUBSET = ["easy", "easyaf", "hard", "broken-router"]


def test_subset_matches_theory_and_sim(docker_engine: Engine, docker_images: Images) -> None:
    lab = DockerLab(
        grid_topology(SUBSET), name_prefix=f"p{uuid.uuid4().hex[:8]}", engine=docker_engine, images=docker_images
    )

    async def go() -> dict[tuple[str, str], tuple[bool, str | None, str | None]]:
        async with lab:
            return await grid_outcomes(lab, SUBSET)

    measured = asyncio.run(go())
    assert not measured[("broken-router", "broken-router")][0] and measured[("easy", "easy")][0]
    assert mismatches(measured, theory(SUBSET)) == []
    assert mismatches(measured, asyncio.run(sim_grid(SUBSET))) == []
