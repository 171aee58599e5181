"""The ``natkit`` command line.

Each subcommand lives in its own module under ``toolkit.cli`` and exposes
``register(subparsers)``, which adds its parser(s) and sets ``func`` to a
``run(args) -> int`` function. Modules are imported only when their command runs is not
needed: registering is cheap because heavy imports (scapy) happen inside ``run``.

Errors: a :class:`toolkit.errors.UsageError` (or argparse's own complaint) is printed as one
line, ``natkit: error: ...``, and the exit status is 2. Ctrl-C exits 130 without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from toolkit import __version__
from toolkit.errors import NatkitError, UsageError

# Subcommand modules, in the order ``natkit --help`` lists them.
_MODULES = (
    "demo",
    "packets",
    "bench",
    "wg",
    "stunserver",
    "stun",
    "derp",
    "control",
    "node",
    "netcheck",
    "lab",
    "exercise",
)


class _Parser(argparse.ArgumentParser):
    """argparse with the house error format: one line, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"natkit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="natkit",
        description="Teach NAT traversal the way Tailscale does it: STUN, DERP, disco and WireGuard, with real packets.",
    )
    parser.add_argument("--version", action="version", version=f"natkit {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)
    for name in _MODULES:
        module = importlib.import_module(f"toolkit.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except UsageError as exc:
        print(f"natkit: error: {exc}", file=sys.stderr)
        return 2
    except NatkitError as exc:
        print(f"natkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("natkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
