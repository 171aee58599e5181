"""``natkit bench lab``: how long a two-NAT lab takes to come up and go down on sim, netns and docker (issue 5).

What one run measures, on every backend, with :func:`time.perf_counter` in this process:

* **up** = ``await lab.up()`` (network built: namespaces / containers, links, addresses, routes, the NAT
  routers' nftables rules; every service of the topology started and printing its ``listening on`` line)
  **plus** a reachability probe that must succeed: from every node host (alice, bob: behind their NATs) a
  STUN Binding Request to every STUN server address answered with a success response (its XOR-MAPPED-ADDRESS
  must be the NAT router's WAN address, i.e. the packet really went through the NAT), and a TCP connection
  accepted by every DERP and control server. The probe is a tiny stdlib-only Python program run on the host
  (``lab.run``: ``ip netns exec`` / ``docker exec``), retrying until everything answers; in ``sim`` it is a
  virtual UDP socket on the host and the STUN part only (the sim does not run TCP services yet).
  ``lab_up`` and ``probe`` are also reported apart.
* **down** = ``await lab.down()``; afterwards (not timed) the bench checks nothing of the lab is left
  (``nk-NAME-*`` namespaces; containers and networks labelled ``org.natkit.lab=NAME``).

Runs are interleaved (round i runs every backend once) so load from other processes hits all alike; the
median of R runs is reported, with the ratios and the goals: sim up < 50 ms, netns up < 0.5 s, docker up
within 10x of netns.

Before any timing, :mod:`toolkit.lab.benchprep` checks which backends can run here (a backend that cannot, e.g.
not root or no Docker, is skipped with one line saying why and how to enable it: :class:`Skipped`; the caller
decides the exit status) and prepares docker (engine, images, offline choice: :func:`docker_offline`); that
preparation is reported apart.
"""

from __future__ import annotations

import asyncio
import os  # noqa: F401 - kept as benchlab.os: callers patch benchlab.os.geteuid (checks are in benchprep)
import secrets
import statistics
import time
from typing import Any

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.backend import Lab
from toolkit.lab.benchprep import (
    BACKENDS,
    REGISTRY,
    DockerPrep,
    Progress,
    Skipped,
    check_backend,
    docker_offline,
    prepare_docker,
    registry_reachable,
    split_backends,
)
from toolkit.lab.labprobe import probe
from toolkit.lab.topology import Topology

GOAL_SIM_UP = 0.050  # seconds
GOAL_NETNS_UP = 0.5  # seconds
GOAL_DOCKER_VS_NETNS = 10.0  # docker up / netns up at most
MEASURED = (
    "up = lab.up() (network, NAT rules, every service listening) + a probe until reachable: STUN Binding from "
    "each node host through its NAT to every STUN address (mapped address = the NAT's WAN address) and a TCP "
    "connect to every DERP/control server (sim: STUN only); down = lab.down(). Wall clock, median of runs."
)


# --- runs, report -------------------------------------------------------------------------------------


def make_lab(backend: str, topo: Topology, prefix: str, docker: DockerPrep | None) -> Lab:
    from toolkit.lab.registry import backend_class

    if backend == "docker":
        from toolkit.lab.docker import DockerLab

        assert docker is not None
        return DockerLab(topo, name_prefix=prefix, engine=docker.engine, offline=docker.offline, images=docker.images)
    return backend_class(backend)(topo, name_prefix=prefix)


def leftovers(lab: Lab) -> list[str]:
    """What still exists of ``lab`` after ``down()`` (should be nothing)."""
    if lab.backend == "netns":
        from toolkit.lab.netns import plumbing

        return plumbing.existing_namespaces(lab.name)
    if lab.backend == "docker":
        from toolkit.lab.docker.compose import LABEL_LAB

        eng, label = lab.engine, f"label={LABEL_LAB}={lab.name}"  # type: ignore[attr-defined]
        found = eng.docker("ps", "-a", "--format", "container {{.Names}}", "--filter", label).stdout.split("\n")
        found += eng.docker("network", "ls", "--format", "network {{.Name}}", "--filter", label).stdout.split("\n")
        return [f for f in found if f]
    return ["sim world"] if getattr(lab, "world", None) is not None else []


async def one_run(backend: str, topo: Topology, docker: DockerPrep | None) -> dict[str, Any]:
    """Bring one lab up (until reachable) and down; seconds of each phase, probe lines, leftovers."""
    lab = make_lab(backend, topo, f"b{secrets.token_hex(5)}", docker)
    try:
        t0 = time.perf_counter()
        await lab.up()
        t1 = time.perf_counter()
        lines = await probe(lab)
        t2 = time.perf_counter()
    except BaseException:
        await lab.down()
        raise
    await lab.down()
    t3 = time.perf_counter()
    left = await asyncio.to_thread(leftovers, lab)
    return {"up": t2 - t0, "lab_up": t1 - t0, "probe": t2 - t1, "down": t3 - t2, "probe_lines": lines, "left": left}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


async def _bench(
    topo: Topology, repeat: int, backends: list[str], docker: DockerPrep | None, progress: Progress
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {b: {"runs": [], "error": None} for b in backends}
    for i in range(repeat):  # interleaved: load from elsewhere hits every backend alike
        for backend in backends:
            res = results[backend]
            if res["error"]:
                continue
            try:
                run = await one_run(backend, topo, docker)
            except (NatkitError, UsageError, OSError) as exc:
                res["error"] = str(exc)
                progress(f"{backend}: run {i + 1}/{repeat} failed: {exc}")
                continue
            res["runs"].append(run)
            note = f"; LEFT BEHIND: {', '.join(run['left'])}" if run["left"] else ""
            progress(
                f"{backend}: run {i + 1}/{repeat}: up {run['up'] * 1000:.1f} ms (lab.up {run['lab_up'] * 1000:.1f}"
                f" + probe {run['probe'] * 1000:.1f}), down {run['down'] * 1000:.1f} ms{note}"
            )
    return results


def run_lab_bench(
    scenario: str = "easy-easy",
    repeat: int = 5,
    backends: list[str] | None = None,
    *,
    explicit: bool = False,
    progress: Progress = lambda line: None,
) -> dict[str, Any]:
    """Measure every backend that can run (module docstring); a JSON-able report.

    ``explicit``: the user named ``backends``; then none of them being able to run is a UsageError."""
    from toolkit.lab.registry import load_topology, scenario_path

    if repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {repeat}")
    runnable, skipped = split_backends(backends, BACKENDS, "lab")
    path = scenario_path(scenario)
    topo = load_topology(path)
    docker: DockerPrep | None = None
    if "docker" in runnable:
        try:
            docker = prepare_docker(progress)
        except Skipped as exc:
            runnable.remove("docker")
            skipped["docker"] = exc.reason
    if explicit and not runnable:  # the user named only backends that cannot run: one line, exit 2
        raise UsageError("; ".join(f"{b}: {r}" for b, r in skipped.items()))
    for name, reason in skipped.items():
        progress(f"{name}: skipped: {reason}")
    progress(f"measuring {', '.join(runnable)}: {repeat} run(s) each of scenario {topo.name} ({path})")
    try:
        results = asyncio.run(_bench(topo, repeat, runnable, docker, progress))
    finally:
        if docker is not None and docker.started:
            from toolkit.lab.docker import engine as engine_mod

            progress("docker: stopping the dockerd the bench started")
            engine_mod.stop_engine(docker.engine)
    return _report(topo.name, repeat, results, skipped, docker)


def _report(
    scenario: str, repeat: int, results: dict[str, dict[str, Any]], skipped: dict[str, str], docker: DockerPrep | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": scenario, "repeat": repeat, "measured": MEASURED, "skipped": skipped}
    med: dict[str, float] = {}
    for name, res in results.items():
        runs = res["runs"]
        entry: dict[str, Any] = {"error": res["error"], "runs": len(runs)}
        for key in ("up", "lab_up", "probe", "down"):
            entry[key] = [round(r[key], 6) for r in runs]
            entry[f"median_{key}"] = round(_median([r[key] for r in runs]), 6) if runs else None
        entry["left_behind"] = sorted({x for r in runs for x in r["left"]})
        entry["probe_lines"] = runs[-1]["probe_lines"] if runs else []
        if runs and not res["error"]:
            med[name] = _median([r["up"] for r in runs])
        out[name] = entry
    if docker is not None:
        out.setdefault("docker", {})["prepare"] = docker.to_dict()
    goals: dict[str, Any] = {}
    if "sim" in med:
        goals["sim_up"] = {"goal": f"< {GOAL_SIM_UP * 1000:.0f} ms", "met": med["sim"] < GOAL_SIM_UP}
    if "netns" in med:
        goals["netns_up"] = {"goal": f"< {GOAL_NETNS_UP} s", "met": med["netns"] < GOAL_NETNS_UP}
    if "docker" in med and "netns" in med:
        ratio = med["docker"] / med["netns"]
        goals["docker_up"] = {"goal": f"<= {GOAL_DOCKER_VS_NETNS:.0f}x netns", "met": ratio <= GOAL_DOCKER_VS_NETNS}
    out["goals"] = goals
    ratios: dict[str, dict[str, float]] = {}
    for a, b in (("netns", "sim"), ("docker", "netns"), ("docker", "sim")):
        if a in med and b in med:
            ra, rb = out[a], out[b]
            ratios[f"{a}/{b}"] = {
                "up": round(ra["median_up"] / rb["median_up"], 2),
                "down": round(ra["median_down"] / rb["median_down"], 2) if rb["median_down"] else float("inf"),
            }
    out["ratios"] = ratios
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def format_report(report: dict[str, Any]) -> str:
    """The text ``natkit bench lab`` prints."""
    lines = [f"lab bench: scenario {report['scenario']}, median of {report['repeat']} run(s) per backend"]
    lines.append(f"measured: {report['measured']}")
    lines.append(f"{'backend':<8} {'up':>11} {'(lab.up':>11} {'+ probe)':>11} {'down':>11}  goal")
    goal_keys = {"sim": "sim_up", "netns": "netns_up", "docker": "docker_up"}
    for name in BACKENDS:
        entry = report.get(name)
        if entry is None or "runs" not in entry:
            continue
        goal = report["goals"].get(goal_keys[name])
        if name == "docker" and goal is not None:
            ratio = report["ratios"]["docker/netns"]["up"]
            verdict = f"up {goal['goal']} ({ratio:.1f}x): {'met' if goal['met'] else 'NOT met'}"
        elif goal is not None:
            verdict = f"up {goal['goal']}: {'met' if goal['met'] else 'NOT met'}"
        else:
            verdict = "up <= 10x netns: netns not measured" if name == "docker" else "-"
        lines.append(
            f"{name:<8} {_ms(entry['median_up']):>11} {_ms(entry['median_lab_up']):>11} "
            f"{_ms(entry['median_probe']):>11} {_ms(entry['median_down']):>11}  {verdict}"
        )
        runs = ", ".join(f"{u * 1000:.0f}/{d * 1000:.0f}" for u, d in zip(entry["up"], entry["down"], strict=True))
        lines.append(f"{'':<8} runs up/down ms: {runs or 'none'}")
        if entry["error"]:
            lines.append(f"{'':<8} FAILED: {entry['error']}")
        if entry["left_behind"]:
            lines.append(f"{'':<8} LEFT BEHIND after down: {', '.join(entry['left_behind'])}")
    if report["ratios"]:
        ratios = "; ".join(f"{k} {v['up']:.1f}x / {v['down']:.1f}x" for k, v in report["ratios"].items())
        lines.append(f"ratios (up / down): {ratios}")
    prep = report.get("docker", {}).get("prepare")
    if prep:
        build = ", ".join(f"{k} {v:.1f} s" for k, v in prep["images_build_seconds"].items())
        started = f", started by the bench in {prep['engine_seconds']:.1f} s" if prep["engine_started_by_bench"] else ""
        lines.append(
            f"docker preparation (not in up): engine {prep['engine']} (docker {prep['engine_version']}"
            f"{started});"
            f" images {'offline' if prep['offline'] else 'online'} ({prep['offline_reason']}): "
            f"{prep['images_seconds']:.1f} s ({build}; 0 = cached)"
        )
    for name, reason in report["skipped"].items():
        lines.append(f"{name}: skipped: {reason}")
    for name in BACKENDS:
        probe_lines = report.get(name, {}).get("probe_lines")
        if probe_lines:
            lines.append(f"{name} probe (last run): {'; '.join(probe_lines)}")
    return "\n".join(lines)


__all__ = [
    "BACKENDS",
    "MEASURED",
    "REGISTRY",
    "DockerPrep",
    "Progress",
    "Skipped",
    "check_backend",
    "docker_offline",
    "format_report",
    "leftovers",
    "make_lab",
    "one_run",
    "prepare_docker",
    "probe",
    "registry_reachable",
    "run_lab_bench",
]
