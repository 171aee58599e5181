"""IPv6 end to end on the sim backend (issue 6: "IPv6 preferred when it works"): ``labs/dual-stack.yaml``.

alice and bob sit behind easy NATs with global IPv6 at home (routed, not NATed, filtered by the router
like IPv4). Each node STUNs the lab's STUN server over v4 and v6, publishes a v4 and a v6 endpoint, and
the direct path the two nodes settle on is the IPv6 one (betterAddr prefers IPv6,
protocols.md §4.6). The kernel backend runs the same checks in tests/lab/netns/test_ipv6_netns.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from toolkit.lab.backend import Lab
from toolkit.lab.labservices import STUN_PORT, derp_map
from toolkit.lab.noderun import first_peer, run_scenario, settled, wait_until, with_latency
from toolkit.lab.runreport import RunReport
from toolkit.lab.sim import SimLab
from toolkit.lab.topology import Topology
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Endpoint

DUAL_STACK = Path(__file__).resolve().parents[2] / "labs" / "dual-stack.yaml"
R2_PUBLIC = Endpoint.parse("203.0.113.2:41641")  # bob's public v4 endpoint (r2's WAN address, easy NAT keeps the port)


def check_report(report: RunReport, *, v6: bool = True) -> None:
    """The run went direct; with ``v6`` over IPv6: the endpoint in use is bob's global v6 address."""
    topo = Topology.from_yaml(DUAL_STACK)
    assert report.problems == [] and report.ok, report.format()
    assert (report.final_path, report.final_state) == ("direct", "DirectActive"), report.format()
    assert report.endpoint is not None
    endpoint = Endpoint.parse(report.endpoint)
    assert endpoint in (Endpoint(topo.host("bob").v6, 41641), R2_PUBLIC), report.format()  # type: ignore[arg-type]
    if v6:
        assert endpoint.ip.version == 6, report.format()
    assert report.time_to_direct_s is not None and report.traffic["answered"] > 0


def _ips(endpoints: list[str]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return {Endpoint.parse(e).ip for e in endpoints}


async def dual_stack_session(lab: Lab, *, timing_scale: float = 1.0) -> tuple[dict[str, Any], list[TraceRecord]]:
    """Start alice and bob, send traffic until alice's machine for bob settles: alice's status and records."""
    topo = lab.topology
    alice_v6 = topo.host("alice").v6
    a = await lab.start_node("alice", timing_scale=timing_scale)
    b = await lab.start_node("bob", timing_scale=timing_scale)
    try:
        known = await wait_until(lab, a, lambda s: first_peer(s) is not None, 30.0)
        peer = first_peer(known)
        assert peer is not None, known
        traffic = await a.start_traffic(str(peer["tunnel_ips"][0]))
        status = await wait_until(lab, a, lambda s: settled(s) and alice_v6 in _ips(s["self"]["endpoints"]), 60.0)
        await traffic.stop()
        return status, await a.records()
    finally:
        await b.stop()
        await a.stop()


def check_own_endpoints(topo: Topology, status: dict[str, Any], records: list[TraceRecord]) -> None:
    """alice publishes both families (its v6 address and r1's public v4) and STUN over v6 was answered."""
    stun1 = topo.host("stun1")
    assert stun1.v6 is not None
    mine = _ips(status["self"]["endpoints"])
    assert topo.host("alice").v6 in mine, status["self"]  # the node's own endpoints include its v6 address
    assert ipaddress.ip_address("203.0.113.1") in mine, status["self"]  # and r1's public v4 (STUN over v4)
    stun_v6 = Endpoint(stun1.v6, STUN_PORT)
    assert stun_v6 in derp_map(topo).regions[1].nodes[-1].stun_endpoints()
    assert any(r.kind == "sent" and r.endpoint == stun_v6 for r in records)
    assert any(r.kind == "received" and r.endpoint == stun_v6 for r in records), "no STUN answer over IPv6"


def v6_pongs(topo: Topology, records: list[TraceRecord]) -> list[TraceRecord]:
    """The disco pongs alice received from bob's v6 endpoint: the v6 path crossed both routers' filters."""
    bob = Endpoint(topo.host("bob").v6, 41641)  # type: ignore[arg-type]
    return [r for r in records if r.kind == "received" and r.endpoint == bob and "disco Pong" in r.detail]


def check_v6_path(topo: Topology, status: dict[str, Any], records: list[TraceRecord]) -> None:
    """alice's machine for bob is DirectActive on bob's v6 endpoint, which answered pings."""
    peer = first_peer(status)
    assert peer is not None and (peer["state"], peer["path"]) == ("DirectActive", "direct"), peer
    assert Endpoint.parse(peer["endpoint"]).ip == topo.host("bob").v6, peer
    assert v6_pongs(topo, records)


def check_v4_fallback(topo: Topology, status: dict[str, Any]) -> None:
    """With UDP between alice's router and bob's v6 address cut, the direct path is IPv4 (preferred *when it works*)."""
    peer = first_peer(status)
    assert peer is not None and (peer["state"], peer["path"]) == ("DirectActive", "direct"), peer
    assert Endpoint.parse(peer["endpoint"]) == R2_PUBLIC, peer
    assert topo.host("alice").v6 in _ips(status["self"]["endpoints"])  # v6 is still offered, it just fails


def test_dual_stack_run_goes_direct_over_ipv6() -> None:
    report = asyncio.run(run_scenario(DUAL_STACK, "sim"))
    check_report(report)
    assert report.latency_ms is not None and report.latency_ms < 100


def test_dual_stack_nodes_stun_over_v6_and_punch_through_the_v6_filter() -> None:
    async def go() -> None:
        lab = SimLab(with_latency(Topology.from_yaml(DUAL_STACK)), seed=1)
        async with lab:
            status, records = await dual_stack_session(lab)
            check_own_endpoints(lab.topology, status, records)
            check_v6_path(lab.topology, status, records)
            world = lab.world
            assert world is not None
            # v6 is routed, not translated, yet the routers' filters dropped the first unsolicited v6 probes:
            # the v6 path exists because both sides punched it, as with v4 (toolkit/lab/sim/nat.py allow_in6)
            assert sum(world.nat(r).counters["filtered6"] for r in ("r1", "r2")) > 0

    asyncio.run(go())


def test_a_v4_only_stun_host_is_not_listed_with_v6() -> None:
    """The DERP map lists a v6 STUN address only where a STUN server listens (else every round waits for it)."""
    d = Topology.from_yaml(DUAL_STACK).to_dict()
    stun1 = next(h for h in d["hosts"] if h["name"] == "stun1")
    stun1["services"] = ["stun-server"]  # the host has a v6 address, but no server listens there
    topo = Topology.from_dict(d)
    (stun,) = [n for n in derp_map(topo).regions[1].nodes if n.stun_only]
    assert stun.ipv6 == "" and stun.stun_endpoints() == [Endpoint.parse("198.51.100.10:3478")]
    full = [n for n in derp_map(Topology.from_yaml(DUAL_STACK)).regions[1].nodes if n.stun_only]
    assert full[0].stun_endpoints() == [Endpoint.parse("198.51.100.10:3478"), Endpoint.parse("[2001:db8::100:10]:3478")]


def test_ipv4_is_used_when_ipv6_does_not_work() -> None:
    async def go() -> None:
        async with SimLab(with_latency(Topology.from_yaml(DUAL_STACK)), seed=1) as lab:
            await lab.block_udp("r1", str(lab.topology.host("bob").v6))
            status, _ = await dual_stack_session(lab)
            check_v4_fallback(lab.topology, status)

    asyncio.run(go())
