"""Helpers for the netns backend tests: unique lab names, topologies, running ``natkit nat-type`` in a lab."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

from tests.support import require_root, require_tool
from toolkit.lab.nat import NatBehavior, preset
from toolkit.lab.netns import NetnsLab
from toolkit.lab.topology import Topology, TopologyBuilder

STUN = "198.51.100.10"  # stun1's first address; its second (RFC 5780 "other address") is .11
FAST = ("--rto", "0.05", "--rc", "3", "--rm", "4")


def unique_prefix() -> str:
    """A lab name no other test (or helper running tests in parallel) uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def require_netns() -> None:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")


def nat_lab(*nats: str | NatBehavior, name: str = "netns-test") -> Topology:
    """Router ``rN`` with NAT ``nats[N-1]`` serving LAN ``lanN`` with host ``hN``; stun1 with two addresses."""
    t = TopologyBuilder(name)
    for i, nat in enumerate(nats, 1):
        lan = t.lan(f"lan{i}", index=i)
        t.nat_router(f"r{i}", lan=lan, nat=preset(nat) if isinstance(nat, str) else nat)
        t.host(f"h{i}", lan)
    t.host("stun1", t.internet, v4=STUN, extra_v4=["198.51.100.11"], services=["stun-server"])
    t.host("peer", t.internet)
    return t.build()


def new_lab(topo: Topology) -> NetnsLab:
    require_netns()
    return NetnsLab(topo, name_prefix=unique_prefix())


async def nat_type(lab: NetnsLab, host: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    """``natkit nat-type --format json`` run on ``host`` against stun1: the parsed report."""
    argv = [sys.executable, "-m", "toolkit", "nat-type", STUN, "--format", "json", *FAST, *args]
    result = await lab.run(host, argv, timeout=timeout)
    assert result.exit == 0, f"nat-type on {host}: exit {result.exit}: {result.stderr} {result.stdout[:1500]}"
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def run(coro: Any) -> Any:
    return asyncio.run(coro)
