"""Hole punching by hand on the docker backend: every ordered pair of the presets nftables can express.

One lab holds the whole grid (two NAT router containers and two hosts per preset, and stun1): 100 ordered
pairs run at once, each on its own ports (about 30 s here). Every pair must give what theory predicts and
what the sim backend measures; tests/lab/test_punch_netns.py compares netns with the sim for the same pairs,
so the three backends agree wherever they overlap. The broken router fails on purpose; easy-easy, its
fixed twin, goes direct.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.lab.punchgrid import expressible, grid_outcomes, mismatches, sim_grid, theory
from toolkit.lab.docker import DockerLab
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.punch import grid_topology

pytestmark = [pytest.mark.root, pytest.mark.slow]

PRESETS_HERE = expressible()


def test_every_pair_matches_theory_and_sim(docker_engine: Engine, docker_images: Images) -> None:
    lab = DockerLab(
        grid_topology(PRESETS_HERE), name_prefix=f"p{uuid.uuid4().hex[:8]}", engine=docker_engine, images=docker_images
    )

    async def go() -> dict[tuple[str, str], tuple[bool, str | None, str | None]]:
        async with lab:
            return await grid_outcomes(lab, PRESETS_HERE)

    measured = asyncio.run(go())
    assert not measured[("broken-router", "broken-router")][0] and measured[("easy", "easy")][0]
    assert mismatches(measured, theory(PRESETS_HERE)) == []
    assert mismatches(measured, asyncio.run(sim_grid(PRESETS_HERE))) == []
