"""``natkit lab run``: a scenario end to end with two nodes (the CLI side of :mod:`toolkit.lab.noderun`)."""

from __future__ import annotations

import argparse
import sys

from toolkit.errors import UsageError


def run_run(args: argparse.Namespace) -> int:
    from toolkit.lab.noderun import run
    from toolkit.lab.registry import backend_class, scenario_path

    if args.timing_scale <= 0:
        raise UsageError(f"--timing-scale must be above 0, got {args.timing_scale}")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout must be above 0 seconds, got {args.timeout}")
    path = scenario_path(args.scenario)
    backend_class(args.backend)  # UsageError if the backend cannot run here
    if not args.json:
        print(f"natkit lab run: {path.stem} on {args.backend} ...", file=sys.stderr, flush=True)
    report = run(
        path, args.backend, name=args.name, seed=args.seed, timing_scale=args.timing_scale, timeout=args.timeout
    )
    print(report.dumps() if args.json else report.format())
    return 0 if report.ok else 1
