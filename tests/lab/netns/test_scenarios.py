"""Every scenario in ``labs/`` comes up on the netns backend, and its nodes see the NATs on their path.

``natkit nat-type`` runs on each node host; the expected verdict follows from the routers between
the host and the internet (:meth:`Topology.path_to_internet`): none means no NAT; a router that
blocks UDP means no answer; otherwise NATs in a row map per destination if any of them does and
filter as strictly as the strictest (RFC 4787 §4.1, §5).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest

from tests.lab.netns.netnslab import FAST, STUN, new_lab, run
from toolkit.lab.nat import Filtering, Mapping
from toolkit.lab.netns import NetnsLab
from toolkit.lab.registry import list_scenarios, load_topology
from toolkit.lab.topology import Topology

STRICTNESS = [Filtering.ENDPOINT_INDEPENDENT, Filtering.ADDRESS_DEPENDENT, Filtering.ADDRESS_AND_PORT_DEPENDENT]


def expected(topo: Topology, host: str) -> dict[str, Any]:
    nats = [r.nat for r in topo.path_to_internet(host) if r.nat is not None]
    if not nats:
        return {"behind_nat": False}
    if any(n.block_udp for n in nats):
        return {"udp_blocked": True}
    mapping = Mapping.ENDPOINT_INDEPENDENT
    if any(n.mapping is Mapping.ADDRESS_AND_PORT_DEPENDENT for n in nats):
        mapping = Mapping.ADDRESS_AND_PORT_DEPENDENT
    filtering = max((n.filtering for n in nats), key=STRICTNESS.index)
    return {"behind_nat": True, "mapping": mapping.value, "filtering": filtering.value}


async def _report(lab: NetnsLab, host: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "toolkit", "nat-type", STUN, "--format", "json", *FAST]
    result = await lab.run(host, argv, timeout=60)
    assert result.stdout, f"nat-type on {host}: exit {result.exit}: {result.stderr}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.parametrize("scenario", [s.name for s in list_scenarios()])
def test_scenario_nodes_see_their_nats(scenario: str) -> None:
    topo = load_topology(scenario)
    assert any(STUN == str(h.v4) for h in topo.hosts), "every scenario has stun1 at 198.51.100.10"
    lab = new_lab(topo)

    async def body() -> None:
        async with lab:
            nodes = [h.name for h in topo.nodes()]
            reports = await asyncio.gather(*(_report(lab, n) for n in nodes))
            for node, report in zip(nodes, reports, strict=True):
                want = expected(topo, node)
                assert {k: report[k] for k in want} == want, f"{scenario}: {node}: {report['verdict']}"

    run(body())
