"""Shared by the hole-punching tests: two-host pair labs, scenario files, comparing with the theory."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from toolkit.errors import UsageError
from toolkit.lab.nat import PRESETS
from toolkit.lab.netns.nftables import check_expressible
from toolkit.lab.punch import Prediction, PunchResult, grid_pairs, grid_topology, predict, run_punches
from toolkit.lab.scenario import TopologyBuilder
from toolkit.lab.sim import SimLab
from toolkit.lab.topology import Topology

LABS = Path(__file__).resolve().parents[2] / "labs"
Outcome = tuple[bool, str | None, str | None]  # direct, and how each side first heard the other


def outcome(r: PunchResult | Prediction) -> Outcome:
    return (r.direct, *r.via)


def pair_topology(a: str, b: str) -> Topology:
    """alice behind ``a`` (starts first), bob behind ``b``, stun1: the smallest lab for one pair."""
    t = TopologyBuilder("punch-pair")
    t.nat_router("r1", lan=t.lan("home1"), nat=a)
    t.nat_router("r2", lan=t.lan("home2"), nat=b)
    t.host("alice", "home1")
    t.host("bob", "home2")
    t.host("stun1", v4="198.51.100.10", services=["stun-server"])
    return t.build()


def theory(names: Sequence[str]) -> dict[tuple[str, str], Outcome]:
    return {(x, y): outcome(predict(PRESETS[x], PRESETS[y])) for x in names for y in names}


async def grid_outcomes(lab: object, names: Sequence[str]) -> dict[tuple[str, str], Outcome]:
    """Every ordered pair of ``names`` at once in a running :func:`grid_topology` lab."""
    pairs = grid_pairs(names)
    results = await run_punches(lab, list(pairs.values()))
    return {key: outcome(r) for key, r in zip(pairs, results, strict=True)}


async def sim_grid(names: Sequence[str], seed: int = 0) -> dict[tuple[str, str], Outcome]:
    async with SimLab(grid_topology(names), seed=seed) as lab:
        return await grid_outcomes(lab, names)


def mismatches(measured: dict[tuple[str, str], Outcome], expected: dict[tuple[str, str], Outcome]) -> list[str]:
    return [f"{k}: measured {measured[k]}, expected {expected[k]}" for k in expected if measured.get(k) != expected[k]]


def expressible() -> list[str]:
    """The presets the netns backend accepts: it raises a UsageError naming the others."""
    names = []
    for name, nat in PRESETS.items():
        try:
            check_expressible(nat)
        except UsageError as exc:
            assert name in str(exc)
            continue
        names.append(name)
    return names
