"""How a lab host's services are started, the same on every backend, and the lab's DERP map.

A :class:`~toolkit.lab.topology.ServiceSpec` with ``args`` runs as ``natkit KIND ARGS`` (the CLI
arguments after the subcommand). Empty ``args`` take these defaults (:func:`service_args`), bound to
the host's own addresses so the ``sim`` backend (no wildcard sockets) and the kernel backends agree:

* ``stun-server``: ``--listen V4:3478``; a host with an extra address also listens on
  ``EXTRA:3479``, which turns on RFC 5780 behaviour discovery (two IPs, two ports; RFC 5780 §4.1).
* ``derp-server``: ``--listen V4:3340`` (natkit's default DERP port; plain HTTP in labs).
* ``control-server``: ``--listen V4:8081 --authkey natkit-lab``; the backend adds ``--db FILE``
  (a file in the lab's state directory, or ``:memory:`` in ``sim``) and ``--derp-map FILE`` with
  :func:`derp_map`.

:func:`derp_map` describes the lab's relays for nodes and netcheck (protocols.md §5): region 1
(``lab``) lists every ``derp-server`` host (plain HTTP, no STUN on it) and every ``stun-server``
host as a STUN-only node (tailcfg ``STUNOnly``). A node's ``IPv6`` is the host's v6 address when one
of the host's services of that kind listens there on the node's port (nodes STUN every address the
map gives, v4 and v6): a dual-stack STUN server is the defaults' RFC 5780 pair on v4 plus a second
``stun-server`` with ``args: [--listen, "[V6]:3478"]`` (``labs/dual-stack.yaml``), so the v4 pair
keeps its RFC 5780 mode.
"""

from __future__ import annotations

import itertools
from typing import Any

from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.errors import UsageError
from toolkit.lab.topology import Host, ServiceSpec, Topology
from toolkit.types import Endpoint

STUN_PORT = 3478
STUN_ALT_PORT = 3479  # RFC 5780's second port, on the second address
DERP_PORT = 3340
CONTROL_PORT = 8081
LAB_AUTHKEY = "natkit-lab"
LAB_REGION_ID = 1
SUBCOMMAND = {k: k for k in ("stun-server", "derp-server", "control-server", "node")}


def service_args(host: Host, spec: ServiceSpec) -> tuple[str, ...]:
    """The CLI arguments of ``spec`` on ``host`` (its own ``args``, or the defaults above)."""
    if spec.args:
        return spec.args
    if spec.kind == "stun-server":
        args = ["--listen", f"{host.v4}:{STUN_PORT}"]
        if host.extra_v4:
            args += ["--listen", f"{host.extra_v4[0]}:{STUN_ALT_PORT}"]
        return tuple(args)
    if spec.kind == "derp-server":
        return ("--listen", f"{host.v4}:{DERP_PORT}")
    if spec.kind == "control-server":
        return ("--listen", f"{host.v4}:{CONTROL_PORT}", "--authkey", LAB_AUTHKEY)
    if spec.kind == "node":
        raise UsageError(f"host {host.name!r}: start a node with Lab.start_node (it needs the lab's control server)")
    raise UsageError(f"host {host.name!r}: unknown service {spec.kind!r}")


def service_argv(host: Host, spec: ServiceSpec) -> list[str]:
    """``natkit`` argv without the program name: ``["stun-server", "--listen", ...]``."""
    return [SUBCOMMAND[spec.kind], *service_args(host, spec)]


def listen_port(host: Host, spec: ServiceSpec) -> int:
    """The port of the first ``--listen HOST:PORT`` of the service on ``host``."""
    args = service_args(host, spec)
    for flag, value in itertools.pairwise(args):
        if flag == "--listen":
            return int(value.rsplit(":", 1)[1])
    return {"stun-server": STUN_PORT, "derp-server": DERP_PORT, "control-server": CONTROL_PORT}[spec.kind]


def listen_endpoints(host: Host, spec: ServiceSpec) -> tuple[Endpoint, ...]:
    """Every ``--listen HOST:PORT`` of the service on ``host`` (defaults included); bad values skipped."""
    out = []
    for flag, value in itertools.pairwise(service_args(host, spec)):
        if flag == "--listen":
            try:
                out.append(Endpoint.parse(value))
            except (ValueError, UsageError):
                continue
    return tuple(out)


def _v6_listening(host: Host, kind: str, port: int) -> str:
    """The host's v6 address if one of its ``kind`` services listens on ``[v6]:port``, else ``""``."""
    if host.v6 is None:
        return ""
    wanted = Endpoint(host.v6, port)
    specs = (s for s in host.services if s.kind == kind)
    return str(host.v6) if any(wanted in listen_endpoints(host, s) for s in specs) else ""


def hosts_running(topo: Topology, kind: str) -> tuple[Host, ...]:
    """The hosts whose services include ``kind``."""
    return tuple(h for h in topo.hosts if any(s.kind == kind for s in h.services))


def control_url(topo: Topology) -> str | None:
    """``http://V4:PORT`` of the lab's first control server, or None."""
    for host in hosts_running(topo, "control-server"):
        spec = next(s for s in host.services if s.kind == "control-server")
        return f"http://{host.v4}:{listen_port(host, spec)}"
    return None


def derp_map(topo: Topology) -> DERPMap:
    """The lab's DERP map: region 1 with its DERP relays and its STUN servers (STUN-only nodes)."""
    nodes: list[DERPNode] = []
    for kind in ("derp-server", "stun-server"):  # relays first, then STUN-only nodes (tailcfg STUNOnly)
        for host in hosts_running(topo, kind):
            port = listen_port(host, next(s for s in host.services if s.kind == kind))
            role: dict[str, Any] = (
                {"stun_port": -1, "derp_port": port, "scheme": "http"}
                if kind == "derp-server"
                else {"stun_port": port, "stun_only": True}
            )
            nodes.append(
                DERPNode(
                    name=f"1{chr(ord('a') + len(nodes))}",
                    region_id=LAB_REGION_ID,
                    host_name=host.name,
                    ipv4=str(host.v4),
                    ipv6=_v6_listening(host, kind, port),
                    **role,
                )
            )
    if not nodes:
        return DERPMap()
    region = DERPRegion(LAB_REGION_ID, "lab", f"natkit lab {topo.name}", tuple(nodes))
    return DERPMap(regions={LAB_REGION_ID: region})


__all__ = [
    "CONTROL_PORT",
    "DERP_PORT",
    "LAB_AUTHKEY",
    "STUN_ALT_PORT",
    "STUN_PORT",
    "control_url",
    "derp_map",
    "hosts_running",
    "listen_endpoints",
    "listen_port",
    "service_argv",
    "service_args",
]
