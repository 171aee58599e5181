"""``natkit node``, ``natkit status``, ``natkit ping``: run a node, and ask it what it does, like Tailscale's CLI.

``natkit node --control URL --authkey KEY [--name NAME] ...`` runs the node in this process
(:mod:`toolkit.node.node`) until SIGTERM or Ctrl-C, with the ``natkit node: listening on ...`` and
``natkit node: stopped ...`` lines of every natkit service; each change of a peer's flowchart state
is logged as ``natkit node: bob: DirectActive (direct)``. ``--keys-out FILE`` appends the node's secrets
(its disco key, each WireGuard session's keys) as JSON lines, mode 0600, for a lab's packet inspector
(:mod:`toolkit.node.nodekeys`; like a browser's SSLKEYLOGFILE).

``natkit status`` and ``natkit ping PEER`` talk to a running node over its local API socket
(:mod:`toolkit.node.nodeapi`): ``--api PATH``, else ``--name NAME`` (``/run/natkit/node-NAME.sock``),
else the only node running on this machine. ``natkit ping`` prints what ``tailscale ping`` prints::

    pong from bob (100.64.0.2) via DERP(r1) in 14ms
    pong from bob (100.64.0.2) via 203.0.113.7:41641 in 1ms

and stops at the first direct pong (``--no-until-direct`` sends all ``--count`` pings). Like
``tailscale ping`` it exits 1 when no pong came back, or, with ``--until-direct``, when none came
over a direct path. Bad input (no node running, an unknown peer) is one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path
from typing import Any

from toolkit.errors import NatkitError, UsageError

DEFAULT_PORT = 41641


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser(
        "node",
        help="run a natkit node: STUN, disco, DERP and WireGuard on one socket, walking the upgrade flowchart",
        description="Run a node until SIGTERM/Ctrl-C: it registers with the control server, follows the peer "
        "map, relays over DERP from the first packet and upgrades each peer to a direct path.",
    )
    node.add_argument("--name", metavar="NAME", help="the node's name (default: this host's name)")
    node.add_argument("--control", metavar="URL", required=True, help="the control server, http://HOST:PORT")
    node.add_argument(
        "--authkey", metavar="KEY", help="the pre-auth key of the control server (default: $NATKIT_AUTHKEY)"
    )
    node.add_argument(
        "--port", type=int, default=DEFAULT_PORT, metavar="N", help="UDP port of the node's socket (0: any)"
    )
    node.add_argument("--tun", default="natkit0", metavar="IF", help="TUN interface name (default: natkit0)")
    node.add_argument("--no-tun", action="store_true", help="no TUN device (userspace only; no root needed)")
    node.add_argument("--state-dir", type=Path, metavar="DIR", help="keys and endpoint cache (/var/lib/natkit/NAME)")
    node.add_argument("--trace", metavar="FILE|unix:PATH", help="write every trace record as a JSON line there")
    node.add_argument("--api", type=Path, metavar="PATH", help="local API socket (/run/natkit/node-NAME.sock)")
    node.add_argument(
        "--keys-out",
        type=Path,
        metavar="FILE",
        help="append the node's secrets there as JSON lines (disco key, each WireGuard session's keys; mode 0600) "
        "for the lab's packet inspector, like SSLKEYLOGFILE: whoever reads FILE decrypts the node's traffic",
    )
    node.add_argument(
        "--timing-scale", type=float, default=1.0, metavar="F", help="multiply every timer by F (labs: >1 slows down)"
    )
    node.add_argument("--home-region", type=int, metavar="N", help="home DERP region (default: the first with a relay)")
    node.set_defaults(func=run_node)

    status = sub.add_parser("status", help="a running node's peers: state, path, endpoint, latency")
    _target_args(status)
    status.add_argument("--json", action="store_true", help="the status as one JSON object")
    status.set_defaults(func=run_status)

    ping = sub.add_parser("ping", help="disco-ping a peer through a running node, like `tailscale ping`")
    ping.add_argument("peer", metavar="PEER", help="the peer's name, tunnel IP or node key")
    ping.add_argument("-c", "--count", type=int, default=10, metavar="N", help="pings to send at most (default 10)")
    ping.add_argument(
        "--until-direct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop at the first pong over a direct path (default: on)",
    )
    ping.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for each pong")
    _target_args(ping)
    ping.set_defaults(func=run_ping)


def _target_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", type=Path, metavar="PATH", help="the node's API socket")
    parser.add_argument("--name", metavar="NAME", help="the node started with `natkit node --name NAME`")


# --- natkit node -----------------------------------------------------------------------------------


def run_node(args: argparse.Namespace) -> int:
    from toolkit.node.nodeapi import default_api_path
    from toolkit.node.nodestate import default_state_dir
    from toolkit.timing import DEFAULT

    name = args.name or socket.gethostname().split(".")[0]
    if not name or len(name) > 63 or any(c.isspace() or c == "/" for c in name):
        raise UsageError(f"--name {name!r}: give 1 to 63 characters without spaces or '/'")
    authkey = args.authkey or os.environ.get("NATKIT_AUTHKEY", "")
    if not authkey:
        raise UsageError("give the control server's pre-auth key: --authkey KEY (or set NATKIT_AUTHKEY)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: give a UDP port 0..65535")
    if not args.timing_scale > 0:
        raise UsageError(f"--timing-scale {args.timing_scale}: give a factor > 0 (2 runs every timer half as fast)")
    if not args.no_tun and os.geteuid() != 0:
        raise UsageError("a TUN device needs root: run with sudo, or give --no-tun (userspace only)")
    if args.keys_out is not None and not args.keys_out.parent.is_dir():
        raise UsageError(f"--keys-out {args.keys_out}: cannot write there: no directory {args.keys_out.parent}")
    if args.keys_out is not None and args.keys_out.is_dir():
        raise UsageError(f"--keys-out {args.keys_out}: cannot write there: it is a directory, give a file")
    if not args.control.startswith("http://"):
        raise UsageError(f"--control {args.control!r}: give http://HOST:PORT (natkit's control server speaks HTTP)")
    import asyncio

    from toolkit.node.node import NodeDriver, NodeOptions
    from toolkit.services.runner import serve_until_signalled

    options = NodeOptions(
        name=name,
        control_url=args.control,
        authkey=authkey,
        state_dir=args.state_dir or default_state_dir(name),
        api=args.api or default_api_path(name),
        port=args.port,
        tun=None if args.no_tun else args.tun,
        trace=args.trace,
        timing=DEFAULT.scaled(args.timing_scale) if args.timing_scale != 1.0 else DEFAULT,
        home_region=args.home_region,
        keys_out=args.keys_out,
    )
    asyncio.run(serve_until_signalled(NodeDriver(options)))
    return 0


# --- talking to a running node -----------------------------------------------------------------------


def api_path(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The API socket ``--api`` / ``--name`` names, else the only one in /run/natkit; UsageError otherwise."""
    from toolkit.node.nodeapi import API_DIR, default_api_path

    if args.api is not None:
        return args.api, args.name
    if args.name:
        return default_api_path(args.name), args.name
    running = sorted(API_DIR.glob("node-*.sock")) if API_DIR.is_dir() else []
    if len(running) == 1:
        return running[0], running[0].stem.removeprefix("node-")
    if not running:
        raise UsageError("no node runs here: start one with `natkit node --name NAME ...`, or give --api PATH")
    names = ", ".join(p.stem.removeprefix("node-") for p in running)
    raise UsageError(f"several nodes run here ({names}): pick one with --name NAME")


def _ask(args: argparse.Namespace, obj: dict[str, Any], timeout: float = 30.0) -> list[dict[str, Any]]:
    from toolkit.node.nodeapi import request

    path, name = api_path(args)
    answers = []
    for answer in request(path, obj, timeout=timeout, name=name):
        if "error" in answer:
            message = str(answer["error"])
            raise UsageError(message) if answer.get("usage", True) else NatkitError(message)
        answers.append(answer)
    return answers


def run_status(args: argparse.Namespace) -> int:
    if args.json:
        (status,) = _ask(args, {"op": "status"})
        print(json.dumps(status, indent=2))
    else:
        (answer,) = _ask(args, {"op": "status", "format": "text"})
        print(answer.get("text", ""))
    return 0


def ping_line(pong: dict[str, Any]) -> str:
    """``pong from bob (100.64.0.2) via DERP(r1) in 14ms``, as ``tailscale ping`` prints it."""
    from toolkit.sansio.nodestatus import PingResult

    return PingResult(
        str(pong["peer_name"]),
        str(pong["peer_ip"]),
        str(pong["via"]),
        float(pong["latency_s"]),
        bool(pong["is_direct"]),
    ).format()


def run_ping(args: argparse.Namespace) -> int:
    from toolkit.node.nodeapi import request

    if not 1 <= args.count <= 1000:
        raise UsageError(f"--count {args.count}: give 1..1000 pings")
    if not 0 < args.timeout <= 600:
        raise UsageError(f"--timeout {args.timeout}: give 0 < S <= 600 seconds")
    path, name = api_path(args)
    req = {"op": "ping", "peer": args.peer, "count": args.count, "until_direct": args.until_direct}
    req["timeout"] = args.timeout
    done: dict[str, Any] = {}
    wait = args.count * (args.timeout + 1.0) + 10.0
    for answer in request(path, req, timeout=wait, name=name):
        if "error" in answer:
            message = str(answer["error"])
            raise UsageError(message) if answer.get("usage", True) else NatkitError(message)
        if "pong" in answer:
            print(ping_line(answer["pong"]), flush=True)
        elif answer.get("timeout"):
            print(f'ping "{answer.get("ip") or answer.get("peer")}" timed out', flush=True)
        elif answer.get("done"):
            done = answer
    if not done.get("pongs"):
        raise NatkitError("no reply")
    if args.until_direct and not done.get("direct"):
        raise NatkitError("direct connection not established")
    return 0
