"""``natkit demo``: two nodes walk the seed flowchart live, on any backend (issue 6's main job).

The story, told from alice's side, with every step read from her public trace records (design.md §2):

1. the lab comes up (two homes behind NATs, a STUN server, a DERP relay, a control server) and a node
   starts on alice and on bob; alice sends traffic to bob through the tunnel;
2. every flowchart transition alice's node takes for bob is printed as it happens: when (seconds since
   her first packet), the edge (``CheckDirect -[Behind NAT]-> StartDERP``), and the packet behind it
   (:meth:`Narrator._cause`: the pong that made ``AnalyzeResponses`` say yes, the first WireGuard packet
   that started discovery, the heartbeat ping, ...);
3. on DirectActive: ``natkit status`` and ``natkit ping`` through the node;
4. then the direct path is cut at alice's router (:meth:`Lab.block_udp` drops UDP to and from bob's
   public address: DERP is TCP and STUN another address, so they carry on): the node falls back to
   DERP within the trust window plus one ping timeout; the cut is lifted and the node upgrades again.

On ``sim`` the lab's links get realistic latencies (:func:`toolkit.lab.noderun.with_latency`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from toolkit.errors import NatkitError
from toolkit.lab.backend import Lab
from toolkit.lab.noderun import first_peer, opened_lab, settled, start_pair, with_latency
from toolkit.lab.nodes import NodeHandle
from toolkit.lab.registry import load_topology
from toolkit.lab.runreport import walk_of
from toolkit.sansio import peergraph
from toolkit.sansio.trace import TraceRecord

Say = Callable[[str], None]


class Narrator:
    """Prints alice's flowchart transitions for one peer, each with the packet record behind it."""

    def __init__(self, node: NodeHandle, say: Say) -> None:
        self.node, self.say = node, say
        self.seen = 0
        self.t0: float | None = None
        self.packets: dict[str, list[TraceRecord]] = {}  # per peer: packet records since its last transition
        self.peer: str | None = None
        self.state: str | None = None
        self.walked: list[str] = []  # every state entered, in order

    async def catch_up(self) -> None:
        records = await self.node.records()
        for r in records[self.seen :]:
            self._one(r)
        self.seen = len(records)

    def _one(self, r: TraceRecord) -> None:
        if r.node != self.node.host:
            return
        if self.t0 is None and r.kind in ("sent", "received"):
            self.t0 = r.at
        peer = r.peer.text() if r.peer is not None else ""
        if r.kind in ("sent", "received") and r.detail:
            self.packets.setdefault(peer, []).append(r)
            return
        if r.kind != "transition":
            return
        try:
            edge = peergraph.transition_of(r)
        except peergraph.NoSuchTransition:
            return
        if self.peer is None:
            self.peer = peer
        if peer != self.peer:
            return
        self.state = edge.dst.value
        self.walked.append(self.state)
        t = r.at - (self.t0 if self.t0 is not None else r.at)
        label = f"-[{edge.label}]->" if edge.label else "->"
        line = f"  {t:8.3f}s  {edge.src.value} {label} {edge.dst.value}"
        pkt = self._cause(self.packets.pop(peer, []))
        if pkt is not None:
            where = f" {pkt.endpoint}" if pkt.endpoint is not None else ""
            line += f"    [{pkt.kind}{where}: {pkt.detail}]"
        self.say(line)

    @staticmethod
    def _cause(packets: list[TraceRecord]) -> TraceRecord | None:
        """The packet behind an edge: the last one received since the previous edge (a pong, the peer's
        CallMeMaybe), else the first one sent (the packet that started discovery, the heartbeat ping)."""
        received = [p for p in packets if p.kind == "received"]
        return received[-1] if received else (packets[0] if packets else None)


async def _follow(
    lab: Lab, narrator: Narrator, check: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = lab.now() + timeout
    while True:
        status = await narrator.node.status()
        await narrator.catch_up()
        if check(status) or lab.now() >= deadline:
            return status
        await lab.sleep(0.05)


def _state(status: dict[str, Any]) -> str | None:
    peer = first_peer(status)
    return None if peer is None else peer.get("state")


async def run_demo(
    scenario: str = "easy-easy", backend: str = "sim", *, say: Say = print, timing_scale: float = 1.0, cut: bool = True
) -> dict[str, Any]:
    """The demo (see the module docstring); returns a summary (walk, times) for tests."""
    topo = load_topology(scenario)
    if backend == "sim":
        topo = with_latency(topo)
    hosts = topo.nodes()
    if len(hosts) < 2:
        raise NatkitError(f"scenario {topo.name!r} needs two node hosts for the demo")
    a_host, b_host = hosts[0], hosts[1]
    say(f"natkit demo: {topo.name} on {backend}: {topo.description}")
    summary: dict[str, Any] = {"scenario": topo.name, "backend": backend}
    wall = time.monotonic()
    name = f"demo{os.getpid() % 100000}"  # two demos may run at once
    async with opened_lab(topo, backend, name=name, progress=say) as lab:
        say(f"lab up: STUN, DERP and control servers running; starting nodes on {a_host.name} and {b_host.name}")
        pair = await start_pair(lab, timing_scale=timing_scale)
        a, traffic = pair.a, pair.traffic
        say(f"{a_host.name} sends traffic to {b_host.name} ({pair.peer['tunnel_ips'][0]}) through the tunnel")
        say(f"{a_host.name}'s flowchart for {b_host.name} (seconds since her first packet):")
        narrator = Narrator(a, say)
        status = await _follow(lab, narrator, settled, 120.0 * timing_scale + 30)
        summary["settled"] = _state(status)
        peer = first_peer(status) or {}
        say(f"settled in {_state(status)}: path {peer.get('path')} {peer.get('endpoint') or ''}".rstrip())
        say("natkit status:")
        for line in _status_lines(status):
            say("  " + line)
        say(f"natkit ping {b_host.name}:")
        for line in await a.ping(b_host.name, count=3):
            say("  " + line)
        router = topo.router_for(a_host.segment)
        endpoint = peer.get("endpoint")
        if cut and _state(status) == "DirectActive" and router is not None and endpoint:
            far = endpoint.rsplit(":", 1)[0].strip("[]")
            say(f"cutting the direct path: {router.name} drops UDP to and from {far} (DERP is TCP: it stays)")
            t_cut = lab.now()
            await lab.block_udp(router.name, far)
            mark = len(narrator.walked)
            await _follow(lab, narrator, lambda s: "FallbackDERP" in narrator.walked[mark:], 60.0)
            summary["fallback_s"] = lab.now() - t_cut
            say(f"fell back to DERP {summary['fallback_s']:.2f} s after the cut; lifting the cut")
            t_fix = lab.now()
            await lab.block_udp(router.name, far, blocked=False)
            mark = len(narrator.walked)
            await _follow(lab, narrator, lambda s: "DirectActive" in narrator.walked[mark:], 120.0 * timing_scale + 30)
            summary["reupgrade_s"] = lab.now() - t_fix
            say(f"direct again {summary['reupgrade_s']:.2f} s after the path came back")
        stats = await traffic.stop()
        say(f"traffic: {stats.get('sent')} sent, {stats.get('answered')} answered")
        records = await a.records()
        summary["states"] = list(walk_of(records, a_host.name).states)
    summary["wall_s"] = time.monotonic() - wall
    say(f"natkit demo: done in {summary['wall_s']:.1f} s of wall time; lab down")
    return summary


def _status_lines(status: dict[str, Any]) -> list[str]:
    me = status.get("self", {})
    ips = me.get("tunnel_ips") or ["-"]
    lines = [f"{ips[0]:<15} {me.get('name', '')}: self, home r{me.get('home_region')}, endpoints "
             + ",".join(me.get("endpoints") or ["-"])]  # fmt: skip
    for p in status.get("peers", []):
        where = p.get("endpoint") if p.get("path") != "derp" else f'relay "r{p.get("derp_region")}"'
        lat = p.get("latency_s")
        lines.append(
            f"{(p.get('tunnel_ips') or ['-'])[0]:<15} {p.get('name')}: {p.get('state')} ({p.get('coarse')}), "
            f"{p.get('path')} {where}, {'-' if lat is None else f'{lat * 1000:.1f}ms'}"
        )
    return lines
