"""The issue's verification on the sim: natkit's RFC 5780 discovery (toolkit.sansio.natbehavior), run from a
LAN host against the sim's STUN server (StunServerCore on virtual sockets, two addresses), finds every
preset's mapping and filtering; hairpinning and the mapping lifetime are measured too."""

from __future__ import annotations

import pytest

from tests.lab.sim.simnet import one_nat
from toolkit.lab.nat import PRESETS, preset
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import TopologyBuilder
from toolkit.sansio.natreport import Behavior
from toolkit.timing import DEFAULT

FAST = DEFAULT.replace(stun_rc=4, stun_rm=4)  # what `natkit nat-type` uses


def _world(nat: object, seed: int = 1) -> SimWorld:
    world = SimWorld(one_nat(nat), seed=seed)  # type: ignore[arg-type]
    world.start_stun_servers()
    return world


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_discovered(name: str) -> None:
    nat = preset(name)
    world = _world(nat)
    report = world.discover_nat("alice", timing=FAST)
    if nat.block_udp:
        assert report.udp_blocked and report.mapping is None
        assert world.machine("r1").counters["nat-blocked"] > 0
        return
    assert not report.udp_blocked and report.behind_nat is True
    assert report.mapped is not None and report.mapped.ip == world.topology.router("r1").wan_v4
    assert report.mapping == Behavior(nat.mapping.value), report.to_dict()
    if nat.one_to_one:
        assert report.filtering is Behavior.ENDPOINT_INDEPENDENT  # no filtering at all
        assert report.mapped.port == report.local.port  # type: ignore[union-attr]
    else:
        assert report.filtering == Behavior(nat.filtering.value), report.to_dict()
    if nat.allocation.value == "preserve":
        assert report.mapped.port == report.local.port  # type: ignore[union-attr]


def test_no_nat_for_a_public_host() -> None:
    world = _world("easy")
    report = world.discover_nat("peer", timing=FAST)
    assert report.behind_nat is False and report.filtering is Behavior.ENDPOINT_INDEPENDENT


@pytest.mark.parametrize("hairpinning", [True, False])
def test_hairpinning_is_discovered(hairpinning: bool) -> None:
    world = _world(preset("easy").replace(hairpinning=hairpinning))
    report = world.discover_nat("alice", hairpin=True, timing=FAST)
    assert report.hairpinning is hairpinning
    assert world.nat("r1").counters["hairpinned"] == (1 if hairpinning else 0)


def test_the_mapping_lifetime_is_measured() -> None:
    world = _world(preset("easy").replace(mapping_timeout=20.0))
    report = world.discover_nat("alice", lifetime=True, max_lifetime=40.0, timing=FAST)
    assert report.lifetime_min is not None and report.lifetime_max is not None
    assert report.lifetime_min < 20.0 <= report.lifetime_max
    assert world.nat("r1").counters["mapping-expired"] >= 1


def test_cgnat_is_two_easy_nats() -> None:
    t = TopologyBuilder("cgnat")
    isp, home1 = t.carrier("isp"), t.lan("home1")
    t.nat_router("cgnat", lan=isp)
    t.nat_router("r1", wan=isp, lan=home1)
    t.node("alice", home1)
    t.host("stun1", t.internet, extra_v4=1, services=["stun-server"])
    world = SimWorld(t.build(), seed=3)
    world.start_stun_servers()
    report = world.discover_nat("alice", timing=FAST)
    assert report.mapping is Behavior.ENDPOINT_INDEPENDENT
    assert report.filtering is Behavior.ADDRESS_AND_PORT_DEPENDENT
    assert report.mapped is not None and report.mapped.ip == world.topology.router("cgnat").wan_v4
    [outer] = [e for e in world.nat_table("cgnat") if e.public == report.mapped]
    [inner] = [e for e in world.nat_table("r1") if e.private == report.local]
    assert outer.private == inner.public  # the home router's public side is the carrier NAT's private side
