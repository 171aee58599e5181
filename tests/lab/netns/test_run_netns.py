"""``natkit lab run`` on the netns backend: two real ``natkit node`` processes per scenario (issue 6).

Every scenario in ``labs/`` (nftables expresses all of their NATs) runs through
:func:`toolkit.lab.noderun.run_scenario`: the lab's real STUN, DERP and control servers, a node on alice and
bob, ``ping`` through the tunnel. Each ends where its file says: direct, local or DERP, with the flowchart's
edges in every step of the walk. The scenarios that end on DERP (hard-hard, easy-hard, udp-blocked, the broken
router) walk their discovery rounds at a fifth of the real timers, so they settle in seconds with the
traffic answered over the relay; the scenarios that go direct settle in about a second whatever the scale
and run on the real timers.

The fallback test cuts alice's direct path at her router (:meth:`Lab.block_udp`) once she is DirectActive
on the real timers: the node falls back to DERP within the trust window plus one ping timeout while the
traffic keeps being answered over DERP, goes direct again when the cut is lifted, and comes back to (or
stays on) the direct path after both NATs forget every mapping (``conntrack -F``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.lab.netns.netnslab import require_netns, unique_prefix
from tests.lab.punchgrid import LABS, expressible
from toolkit.errors import NatkitError
from toolkit.lab.netns import NetnsLab
from toolkit.lab.noderun import first_peer, run_scenario, settled, start_pair, wait_until
from toolkit.lab.nodes import NodeHandle, PingTraffic
from toolkit.lab.registry import load_topology
from toolkit.lab.runreport import check_walk, walk_of
from toolkit.timing import DEFAULT

pytestmark = [pytest.mark.root]

SCENARIOS = sorted(p.stem for p in LABS.glob("*.yaml"))
DERP_SCALE = 0.2  # a DERP-only scenario waits disco_retry_rounds x ping_timeout: 3 s at this scale
TRUST, PING_TIMEOUT = DEFAULT.trust_udp_addr_duration, DEFAULT.ping_timeout  # 6.5 s, 5 s


def _netns_presets_ok(scenario: str) -> bool:
    names = set(expressible())
    return all(r.nat is None or r.nat.name in names for r in load_topology(scenario).routers)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_ends_where_its_file_says(scenario: str) -> None:
    require_netns()
    if not _netns_presets_ok(scenario):
        pytest.fail(f"{scenario}: a NAT nftables cannot express; every scenario in labs/ should run on netns")
    expect = load_topology(scenario).expect
    scale = DERP_SCALE if expect == "relayed" else 1.0
    report = asyncio.run(run_scenario(scenario, "netns", name=unique_prefix(), timing_scale=scale, timeout=40.0))
    why = report.dumps()
    assert report.ok, why
    assert report.final_path == report.expect, why
    assert check_walk(report.states) == [] and report.states[0] == "Start", why
    if report.expect == "derp":
        # discovery was tried, every round failed, the peer rests on the relay, and the traffic got through it
        assert report.final_state == "StayOnDERP" and report.states[-1] == "StayOnDERP", why
        assert "RetryProbes" in report.states and "DirectActive" not in report.states, why
        assert report.time_to_direct_s is None, why
        assert report.traffic["answered"] > 0, why
    else:
        assert report.final_state == "DirectActive" and report.time_to_direct_s is not None, why
        assert report.traffic["answered"] > 0, why
    if scenario == "public-public":
        assert "TryDirect" in report.states and "StartDERP" not in report.states, "TryDirect succeeds at once"


# --- the direct path cut, restored, and the NAT mappings flushed ---------------------------------------


def _state(status: dict[str, Any]) -> str | None:
    peer = first_peer(status)
    return None if peer is None else peer.get("state")


async def _first_after(node: NodeHandle, state: str, since: float, timeout: float, lab: NetnsLab) -> float | None:
    """The time (the lab's clock: CLOCK_MONOTONIC, as the node's records) alice first entered ``state``
    for bob at or after ``since``; None if not within ``timeout``."""
    deadline = lab.now() + timeout
    while True:
        walk = walk_of(await node.records(), node.host)
        at = next((t for s, t in zip(walk.states, walk.times, strict=True) if s == state and t >= since), None)
        if at is not None or lab.now() >= deadline:
            return at
        await lab.sleep(0.1)


def test_fallback_to_derp_and_back_on_real_timers() -> None:
    require_netns()
    lab = NetnsLab(load_topology("easy-easy"), name_prefix=unique_prefix())
    marks: dict[str, float] = {}

    async def go() -> None:
        async with lab:
            a = await lab.start_node("alice")
            await lab.start_node("bob")
            known = await wait_until(lab, a, lambda s: first_peer(s) is not None, 20.0)
            peer = first_peer(known)
            assert peer is not None, known
            traffic = await a.start_traffic(str(peer["tunnel_ips"][0]))
            assert isinstance(traffic, PingTraffic)
            try:
                status = await wait_until(lab, a, settled, 20.0)
                peer = first_peer(status) or {}
                assert peer.get("state") == "DirectActive" and peer.get("path") == "direct", status
                far = str(peer["endpoint"]).rsplit(":", 1)[0]
                assert far == "203.0.113.2", "bob's public address, r2's WAN"

                # the cut: r1 drops UDP to and from bob's public address; DERP (TCP) and STUN carry on
                cut = lab.now()
                await lab.block_udp("r1", far)
                fell = await _first_after(a, "FallbackDERP", cut, TRUST + PING_TIMEOUT + 5.0, lab)
                assert fell is not None, f"no FallbackDERP within {TRUST + PING_TIMEOUT + 5.0} s: {await a.status()}"
                marks["fallback_s"] = fell - cut
                assert fell - cut <= TRUST + PING_TIMEOUT + 0.5, f"fell back {fell - cut:.2f} s after the cut"
                answered = traffic.answered
                await lab.sleep(2.0)
                status = await a.status()
                assert (first_peer(status) or {}).get("path") == "derp", status
                assert traffic.answered >= answered + 3, "the traffic is answered over DERP"
                marks["answered_on_derp"] = traffic.answered - answered

                # the cut lifted: discovery finds the path again
                lifted = lab.now()
                await lab.block_udp("r1", far, blocked=False)
                back = await _first_after(a, "DirectActive", lifted, DEFAULT.upgrade_udp_direct_interval + 10, lab)
                assert back is not None, f"not direct again after the cut was lifted: {await a.status()}"
                marks["reupgrade_s"] = back - lifted
                status = await wait_until(lab, a, lambda s: _state(s) == "DirectActive", 5.0)
                assert (first_peer(status) or {}).get("path") == "direct", status

                # every NAT mapping forgotten at both routers: the node returns to (or stays on) the direct path
                flushed = lab.now()
                await lab.flush_nat("r1")
                await lab.flush_nat("r2")
                answered = traffic.answered
                await lab.sleep(DEFAULT.heartbeat_interval + 1.0)
                status = await wait_until(lab, a, lambda s: _state(s) == "DirectActive", TRUST + PING_TIMEOUT + 20)
                peer = first_peer(status) or {}
                assert peer.get("state") == "DirectActive" and peer.get("path") == "direct", status
                assert traffic.answered > answered, "traffic flows after the flush"
                marks["after_flush_s"] = lab.now() - flushed
            finally:
                stats = await traffic.stop()
            marks["sent"], marks["answered"] = stats["sent"], stats["answered"]
            walk = walk_of(await a.records(), "alice")
            assert check_walk(walk.states) == [], walk.states
            assert walk.states.count("FallbackDERP") >= 1 and walk.states[-1] == "DirectActive", walk.states

    started = time.monotonic()
    asyncio.run(go())
    print(f"fallback test: {marks} in {time.monotonic() - started:.1f} s")


def test_ping_until_direct_on_a_relayed_pair_returns_the_derp_lines_as_on_sim() -> None:
    """`natkit ping` exits 1 ("direct connection not established") when the pair stays on DERP, like
    `tailscale ping`; the handle returns its lines, as the sim's does, and still raises for a real error."""
    require_netns()

    async def scenario() -> tuple[list[str], str]:
        async with NetnsLab(load_topology("udp-blocked"), name_prefix=unique_prefix()) as lab:
            pair = await start_pair(lab, timing_scale=DERP_SCALE)
            await wait_until(lab, pair.a, lambda s: _state(s) == "StayOnDERP", 40.0)
            lines = await pair.a.ping("bob", count=2)
            try:
                await pair.a.ping("nobody", count=1)
            except NatkitError as exc:
                error = str(exc)
            else:
                error = ""
            await pair.traffic.stop()
            return lines, error

    lines, error = asyncio.run(scenario())
    assert len(lines) == 2 and all("via DERP(r1)" in line for line in lines), lines
    assert error.startswith("natkit ping on alice: ") and "nobody" in error, error
