"""`natkit lab list|up|run|down|status`: lab networks from the shell (issues 5 and 6).

``natkit lab list`` prints the scenarios in ``labs/`` (name, what alice and bob should end up with,
one line of description), the NAT presets and the backends.

``natkit lab up SCENARIO [--backend sim|netns|docker] [--name NAME] [--seed N]`` starts a scenario
(a name from ``labs/`` or a ``.yaml`` file). The ``netns`` and ``docker`` labs outlive the command:
it records the lab in ``/run/natkit/labs/NAME/lab.json`` (``$NATKIT_LAB_STATE``), brings the lab
up, prints its status and exits 0; ``natkit lab down NAME`` and ``natkit lab status NAME`` work from
any shell. A ``sim`` lab lives inside this process: the command prints the status, then keeps the
lab running in the foreground (virtual time follows the wall clock) until Ctrl-C or SIGTERM, or for
``--duration`` seconds, and takes it down on the way out. NAME defaults to the scenario name.

``--backend docker`` uses a Docker engine that answers, else starts Debian's ``dockerd`` (recorded in the
lab's state; ``natkit lab down`` stops it again once no natkit lab container is left), and builds the
images offline (debootstrap base) when ``$NATKIT_DOCKER_OFFLINE=1`` or no registry answers, else from
``python:3.11-slim`` (:func:`toolkit.lab.benchlab.docker_offline`).

``natkit lab run SCENARIO [--backend B] [--json]`` brings the scenario up, starts a node on each of its
two node hosts, sends traffic through the tunnel, waits until the first node settles (DirectActive or
StayOnDERP), takes the lab down and reports the final path, the time to direct and the flowchart states
walked (:mod:`toolkit.cli.labrun`, :mod:`toolkit.lab.noderun`). Exit 0 when the outcome is the scenario's
``expect`` and the walk follows the flowchart's edges, else 1.

``natkit lab down NAME`` removes a persistent lab (also one whose ``up`` failed half-way).
``natkit lab status [NAME]`` prints one lab's hosts and routers, or every recorded lab.

A backend that is not available, an unknown scenario, a lab name in use: one line, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import TYPE_CHECKING

from toolkit.errors import UsageError

if TYPE_CHECKING:
    from toolkit.lab.backend import Lab
    from toolkit.lab.topology import Topology

BACKEND_CHOICES = ("sim", "netns", "docker")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = sub.add_parser(
        "lab",
        help="lab networks: list scenarios, bring a lab up or down, show its status",
        description="Run a small internet (NAT routers, STUN, DERP, control, nodes) on the sim, netns or docker backend.",
    )
    lab.set_defaults(func=lambda args: _usage(lab))
    cmds = lab.add_subparsers(title="subcommands", metavar="SUBCOMMAND", parser_class=type(lab))

    ls = cmds.add_parser("list", help="the scenarios in labs/, the NAT presets and the backends")
    ls.set_defaults(func=run_list)

    up = cmds.add_parser("up", help="start a scenario (netns/docker: in the background; sim: in the foreground)")
    up.add_argument("scenario", metavar="SCENARIO", help="a scenario name from `natkit lab list` or a .yaml file")
    up.add_argument("--backend", choices=BACKEND_CHOICES, default="sim", help="where the lab runs (default: sim)")
    up.add_argument(
        "--name", metavar="NAME", help="the lab's name, a prefix of every namespace/container (default: scenario)"
    )
    up.add_argument("--seed", type=int, default=0, help="the sim's random seed (default 0)")
    up.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="sim: run this long, then take the lab down (default: until Ctrl-C)",
    )
    up.set_defaults(func=run_up)

    run = cmds.add_parser(
        "run", help="start a scenario with two nodes, send traffic, report the path and the flowchart walked"
    )
    run.add_argument("scenario", metavar="SCENARIO", help="a scenario name from `natkit lab list` or a .yaml file")
    run.add_argument("--backend", choices=BACKEND_CHOICES, default="sim", help="where the lab runs (default: sim)")
    run.add_argument("--json", action="store_true", help="print the report as one JSON object")
    run.add_argument("--name", metavar="NAME", help="the lab's name (default: the scenario's)")
    run.add_argument("--seed", type=int, default=0, help="the sim's random seed (default 0)")
    run.add_argument(
        "--timing-scale", type=float, default=1.0, metavar="F",
        help="multiply every protocol timer by F (below 1: faster; default 1)",
    )  # fmt: skip
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting for the nodes to settle")
    run.set_defaults(func=_run_run)

    down = cmds.add_parser(
        "down",
        help="take a netns/docker lab down and remove everything it made (also a netns lab a notebook left behind)",
    )
    down.add_argument("name", metavar="NAME", help="the lab's name (see `natkit lab status`)")
    down.set_defaults(func=run_down)

    status = cmds.add_parser("status", help="hosts, routers and addresses of one lab or of every lab that is up")
    status.add_argument("name", nargs="?", metavar="NAME", help="one lab (default: every recorded lab)")
    status.set_defaults(func=run_status)


def _run_run(args: argparse.Namespace) -> int:
    from toolkit.cli.labrun import run_run

    return run_run(args)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_list(args: argparse.Namespace) -> int:
    from toolkit.lab.nat import PRESETS
    from toolkit.lab.registry import BACKENDS, labs_dir, list_scenarios
    from toolkit.lab.topology import Topology

    scenarios = list_scenarios()
    print(f"scenarios ({labs_dir()}):")
    width = max((len(s.name) for s in scenarios), default=0)
    for s in scenarios:
        expect = Topology.from_yaml(s.path).expect or "-"
        print(f"  {s.name:<{width}}  {expect:<7}  {s.description}")
    print("\nNAT presets (nat: NAME in a scenario):")
    width = max(len(n) for n in PRESETS)
    for name, behavior in PRESETS.items():
        print(f"  {name:<{width}}  {behavior.description}")
    print(f"\nbackends: {', '.join(BACKENDS)} (natkit lab up SCENARIO --backend NAME)")
    return 0


def run_up(args: argparse.Namespace) -> int:
    from toolkit.lab.registry import (
        backend_class,
        list_states,
        load_topology,
        remove_state,
        save_state,
        scenario_path,
    )

    path = scenario_path(args.scenario)
    topology = load_topology(path)
    cls = backend_class(args.backend)
    lab = cls(topology, name_prefix=args.name, seed=args.seed)
    if not cls.persistent:
        return asyncio.run(_foreground(lab, args.duration))
    if args.duration is not None:
        raise UsageError(f"--duration is for the sim backend; stop a {args.backend} lab with `natkit lab down`")
    if lab.name in list_states():
        raise UsageError(f"a lab named {lab.name!r} is already up; `natkit lab down {lab.name}` or choose --name")
    extra: dict[str, object] = {}
    if args.backend == "docker":
        lab, extra = _docker_lab(cls, topology, args)
    save_state(lab, str(path), extra)  # first, so `natkit lab down` can clean up a crashed up()
    try:
        asyncio.run(lab.up())
    except BaseException:
        asyncio.run(lab.down())
        remove_state(lab.name)
        _stop_docker_engine(extra)
        raise
    print(lab.status().format())
    print(f"natkit lab: {lab.name} is up; `natkit lab down {lab.name}` removes it")
    return 0


async def _foreground(lab: Lab, duration: float | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await lab.up()
        print(lab.status().format(), flush=True)
        print(f"natkit lab: {lab.name} runs in this process ({lab.backend}); Ctrl-C takes it down", flush=True)
        started = loop.time()
        while not stop.is_set():
            step = 1.0 if duration is None else min(1.0, duration - (loop.time() - started))
            if step <= 0:
                break
            await lab.sleep(step)  # virtual time in sim ...
            try:  # ... following the wall clock
                await asyncio.wait_for(stop.wait(), step)
            except TimeoutError:
                pass
    finally:
        await lab.down()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print(f"natkit lab: {lab.name} down", flush=True)
    return 0


def _docker_lab(cls: type[Lab], topology: Topology, args: argparse.Namespace) -> tuple[Lab, dict[str, object]]:
    """A docker lab with its engine found (or dockerd started, recorded so `down` stops it) and images
    online or offline as :func:`toolkit.lab.benchlab.docker_offline` decides (``$NATKIT_DOCKER_OFFLINE``,
    else offline when no registry answers)."""
    from toolkit.errors import NatkitError
    from toolkit.lab.benchlab import docker_offline
    from toolkit.lab.docker import engine as engine_mod

    eng = engine_mod.find_engine()
    extra: dict[str, object] = {}
    if eng is None:
        try:
            eng = engine_mod.start_engine()
        except NatkitError as exc:
            raise UsageError(f"the docker backend needs a Docker engine: {exc}") from None
        extra["docker_engine"] = {"host": eng.host, "pid": eng.pid, "started_by_lab": True}
    offline, why = docker_offline(eng)
    print(f"natkit lab: docker engine {eng.host}; images {'offline' if offline else 'online'} ({why})", flush=True)
    lab = cls(topology, name_prefix=args.name, seed=args.seed, engine=eng, offline=offline)  # type: ignore[call-arg]
    return lab, extra


def _stop_docker_engine(state: dict[str, object]) -> None:
    """Stop the dockerd `natkit lab up` started for this lab, once no natkit lab container is left on it."""
    info = state.get("docker_engine")
    if not isinstance(info, dict) or not info.get("started_by_lab") or not isinstance(info.get("pid"), int):
        return
    from toolkit.lab.docker import engine as engine_mod
    from toolkit.lab.docker.compose import LABEL_LAB

    eng = engine_mod.find_engine()
    if eng is None or eng.host != info.get("host"):
        return
    if eng.docker("ps", "-aq", "--filter", f"label={LABEL_LAB}", check=False).stdout.split():
        return  # other labs still use it
    pidfile = engine_mod.STATE_DIR / "dockerd.pid"
    try:
        same = int(pidfile.read_text().strip()) == info["pid"]
    except (OSError, ValueError):
        same = False
    if same:
        engine_mod.stop_engine(engine_mod.Engine(eng.host, eng.cli, eng.version, started=True, pid=int(info["pid"])))
        print(f"natkit lab: stopped the Docker engine (dockerd pid {info['pid']}) `natkit lab up` started")


def run_down(args: argparse.Namespace) -> int:
    from toolkit.lab.registry import attach, read_state, remove_state

    state = read_state(args.name)
    lab = attach(args.name)
    asyncio.run(lab.down())
    remove_state(args.name)
    print(f"natkit lab: {args.name} down")
    if state.get("backend") == "docker":
        _stop_docker_engine(state)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from toolkit.lab.registry import attach, list_states

    names = [args.name] if args.name else list_states()
    if not names:
        print("natkit lab: no netns or docker lab is up (a sim lab lives in its `natkit lab up` process)")
        return 0
    for name in names:
        print(attach(name).status().format())
    return 0
