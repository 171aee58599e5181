"""`natkit stun-server`: a STUN server for labs (RFC 8489, RFC 5780 behaviour discovery, Tailscale's STUN).

``natkit stun-server [--listen HOST:PORT ...] [--no-tcp] [--software TEXT]`` answers Binding
requests on UDP (and TCP) on every ``--listen`` address (default ``0.0.0.0:3478``; IPv6 as
``[::1]:3478``; port 0 picks a free port, shown in the start line). Exactly two addresses with
different IPs and different ports (``--listen A:P --listen B:Q``) start RFC 5780 behaviour discovery
on A:P, A:Q, B:P and B:Q; the start line says which mode runs. Tailscale's ``tailnode`` requests get
exactly derper's reply; classic RFC 3489 clients (Debian's ``stun``) get MAPPED-ADDRESS.

It runs until SIGTERM or Ctrl-C and then prints what it did (answered, errors, dropped by reason).
A bad ``--listen`` or an address that cannot be bound is one line on stderr and exit status 2.
See :mod:`toolkit.services.stunserver` and :mod:`toolkit.sansio.stunserver`.
"""

from __future__ import annotations

import argparse

from toolkit import __version__

DEFAULT_LISTEN = "0.0.0.0:3478"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stun-server",
        help="run a STUN server (RFC 8489, RFC 5780 with two addresses, Tailscale's tailnode STUN)",
        description=(
            "Answer STUN Binding requests on UDP and TCP. Two --listen addresses with different IPs and "
            "different ports (A:P and B:Q) turn on RFC 5780 NAT behaviour discovery on A:P, A:Q, B:P and B:Q."
        ),
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help=f"an address to answer on, repeatable; [v6]:port for IPv6 (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--no-tcp", action="store_true", help="UDP only (default: TCP on the same addresses too)")
    p.add_argument(
        "--software",
        default=f"natkit {__version__}",
        metavar="TEXT",
        help="the SOFTWARE attribute in replies; '' for none (default: natkit VERSION)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toolkit.services.runner import parse_listen, run_service
    from toolkit.services.stunserver import StunServer

    listen = parse_listen(args.listen, DEFAULT_LISTEN)
    return run_service(StunServer(listen, tcp=not args.no_tcp, software=args.software))
