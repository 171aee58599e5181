"""`natkit control-server`: natkit's coordination server (node registration, netmap streams, SQLite state).

``natkit control-server --db FILE --authkey KEY [--authkey KEY ...] [--listen HOST:PORT ...]
[--derp-map FILE|URL]`` serves the API of :mod:`toolkit.sansio.control` over HTTP/1.1 on every
``--listen`` address (default ``0.0.0.0:8081``; port 0 picks a free port, shown in the start line).
Nodes register with one of the ``--authkey`` pre-auth keys; everything is kept in the SQLite file
``--db`` (created if missing), so a restarted server knows every node, key and address. With
``--derp-map`` (Tailscale's ``tailcfg.DERPMap`` JSON, see :mod:`toolkit.codec.derpmap`; a file, or an
``http(s)://`` URL as ``natkit netcheck`` takes it) the server hands the map to nodes in every netmap
and at ``GET /derpmap``.

Try it::

    natkit control-server --db /tmp/control.db --authkey lab-key --listen 127.0.0.1:8081
    curl -s localhost:8081/ ; curl -sN -H "Authorization: Bearer TOKEN" 'localhost:8081/machine/map?stream=1'

It runs until SIGTERM or Ctrl-C and then says what it did. A missing ``--db`` or ``--authkey``, a DERP
map that cannot be read or is wrong, a database that is not natkit's, or an address that cannot be
bound is one line on stderr and exit status 2. See :mod:`toolkit.services.controlserver`.
"""

from __future__ import annotations

import argparse

from toolkit.errors import UsageError

DEFAULT_LISTEN = "0.0.0.0:8081"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "control-server",
        help="run the coordination server: node registration with pre-auth keys, netmap streams, SQLite state",
        description=(
            "natkit's own control plane: nodes register with a pre-auth key, get addresses in 100.64.0.0/10 "
            "and fd7a:115c:a1e0::/48, and follow a stream of netmaps (every peer's keys, endpoints, home DERP)."
        ),
    )
    p.add_argument(
        "--listen",
        action="append",
        metavar="HOST:PORT",
        help=f"an address to serve HTTP on, repeatable; [v6]:port for IPv6 (default {DEFAULT_LISTEN})",
    )
    p.add_argument("--db", metavar="FILE", help="the SQLite database (created if missing; required)")
    p.add_argument(
        "--authkey",
        action="append",
        metavar="KEY",
        help="a pre-auth key nodes register with, repeatable (at least one required)",
    )
    p.add_argument("--derp-map", metavar="FILE|URL", help="a DERP map (tailcfg.DERPMap JSON) to hand to nodes")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from toolkit.cli.netcheck import load_derp_map
    from toolkit.services.controlserver import ControlServer
    from toolkit.services.runner import parse_listen, run_service

    if not args.db:
        raise UsageError("control-server needs --db FILE: the SQLite file that keeps nodes across restarts")
    if not args.authkey:
        raise UsageError("control-server needs --authkey KEY: the pre-auth key nodes register with")
    for key in args.authkey:
        if not key or not key.isprintable() or any(c.isspace() for c in key):
            raise UsageError(f"--authkey {key!r}: give a non-empty key without spaces or control characters")
    listen = parse_listen(args.listen, DEFAULT_LISTEN)
    derp_map = load_derp_map(args.derp_map, need_regions=False) if args.derp_map is not None else None
    return run_service(ControlServer(listen, args.db, args.authkey, derp_map))
