"""``natkit demo``: the walk-through (for now the packet toolkit; toolkit/packets/tour.py)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="walk through the packet toolkit: craft, seal, capture, dissect")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for natkit-demo.pcap and its keys file (default: a new temporary directory)",
    )
    p.add_argument("--no-dissect", action="store_true", help="skip reading the pcap back with scapy")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toolkit.errors import UsageError
    from toolkit.packets import tour

    out = args.out or Path(tempfile.mkdtemp(prefix="natkit-demo-"))
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory; give a directory")
    tour.run(out, dissect=not args.no_dissect)
    return 0
