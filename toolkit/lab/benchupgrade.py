"""``natkit bench upgrade``: how fast two nodes go from their first packet to a direct path (issue 6).

Scenario ``easy-easy`` (two endpoint-independent NATs, one DERP region, one STUN server), nodes ``alice``
and ``bob``. One run: start both nodes, wait until each knows the other from the control server, then
alice sends traffic to bob's tunnel address. Every figure comes from the nodes' trace records (their
public output, the same on every backend) on one clock (sim: virtual; netns: ``time.monotonic()`` of the
node processes, CLOCK_MONOTONIC, one clock for the whole machine):

* **first packet**: alice's first ``sent`` record with ``peer`` = bob (WireGuard or disco, any path);
* **time to direct**, per node: from that first packet to the node's first ``DirectActive``
  (:meth:`toolkit.lab.runreport.Walk.first`); bob is the node that receives the CallMeMaybe; "both" is
  the later of the two;
* **physical minimum** = the CallMeMaybe's DERP delivery (bob receives the relayed frame carrying it minus
  alice's ``sent ... CallMeMaybe`` record) + one direct round trip (bob's first direct disco Pong).
  ``sim``, with :func:`~toolkit.lab.noderun.with_latency` (internet 10 ms, LAN 1 ms one way), reports bob's
  time as a ratio to it: goal <= 1.2x. Each of R runs is a fresh sim lab with seed 0..R-1.
* ``netns`` (real time, timers unscaled): one lab up for the whole bench; round i starts two fresh node
  processes (the NAT routers' conntrack tables flushed first), measures as above, stops them, then runs
  :func:`toolkit.lab.icebench.ice_connect` (aioice, same hosts, same STUN server, tables flushed again).
  Goal: natkit's median "both direct" <= 0.5x aioice's median time to connected.
* **idle CPU** per node: after the last netns run, traffic stopped, the nodes sit idle for ``idle``
  seconds; utime+stime from ``/proc/PID/stat`` over that window, as % of one core. **Peak memory** per
  node: ``VmHWM`` from ``/proc/PID/status`` at the end of each run (the maximum over runs is reported).

The figures are read out of the records and ``/proc`` by :mod:`toolkit.lab.upgrademeasure`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.backend import Lab
from toolkit.lab.benchprep import split_backends
from toolkit.lab.noderun import first_peer, wait_until, with_latency
from toolkit.lab.nodes import NodeHandle
from toolkit.lab.runreport import walk_of
from toolkit.lab.topology import Topology
from toolkit.lab.upgrademeasure import (
    cmm_delivery,
    cpu_ticks,
    direct_rtt,
    first_packet,
    measure,
    peak_kib,
)
from toolkit.sansio.trace import TraceRecord

BACKENDS = ("sim", "netns")
SCENARIO = "easy-easy"
GOAL_SIM_RATIO = 1.2  # bob's time to direct / physical minimum, at most
GOAL_NETNS_RATIO = 0.5  # natkit both direct / aioice connected, at most
IDLE_SECONDS = 5.0
SETTLE_TIMEOUT = {"sim": 60.0, "netns": 20.0}  # seconds of the lab's clock from the first packet
MEASURED = (
    "time to direct = alice's first packet to bob -> each node's first DirectActive (trace records, one clock); "
    "minimum = CallMeMaybe DERP delivery + first direct disco RTT (sim: internet 10 ms, LAN 1 ms one way); "
    "aioice = first STUN request -> controlling agent connected (netns, same hosts and STUN server)."
)

Progress = Callable[[str], None]


def _settled(records: Sequence[TraceRecord], node: str) -> bool:
    walk = walk_of(records, node)
    return walk.first("DirectActive") is not None or walk.first("StayOnDERP") is not None


async def natkit_run(lab: Lab, a: str, b: str, *, idle: float = 0.0, step: float = 0.05) -> dict[str, Any]:
    """Start nodes on ``a`` and ``b``, send from ``a``, wait until both settle; the figures of :func:`measure`
    plus each node's final path and state, its peak memory (kernel backends) and, ``idle`` > 0, its CPU
    use over ``idle`` seconds without traffic."""
    na = await lab.start_node(a)
    nb: NodeHandle | None = None
    try:
        nb = await lab.start_node(b)
        limit = SETTLE_TIMEOUT.get(lab.backend, 20.0)
        sa = await wait_until(lab, na, lambda s: first_peer(s) is not None, limit)
        sb = await wait_until(lab, nb, lambda s: first_peer(s) is not None, limit)
        pa, pb = first_peer(sa), first_peer(sb)
        if pa is None or pb is None:
            raise NatkitError(f"{a} and {b} did not learn of each other from the control server within {limit} s")
        traffic = await na.start_traffic(str(pa["tunnel_ips"][0]))
        deadline = lab.now() + limit
        ra, rb = await na.records(), await nb.records()
        while not (_settled(ra, a) and _settled(rb, b)) and lab.now() < deadline:
            await lab.sleep(step)
            ra, rb = await na.records(), await nb.records()
        await lab.sleep(step)  # the last records of the moment (pongs after DirectActive) are written
        stats = await traffic.stop()
        ra, rb = await na.records(), await nb.records()
        out = measure(ra, rb, a, b, str(pb["node_key"]), str(pa["node_key"]))
        for name, node in ((a, na), (b, nb)):
            peer = first_peer(await node.status()) or {}
            out[f"{name}_path"], out[f"{name}_state"] = peer.get("path"), peer.get("state")
        out["traffic"] = stats
        pids = {name: _pid(node) for name, node in ((a, na), (b, nb))}
        if idle > 0 and all(pids.values()):
            before = {name: cpu_ticks(pid) for name, pid in pids.items() if pid}
            t0 = time.monotonic()
            await lab.sleep(idle)
            elapsed = time.monotonic() - t0
            hz = os.sysconf("SC_CLK_TCK")
            out["idle_s"] = round(elapsed, 3)
            out["idle_resolution_pct"] = 100.0 / hz / elapsed  # one clock tick
            for name, pid in pids.items():
                if pid:
                    out[f"{name}_idle_cpu_pct"] = 100.0 * (cpu_ticks(pid) - before[name]) / hz / elapsed
        for name, pid in pids.items():
            if pid:
                out[f"{name}_peak_kib"] = peak_kib(pid)
        return out
    finally:
        if nb is not None:
            await nb.stop()
        await na.stop()


def _pid(node: NodeHandle) -> int | None:
    """The node's process id (kernel backends: ``natkit node`` run by ``ip netns exec``, which execs it)."""
    pid = getattr(getattr(node, "service", None), "pid", None)
    return pid if isinstance(pid, int) else None


async def _flush_nats(lab: Lab) -> None:
    for router in lab.topology.routers:
        if router.nat is not None:
            await lab.flush_nat(router.name)


# --- the benches ------------------------------------------------------------------------------------------


async def bench_sim(topo: Topology, repeat: int, progress: Progress) -> dict[str, Any]:
    """R fresh sim labs (seeds 0..R-1) with link latencies."""
    from toolkit.lab.registry import open_lab

    topo = with_latency(topo)
    a, b = (h.name for h in topo.nodes()[:2])
    runs, failures = [], []
    for seed in range(repeat):
        lab = open_lab(topo, "sim", seed=seed)
        async with lab:
            run = await natkit_run(lab, a, b)
        run["seed"] = seed
        runs.append(run)
        if run[f"{a}_s"] is None or run[f"{b}_s"] is None:
            failures.append(f"seed {seed}: not direct ({a} {run[f'{a}_state']}, {b} {run[f'{b}_state']})")
        progress(f"sim: run {seed + 1}/{repeat}: {_line(run, a, b)}")
    return _summary(runs, failures, a, b)


async def bench_netns(topo: Topology, repeat: int, idle: float, progress: Progress) -> dict[str, Any]:
    """One netns lab; R rounds of (natkit run, aioice connect), interleaved; idle figures after the last."""
    from toolkit.lab.icebench import ice_connect, lab_stun
    from toolkit.lab.netns import NetnsLab

    a, b = (h.name for h in topo.nodes()[:2])
    lab = NetnsLab(topo, name_prefix=f"u{secrets.token_hex(4)}")
    runs: list[dict[str, Any]] = []
    failures: list[str] = []
    ice: list[dict[str, Any]] = []
    async with lab:
        stun = lab_stun(lab)
        for i in range(repeat):
            await _flush_nats(lab)
            run = await natkit_run(lab, a, b, idle=idle if i == repeat - 1 else 0.0)
            runs.append(run)
            if run[f"{a}_s"] is None or run[f"{b}_s"] is None:
                failures.append(f"run {i + 1}: not direct ({a} {run[f'{a}_state']}, {b} {run[f'{b}_state']})")
            progress(f"netns: run {i + 1}/{repeat}: natkit {_line(run, a, b)}")
            await _flush_nats(lab)
            res = await ice_connect(lab, a, b, stun)
            ice.append({"ok": res.ok, "direct": res.direct, "time_s": res.time_to_connected, "error": res.error})
            progress(f"netns: run {i + 1}/{repeat}: {res.summary()}")
    out = _summary(runs, failures, a, b)
    times = [float(x["time_s"]) for x in ice if x["ok"]]
    out["aioice"] = {"runs": ice, "ok": len(times), **_stats(times, "")}
    if out.get("median_both_s") is not None and times:
        out["ratio_vs_aioice"] = {k: out[f"median_{k}_s"] / statistics.median(times) for k in (a, b, "both")}
        out["ratio_vs_aioice_fastest"] = out["median_both_s"] / min(times)  # aioice is bimodal (~45 / ~530 ms)
    last = runs[-1] if runs else {}
    out["idle"] = {name: last.get(f"{name}_idle_cpu_pct") for name in (a, b)} | {
        "seconds": last.get("idle_s"),
        "resolution_pct": last.get("idle_resolution_pct"),
    }
    out["peak_kib"] = {name: max((r.get(f"{name}_peak_kib") or 0 for r in runs), default=0) for name in (a, b)}
    return out


def _stats(xs: Sequence[float], prefix: str) -> dict[str, float | None]:
    return {
        f"median{prefix}_s": statistics.median(xs) if xs else None,
        f"min{prefix}_s": min(xs, default=None),
        f"max{prefix}_s": max(xs, default=None),
    }


def _summary(runs: list[dict[str, Any]], failures: list[str], a: str, b: str) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": [a, b], "runs": runs, "failures": failures, "error": None}
    for key in (a, b, "both", "cmm_delivery", "rtt", "minimum"):
        vals = [r[f"{key}_s"] for r in runs if r.get(f"{key}_s") is not None]
        out |= _stats(vals, f"_{key}")
    ratios = [r["ratio"] for r in runs if r.get("ratio") is not None]
    out["ratio"] = statistics.median(ratios) if ratios else None
    return out


def _line(run: dict[str, Any], a: str, b: str) -> str:
    return (
        f"direct {a} {_ms(run[f'{a}_s'])}, {b} {_ms(run[f'{b}_s'])} (CallMeMaybe via DERP {_ms(run['cmm_delivery_s'])}"
        f" + RTT {_ms(run['rtt_s'])} = minimum {_ms(run['minimum_s'])})"
    )


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def run_upgrade_bench(
    repeat: int = 5,
    backends: Sequence[str] | None = None,
    *,
    idle: float = IDLE_SECONDS,
    explicit: bool = False,
    progress: Progress = lambda line: None,
) -> dict[str, Any]:
    """Measure the backends that can run (module docstring); a JSON-able report."""
    from toolkit.lab.registry import load_topology

    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    if idle < 0:
        raise UsageError(f"--idle must be 0 or more seconds, got {idle}")
    runnable, skipped = split_backends(backends, BACKENDS, "upgrade")
    if explicit and not runnable:
        raise UsageError("; ".join(f"{b}: {r}" for b, r in skipped.items()))
    for name, reason in skipped.items():
        progress(f"{name}: skipped: {reason}")
    topo = load_topology(SCENARIO)
    report: dict[str, Any] = {"scenario": SCENARIO, "repeat": repeat, "measured": MEASURED, "skipped": skipped}
    for name in runnable:
        progress(f"{name}: {repeat} run(s) of {SCENARIO} ...")
        try:
            coro = bench_sim(topo, repeat, progress) if name == "sim" else bench_netns(topo, repeat, idle, progress)
            report[name] = asyncio.run(coro)
        except (NatkitError, OSError) as exc:
            report[name] = {"error": str(exc), "runs": [], "failures": []}
            progress(f"{name}: FAILED: {exc}")
    report["goals"] = _goals(report)
    return report


def _goals(report: dict[str, Any]) -> dict[str, Any]:
    goals: dict[str, Any] = {}
    sim = report.get("sim") or {}
    if sim.get("ratio") is not None:
        goals["sim"] = {
            "goal": f"<= {GOAL_SIM_RATIO}x minimum",
            "value": sim["ratio"],
            "met": sim["ratio"] <= GOAL_SIM_RATIO,
        }
    ratio = (report.get("netns") or {}).get("ratio_vs_aioice", {}).get("both")
    if ratio is not None:
        goals["netns"] = {"goal": f"<= {GOAL_NETNS_RATIO}x aioice", "value": ratio, "met": ratio <= GOAL_NETNS_RATIO}
    return goals


def format_report(report: dict[str, Any]) -> str:
    """The text ``natkit bench upgrade`` prints: medians (min-max) side by side with the goals."""
    lines = [f"upgrade bench: scenario {report['scenario']}, median (min-max) of {report['repeat']} run(s)"]
    lines.append(f"measured: {report['measured']}")
    goals = report["goals"]
    for name in BACKENDS:
        entry = report.get(name)
        if entry is None:
            continue
        if entry["error"]:
            lines.append(f"{name}: FAILED: {entry['error']}")
            continue
        a, b = entry["nodes"]
        lines.append(
            f"{name}: first packet -> DirectActive: {b} {_range(entry, b)}, {a} {_range(entry, a)}, "
            f"both {_range(entry, 'both')}"
        )
        lines.append(
            f"{'':<6} minimum {_range(entry, 'minimum')} = CallMeMaybe via DERP {_range(entry, 'cmm_delivery')}"
            f" + direct RTT {_range(entry, 'rtt')}"
        )
        if entry["ratio"] is not None:
            goal = goals.get("sim", {})
            verdict = f"goal {goal.get('goal')}: {'met' if goal.get('met') else 'NOT met'}" if name == "sim" else ""
            lines.append(f"{'':<6} {b} / minimum = {entry['ratio']:.2f}x   {verdict or '(goal on sim only)'}")
        ice = entry.get("aioice")
        if ice is not None:
            lines.append(f"{'':<6} aioice connected {_range(ice, None)} ({ice['ok']}/{len(ice['runs'])} ok)")
            ratios = entry.get("ratio_vs_aioice")
            if ratios:
                goal = goals.get("netns", {})
                verdict = "met" if goal.get("met") else "NOT met"
                lines.append(
                    f"{'':<6} natkit / aioice: both {ratios['both']:.2f}x ({b} {ratios[b]:.2f}x, {a} "
                    f"{ratios[a]:.2f}x)   goal {goal.get('goal')}: {verdict}"
                )
                lines.append(f"{'':<6} natkit both / aioice's fastest run: {entry['ratio_vs_aioice_fastest']:.2f}x")
            idle = entry.get("idle", {})
            cpu = ", ".join(f"{n} {idle[n]:.2f}%" for n in (a, b) if idle.get(n) is not None)
            if cpu:
                lines.append(
                    f"{'':<6} idle CPU over {idle['seconds']:.1f} s (% of one core, one tick = "
                    f"{idle['resolution_pct']:.2f}%): {cpu}"
                )
            peak = entry.get("peak_kib", {})
            lines.append(
                f"{'':<6} peak memory (VmHWM): " + ", ".join(f"{n} {v / 1024:.1f} MiB" for n, v in peak.items())
            )
        lines += [f"{'':<6} NOT DIRECT: {f}" for f in entry["failures"]]
    for name, reason in report["skipped"].items():
        lines.append(f"{name}: skipped: {reason}")
    return "\n".join(lines)


def _range(entry: dict[str, Any], key: str | None) -> str:
    k = "" if key is None else f"_{key}"
    if entry.get(f"median{k}_s") is None:
        return "-"
    return f"{_ms(entry[f'median{k}_s'])} ({_ms(entry[f'min{k}_s'])}-{_ms(entry[f'max{k}_s'])})"


def failed(report: dict[str, Any]) -> bool:
    """A backend raised, or some run did not reach a direct path."""
    return any(isinstance(report.get(b), dict) and (report[b]["error"] or report[b]["failures"]) for b in BACKENDS)


__all__ = [
    "BACKENDS",
    "GOAL_NETNS_RATIO",
    "GOAL_SIM_RATIO",
    "cmm_delivery",
    "cpu_ticks",
    "direct_rtt",
    "failed",
    "first_packet",
    "measure",
    "natkit_run",
    "peak_kib",
    "run_upgrade_bench",
]
