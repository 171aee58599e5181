"""``natkit demo``: two nodes walk the seed flowchart (toolkit/lab/demo.py); ``--packets``: the packet tour.

``natkit demo [--backend sim|netns|docker] [--scenario NAME]`` brings up a scenario (default easy-easy on
the embedded sim), starts a node on alice and bob, prints every flowchart transition alice's node takes
for bob with its cause and the packet behind it, shows ``natkit status`` and ``natkit ping`` once direct,
then cuts the direct path to show the fallback to DERP and the upgrade when it comes back.

``natkit demo --packets [--out DIR] [--no-dissect]`` is the packet toolkit walk-through
(toolkit/packets/tour.py): craft one frame of each kind, seal and open disco, capture, dissect.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

BACKENDS = ("sim", "netns", "docker")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo", help="two nodes behind NATs walk the flowchart from DERP to direct, then fall back and return"
    )
    p.add_argument("--backend", choices=BACKENDS, default="sim", help="where the lab runs (default: sim)")
    p.add_argument("--scenario", default="easy-easy", metavar="NAME", help="a scenario of `natkit lab list`")
    p.add_argument("--no-cut", action="store_true", help="do not cut the direct path at the end")
    p.add_argument("--timing-scale", type=float, default=1.0, metavar="F", help="multiply every protocol timer by F")
    p.add_argument("--packets", action="store_true", help="the packet toolkit walk-through instead")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="--packets: directory for natkit-demo.pcap and its keys file (default: a new temporary directory)",
    )
    p.add_argument("--no-dissect", action="store_true", help="--packets: skip reading the pcap back with scapy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toolkit.errors import UsageError

    if args.packets:
        from toolkit.packets import tour

        out = args.out or Path(tempfile.mkdtemp(prefix="natkit-demo-"))
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory; give a directory")
        tour.run(out, dissect=not args.no_dissect)
        return 0
    if args.out is not None or args.no_dissect:
        raise UsageError("--out and --no-dissect belong to the packet walk-through: add --packets")
    if args.timing_scale <= 0:
        raise UsageError(f"--timing-scale must be above 0, got {args.timing_scale}")
    import asyncio

    from toolkit.lab.demo import run_demo
    from toolkit.lab.registry import backend_class, scenario_path

    path = scenario_path(args.scenario)
    backend_class(args.backend)
    summary = asyncio.run(
        run_demo(str(path), args.backend, timing_scale=args.timing_scale, cut=not args.no_cut, say=_say)
    )
    return 0 if summary.get("settled") in ("DirectActive", "StayOnDERP") else 1


def _say(line: str) -> None:
    print(line, flush=True)
