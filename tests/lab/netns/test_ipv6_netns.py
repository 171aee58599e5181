"""IPv6 end to end with real kernels (netns backend): ``labs/dual-stack.yaml``, the checks of tests/lab/test_ipv6.py.

Two ``natkit node`` processes behind nftables NAT routers that route IPv6 and filter it like IPv4
(toolkit/lab/netns/nftables.py): each node STUNs stun1 over v4 and v6 from its one dual-stack socket,
publishes both families, pings cross the v6 filters once both sides punched, and the direct path is
IPv6; with v6 UDP cut at alice's router it is IPv4. Timers run at a fifth (``timing_scale`` 0.2) as in
the other kernel-backend runs.

Real kernels measure real round trips: betterAddr keeps IPv4 when its pong was more than ~10% faster
(protocols.md §4.10). On veth that happens when the event loops are busy: measured 3 of 35 runs ended on
v4 on a loaded 2-core machine (load ~6), 0 of 20 of the session test. So a run ending on IPv4 is a
correct outcome; the run test asks for IPv6 in one of up to :data:`ATTEMPTS` runs, the session test
asks that bob's v6 endpoint answered alice's pings (the v6 path works) whichever path won.
"""

from __future__ import annotations

from typing import Any

from tests.lab.netns.netnslab import new_lab, require_netns, run, unique_prefix
from tests.lab.test_ipv6 import (
    DUAL_STACK,
    R2_PUBLIC,
    check_own_endpoints,
    check_report,
    check_v4_fallback,
    dual_stack_session,
    v6_pongs,
)
from toolkit.lab.noderun import first_peer, run_scenario
from toolkit.lab.topology import Topology
from toolkit.types import Endpoint

SCALE = 0.2
ATTEMPTS = 3


def test_dual_stack_run_goes_direct_over_ipv6_netns() -> None:
    require_netns()
    endpoints = []
    for _ in range(ATTEMPTS):
        report = run(run_scenario(DUAL_STACK, "netns", name=unique_prefix(), timing_scale=SCALE))
        check_report(report, v6=False)  # direct, on bob's v6 endpoint or r2's public v4 one
        assert report.time_to_direct_s is not None and report.time_to_direct_s < 5.0, report.format()
        endpoints.append(report.endpoint)
        if report.endpoint is not None and Endpoint.parse(report.endpoint).ip.version == 6:
            break
    assert Endpoint.parse(str(endpoints[-1])).ip.version == 6, endpoints


def test_dual_stack_nodes_stun_and_ping_over_v6_netns() -> None:
    lab = new_lab(Topology.from_yaml(DUAL_STACK))

    async def body() -> None:
        async with lab:
            status, records = await dual_stack_session(lab, timing_scale=SCALE)
            topo = lab.topology
            check_own_endpoints(topo, status, records)
            assert v6_pongs(topo, records), "bob's v6 endpoint never answered alice's pings"
            peer: dict[str, Any] = first_peer(status) or {}
            assert (peer.get("state"), peer.get("path")) == ("DirectActive", "direct"), peer
            assert Endpoint.parse(peer["endpoint"]) in (Endpoint(topo.host("bob").v6, 41641), R2_PUBLIC), peer  # type: ignore[arg-type]

    run(body())


def test_ipv4_is_used_when_ipv6_does_not_work_netns() -> None:
    lab = new_lab(Topology.from_yaml(DUAL_STACK))

    async def body() -> None:
        async with lab:
            await lab.block_udp("r1", str(lab.topology.host("bob").v6))
            status, records = await dual_stack_session(lab, timing_scale=SCALE)
            check_v4_fallback(lab.topology, status)
            assert not v6_pongs(lab.topology, records)

    run(body())
