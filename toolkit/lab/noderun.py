"""``natkit lab run SCENARIO``: start a scenario's services and two nodes, send traffic, report the outcome.

The run (:func:`run_scenario`) is the same on every backend, through the :class:`~toolkit.lab.backend.Lab`
interface only:

1. ``lab.up()`` builds the network and starts the STUN, DERP and control servers;
2. ``lab.start_node`` starts a node on each of the scenario's first two ``node`` hosts (alice, bob);
3. traffic: the first node pings the second's tunnel address through the tunnel, so WireGuard packets
   flow (over DERP first) while the nodes walk the flowchart;
4. the run waits, on the lab's clock, until the first node's machine for its peer settles: in
   ``DirectActive`` (with a direct or local path), or in ``StayOnDERP``; or until ``timeout``;
5. the report (:class:`~toolkit.lab.runreport.RunReport`) is built from the first node's trace records
   and status: final path and state, the time to direct, the flowchart states walked (checked edge by
   edge against the seed's table), and the scenario's ``expect`` (``relayed`` in a scenario file is
   the report's ``derp``).

On ``sim`` the links get realistic one-way latencies where the scenario sets none
(:func:`with_latency`: 10 ms on the internet, 2 ms on a carrier network, 1 ms on a LAN), so the times
mean something; the kernel backends have what the kernel has.

``timing_scale`` multiplies every protocol timer (:meth:`toolkit.timing.Timing.scaled`); the kernel
backends run in real time, so the suite runs them with timers at a fifth so that a scenario that ends
on DERP (retries, then StayOnDERP) settles in seconds. ``sim`` runs in virtual time and needs none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.backend import Lab
from toolkit.lab.nodes import NodeHandle, Traffic
from toolkit.lab.registry import load_topology, open_lab
from toolkit.lab.runreport import RunReport, check_walk, time_to_direct, walk_of
from toolkit.lab.topology import SegmentKind, Topology

Progress = Callable[[str], None]
SETTLED = ("DirectActive", "StayOnDERP")
SIM_LATENCY = {SegmentKind.INTERNET: 0.010, SegmentKind.LAN: 0.001, SegmentKind.CARRIER: 0.002}  # one way, s


def with_latency(topo: Topology) -> Topology:
    """``topo`` with :data:`SIM_LATENCY` on every segment that sets none (the sim's links are instant)."""
    segs = tuple(s if s.latency else dataclasses.replace(s, latency=SIM_LATENCY[s.kind]) for s in topo.segments)
    return dataclasses.replace(topo, segments=segs)


EXPECT = {"direct": "direct", "local": "local", "relayed": "derp", "derp": "derp"}
DEFAULT_TIMEOUT = {"sim": 300.0, "netns": 60.0, "docker": 90.0}  # seconds of the lab's clock


def _quiet(line: str) -> None:
    pass


def first_peer(status: dict[str, Any]) -> dict[str, Any] | None:
    peers = status.get("peers") or []
    return peers[0] if peers else None


def settled(status: dict[str, Any]) -> bool:
    """The first peer's machine rests: DirectActive, or StayOnDERP."""
    peer = first_peer(status)
    return peer is not None and peer.get("state") in SETTLED


async def wait_until(
    lab: Lab, node: NodeHandle, check: Callable[[dict[str, Any]], bool], timeout: float, step: float = 0.2
) -> dict[str, Any]:
    """Poll ``node.status()`` on the lab's clock until ``check``; the last status either way."""
    deadline = lab.now() + timeout
    status = await node.status()
    while not check(status) and lab.now() < deadline:
        await lab.sleep(step)
        status = await node.status()
    return status


@dataclasses.dataclass
class Pair:
    """Two started nodes that know each other, the first sending traffic to the second's tunnel address."""

    a: NodeHandle
    b: NodeHandle
    peer: dict[str, Any]  # the first node's status entry for the second, when it learned of it
    traffic: Traffic


async def start_pair(lab: Lab, *, timing_scale: float = 1.0, timeout: float = 60.0) -> Pair:
    """Steps 2-3 of the module docstring: nodes on the scenario's first two node hosts, known to each other
    through the control server, the first pinging the second through the tunnel."""
    topo = lab.topology
    hosts = topo.nodes()
    if len(hosts) < 2:
        raise UsageError(f"scenario {topo.name!r} has {len(hosts)} node host(s); it needs two (node: true)")
    a_host, b_host = hosts[0].name, hosts[1].name
    a = await lab.start_node(a_host, timing_scale=timing_scale)
    b = await lab.start_node(b_host, timing_scale=timing_scale)
    known = await wait_until(lab, a, lambda s: first_peer(s) is not None, timeout)
    peer = first_peer(known)
    if peer is None:
        raise NatkitError(f"{a_host} never learned of {b_host} from the control server within {timeout} s")
    return Pair(a, b, peer, await a.start_traffic(str(peer["tunnel_ips"][0])))


async def run_nodes(
    lab: Lab, *, timing_scale: float = 1.0, timeout: float | None = None, hold: float = 0.0
) -> RunReport:
    """Steps 2-5 of the module docstring on a lab that is up."""
    topo = lab.topology
    started = time.monotonic()
    limit = timeout if timeout is not None else DEFAULT_TIMEOUT.get(lab.backend, 60.0)
    pair = await start_pair(lab, timing_scale=timing_scale, timeout=limit)
    a, b, traffic = pair.a, pair.b, pair.traffic
    a_host, b_host = a.host, b.host
    status = await wait_until(lab, a, settled, limit)
    if hold:
        await lab.sleep(hold)
        status = await a.status()
    records = await a.records()
    stats = await traffic.stop()
    await b.stop()
    await a.stop()
    walk = walk_of(records, a_host)
    peer = first_peer(status) or {}
    report = RunReport(
        scenario=topo.name,
        backend=lab.backend,
        final_path=str(peer.get("path") or "derp"),
        final_state=peer.get("state"),
        time_to_direct_s=time_to_direct(records, walk),
        states=list(walk.states),
        expect=EXPECT.get(topo.expect or "", topo.expect),
        node=a_host,
        peer=b_host,
        latency_ms=None if peer.get("latency_s") is None else float(peer["latency_s"]) * 1000,
        endpoint=peer.get("endpoint"),
        traffic=stats,
        problems=check_walk(walk.states),
    )
    if peer.get("state") not in SETTLED:
        report.problems.append(f"{a_host} did not settle within {limit} s (state {peer.get('state')})")
    report.duration_s = time.monotonic() - started
    return report


async def run_scenario(
    scenario: str | Path | Topology,
    backend: str = "sim",
    *,
    name: str | None = None,
    seed: int = 0,
    timing_scale: float = 1.0,
    timeout: float | None = None,
) -> RunReport:
    """Bring the scenario up on ``backend``, run two nodes on it, take it down; the report."""
    topology = load_topology(scenario)
    if backend == "sim":
        topology = with_latency(topology)
    started = time.monotonic()
    async with opened_lab(topology, backend, name=name, seed=seed) as lab:
        # sim time is free: keep the traffic going 2 s more so the report shows it flowing on the final path
        report = await run_nodes(lab, timing_scale=timing_scale, timeout=timeout, hold=2.0 if backend == "sim" else 0.0)
    report.duration_s = time.monotonic() - started
    return report


@contextlib.asynccontextmanager
async def opened_lab(
    topology: Topology, backend: str, *, name: str | None = None, seed: int = 0, progress: Progress = _quiet
) -> AsyncIterator[Lab]:
    """The lab up (and down again afterwards, also on error). On docker: the engine found or started (and
    stopped again if this started it) and the images built if missing, offline when no registry answers
    (:func:`toolkit.lab.benchprep.prepare_docker`)."""
    kw: dict[str, Any] = {"seed": seed}
    if name is not None:
        kw["name_prefix"] = name
    prep = None
    if backend == "docker":
        from toolkit.lab.benchprep import Skipped, prepare_docker

        try:
            prep = await asyncio.to_thread(prepare_docker, progress)
        except Skipped as exc:
            raise UsageError(f"the docker backend cannot run here: {exc}") from None
        kw.update(engine=prep.engine, images=prep.images)
    try:
        async with open_lab(topology, backend, **kw) as lab:
            yield lab
    finally:
        if prep is not None and prep.started:
            from toolkit.lab.docker import engine as engine_mod

            await asyncio.to_thread(engine_mod.stop_engine, prep.engine)


def run(scenario: str | Path | Topology, backend: str = "sim", **kw: Any) -> RunReport:
    """:func:`run_scenario` from synchronous code."""
    return asyncio.run(run_scenario(scenario, backend, **kw))


__all__ = [
    "DEFAULT_TIMEOUT",
    "SETTLED",
    "Pair",
    "opened_lab",
    "run",
    "start_pair",
    "run_nodes",
    "run_scenario",
    "settled",
    "wait_until",
]
