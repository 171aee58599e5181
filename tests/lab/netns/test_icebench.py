"""The aioice baseline of ``natkit bench upgrade``: two aioice agents across netns labs with nftables NAT.

On ``labs/easy-easy.yaml`` ICE (RFC 8445, no TURN) hole-punches through both endpoint-independent
NATs with natkit's STUN server: the selected pair ends at the peer's server-reflexive address. On
``labs/hard-hard.yaml`` (symmetric NATs, random ports) it cannot, and says so within the timeout.
The agents' processes are gone afterwards, also when the caller gives up half-way.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest

from tests.lab.netns.netnslab import new_lab, run
from toolkit.errors import NatkitError
from toolkit.lab.icebench import IceResult, ice_connect, lab_stun
from toolkit.lab.netns import NetnsLab, plumbing
from toolkit.lab.registry import load_topology
from toolkit.lab.topology import TopologyBuilder
from toolkit.types import Endpoint

RUNS = 3


def _agents_left(lab: NetnsLab) -> list[int]:
    """Processes still inside the two node hosts' namespaces (the agents ran there, nothing else does)."""
    found = plumbing.namespace_pids([lab.netns("alice"), lab.netns("bob")])
    return [pid for pids in found.values() for pid in pids]


def _check_direct_through_nats(lab: NetnsLab, r: IceResult) -> None:
    assert r.ok, r.error
    assert r.direct
    ctrl, ctld = r.controlling, r.controlled
    assert ctrl.local is not None and ctrl.remote is not None and ctld.remote is not None
    # each side's server-reflexive address is on its NAT router's WAN address, not its LAN address
    alice_srflx, bob_srflx = ctrl.candidate_addresses("srflx"), ctld.candidate_addresses("srflx")
    assert len(alice_srflx) == 1 and len(bob_srflx) == 1, (ctrl.candidates, ctld.candidates)
    assert alice_srflx[0].startswith(f"{lab.topology.router('r1').wan_v4}:")
    assert bob_srflx[0].startswith(f"{lab.topology.router('r2').wan_v4}:")
    # the selected pair: alice's socket -> bob's NAT mapping, and bob sees alice's NAT mapping
    assert ctrl.local == ("host", ctrl.candidate_addresses("host")[0])
    assert ctrl.remote[0] in {"srflx", "prflx"} and ctrl.remote[1] == bob_srflx[0]
    assert ctld.remote[0] in {"srflx", "prflx"} and ctld.remote[1] == alice_srflx[0]
    assert r.time_to_connected is not None and ctrl.gather_s is not None
    assert ctrl.gather_s < r.time_to_connected < 10.0
    assert ctrl.checks is not None and ctrl.checks >= 1


def test_lab_stun_is_the_labs_stun_server() -> None:
    lab = NetnsLab(load_topology("easy-easy"), name_prefix="tstunonly")  # nothing is created before up()
    assert lab_stun(lab) == Endpoint.parse("198.51.100.10:3478")
    t = TopologyBuilder("nostun")
    t.host("h1", t.internet)
    with pytest.raises(NatkitError, match="no stun-server"):
        lab_stun(NetnsLab(t.build(), name_prefix="tnostun"))


def test_aioice_goes_direct_through_easy_nats() -> None:
    lab = new_lab(load_topology("easy-easy"))

    async def body() -> list[IceResult]:
        async with lab:
            results = []
            for _ in range(RUNS):
                results.append(await ice_connect(lab, "alice", "bob", lab_stun(lab), timeout=15.0))
                assert _agents_left(lab) == []
            return results

    results = run(body())
    for r in results:
        _check_direct_through_nats(lab, r)
    times = [r.time_to_connected for r in results if r.time_to_connected is not None]
    print(f"\naioice easy-easy time to connected: median {statistics.median(times) * 1000:.0f} ms of {times}")
    print(results[0].summary())


def test_aioice_fails_clearly_between_hard_nats() -> None:
    lab = new_lab(load_topology("hard-hard"))
    timeout = 4.0

    async def body() -> tuple[IceResult, float]:
        async with lab:
            started = time.monotonic()
            r = await ice_connect(lab, "alice", "bob", lab_stun(lab), timeout=timeout)
            elapsed = time.monotonic() - started
            assert _agents_left(lab) == []
            return r, elapsed

    r, elapsed = run(body())
    assert not r.ok and not r.direct and r.time_to_connected is None
    assert r.error is not None and f"within {timeout} s" in r.error, r.error
    assert r.summary().startswith("aioice: failed")
    assert elapsed < timeout + 5.0
    # both gathered through their symmetric NATs and tried, to no avail
    for agent in (r.controlling, r.controlled):
        assert len(agent.candidate_addresses("srflx")) == 1
        assert agent.checks is not None and agent.checks >= 1


def test_agents_are_gone_when_the_caller_gives_up() -> None:
    lab = new_lab(load_topology("hard-hard"))

    async def body() -> None:
        async with lab:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(ice_connect(lab, "alice", "bob", lab_stun(lab), timeout=30.0), 1.0)
            assert _agents_left(lab) == []

    run(body())
