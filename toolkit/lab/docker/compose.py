"""A :class:`~toolkit.lab.topology.Topology` as a Docker compose project (issue 5, design.md §5).

:func:`plan` turns a topology into a :class:`Project` (networks and containers as data);
:func:`render` writes it as a compose file (format 2.4: Debian's ``docker-compose`` 1.29 and compose v2
read it). :class:`~toolkit.lab.docker.lab.DockerLab` brings the same :class:`Project` up.

* **one network per segment**, an ordinary bridge with ``enable_ip_masquerade=false`` (the engine must not
  NAT anything: the router containers do). None is ``internal``: Docker's internal networks drop traffic
  to other subnets, which is all a LAN sends through its router (design.md §5). The bridge (in the root
  namespace) takes the highest free address of the subnet as the gateway Docker insists on; no container
  routes through it. The internet carries two prefixes but a Docker bridge network has one subnet:
  the network gets ``203.0.113.0/24`` and a public host (``198.51.100.x``) gets a placeholder address
  from the top of it that ``natkit-entry`` replaces.
* **every container** runs ``natkit-entry`` (docker/natkit-entry.sh) with NET_ADMIN: it renames each
  interface to the topology's name (``eth0``; ``wan``/``lan`` on routers; found by its Docker address,
  since Docker's interface order is not guaranteed), replaces the Docker address by the topology's
  addresses, installs :meth:`Topology.routes` (Docker's default route via the bridge goes away: a LAN
  host's default route is via its router, internet hosts have none) and loads the router's nftables.
* **hosts** get ``/dev/net/tun``: ``natkit node`` makes its WireGuard TUN interface there (NET_ADMIN
  lets it configure it).
* **routers** run the router image with ``net.ipv4.ip_forward=1`` and the SAME nftables ruleset as the
  ``netns`` backend (:mod:`toolkit.lab.netns.nftables` renders it from the router's
  :class:`~toolkit.lab.nat.NatBehavior`; a preset nftables cannot express is refused there, by name).

Names: containers ``PREFIX-ELEMENT``, networks ``PREFIX_SEGMENT`` (compose's ``project_network``), bridges
``nk`` + 6 hex digits of the prefix + the segment's position, every object labelled ``org.natkit.lab=PREFIX``
so tear-down finds exactly this lab's containers and networks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from toolkit.errors import UsageError
from toolkit.lab.addressing import IPv4Address
from toolkit.lab.topology import Host, Router, Topology

LABEL_LAB = "org.natkit.lab"
LABEL_ELEMENT = "org.natkit.element"
LABEL_KIND = "org.natkit.kind"
COMPOSE_VERSION = "2.4"

NftRenderer = Callable[[Topology, Router], str]


@dataclass(frozen=True, slots=True)
class NetworkPlan:
    """One Docker network for one segment."""

    segment: str
    name: str  # the Docker network name (PREFIX_SEGMENT)
    subnet: str
    gateway: str  # the host bridge's address (Docker requires one)
    bridge: str  # the Linux bridge's name in the root namespace


@dataclass(frozen=True, slots=True)
class ContainerPlan:
    """One container for one host or router."""

    element: str
    kind: str  # "host" or "router"
    name: str  # the container name (PREFIX-ELEMENT)
    image: str
    networks: dict[str, str]  # segment -> the address Docker assigns (natkit-entry replaces it)
    environment: dict[str, str]
    sysctls: dict[str, str]
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Project:
    """A lab as Docker objects: what :func:`render` writes and ``DockerLab`` creates."""

    name: str
    networks: tuple[NetworkPlan, ...]
    containers: tuple[ContainerPlan, ...]

    def network(self, segment: str) -> NetworkPlan:
        return next(n for n in self.networks if n.segment == segment)

    def container(self, element: str) -> ContainerPlan:
        for c in self.containers:
            if c.element == element:
                return c
        raise UsageError(f"lab {self.name!r} has no container for {element!r}")


def default_nft_rules(topo: Topology, router: Router) -> str:
    """The router's ruleset, rendered by the netns backend's module (the same rules on both backends)."""
    from toolkit.lab.netns import nftables

    return nftables.ruleset(nftables.rules_for(topo, router))


def default_router_sysctls(router: Router) -> dict[str, str]:
    """Per-namespace sysctls of a router: conntrack's UDP timeouts = the NAT's mapping timeout (as netns)."""
    from toolkit.lab.netns import nftables

    return nftables.conntrack_sysctls(router.nat)


def bridge_name(prefix: str, position: int) -> str:
    digest = hashlib.sha256(prefix.encode()).hexdigest()[:6]
    return f"nk{digest}{position}"


def _docker_addresses(topo: Topology) -> dict[tuple[str, str], IPv4Address]:
    """(element, segment) -> the address Docker assigns; placeholders from the top for off-subnet addresses."""
    assigned: dict[tuple[str, str], IPv4Address] = {}
    for seg in topo.segments:
        subnet = seg.v4[0]
        wanted: list[tuple[str, IPv4Address]] = [(h.name, h.v4) for h in topo.hosts_on(seg.name)]
        wanted += [(r.name, r.wan_v4) for r in topo.routers_on(seg.name)]
        router = topo.router_for(seg.name)
        if router is not None:
            wanted.append((router.name, router.lan_v4))
        used = {addr for _, addr in wanted if addr in subnet}
        spare = (a for a in reversed(list(subnet.hosts())) if a not in used)
        next(spare)  # the highest free address is the bridge's gateway (see _gateway)
        for element, addr in wanted:
            assigned[(element, seg.name)] = addr if addr in subnet else next(spare)
    return assigned


def _gateway(topo: Topology, segment: str, assigned: dict[tuple[str, str], IPv4Address]) -> IPv4Address:
    subnet = topo.segment(segment).v4[0]
    used = {a for (_, seg), a in assigned.items() if seg == segment}
    used |= {a for h in topo.hosts for a in (h.v4, *h.extra_v4)}
    used |= {a for r in topo.routers for a in (r.wan_v4, r.lan_v4)}
    return next(a for a in reversed(list(subnet.hosts())) if a not in used)


def _iface_lines(topo: Topology, element: str, assigned: dict[tuple[str, str], IPv4Address]) -> str:
    lines = []
    for iface in topo.interfaces(element):
        cidrs = [iface.cidr, *(f"{a}/{iface.prefixlen}" for a in iface.extra_v4)]
        if iface.v6 is not None and topo.uses_ipv6:
            cidrs.append(f"{iface.v6}/{iface.v6_prefixlen}")
        lines.append(f"{assigned[(element, iface.segment)]} {iface.name} {' '.join(cidrs)}")
    return "\n".join(lines) + "\n"


def _route_lines(topo: Topology, element: str) -> str:
    return "".join(f"{route}\n" for route in topo.routes(element))


def plan(
    topo: Topology, prefix: str, node_image: str, router_image: str, nft_rules: NftRenderer | None = None
) -> Project:
    """The Docker objects of ``topo`` under the name ``prefix`` (see the module docstring)."""
    render_nft = nft_rules or default_nft_rules
    assigned = _docker_addresses(topo)
    networks = tuple(
        NetworkPlan(
            segment=seg.name,
            name=f"{prefix}_{seg.name}",
            subnet=str(seg.v4[0]),
            gateway=str(_gateway(topo, seg.name, assigned)),
            bridge=bridge_name(prefix, i),
        )
        for i, seg in enumerate(topo.segments)
    )
    v6 = topo.uses_ipv6
    containers: list[ContainerPlan] = []
    elements: list[Router | Host] = [*topo.routers, *topo.hosts]
    for element in elements:
        is_router = isinstance(element, Router)
        segments = [element.wan, element.lan] if isinstance(element, Router) else [element.segment]
        env = {"NATKIT_IFACES": _iface_lines(topo, element.name, assigned)}
        routes = _route_lines(topo, element.name)
        if routes:
            env["NATKIT_ROUTES"] = routes
        sysctls: dict[str, str] = {}
        if v6:
            sysctls["net.ipv6.conf.all.disable_ipv6"] = "0"
        if isinstance(element, Router):
            sysctls["net.ipv4.ip_forward"] = "1"
            sysctls.update(default_router_sysctls(element))
            if v6:
                sysctls["net.ipv6.conf.all.forwarding"] = "1"
            rules = render_nft(topo, element)
            if rules:
                env["NATKIT_NFT"] = rules if rules.endswith("\n") else rules + "\n"
        kind = "router" if is_router else "host"
        containers.append(
            ContainerPlan(
                element=element.name,
                kind=kind,
                name=f"{prefix}-{element.name}",
                image=router_image if is_router else node_image,
                networks={seg: str(assigned[(element.name, seg)]) for seg in segments},
                environment=env,
                sysctls=sysctls,
                labels={LABEL_LAB: prefix, LABEL_ELEMENT: element.name, LABEL_KIND: kind},
            )
        )
    return Project(name=prefix, networks=networks, containers=tuple(containers))


def to_compose(project: Project) -> dict[str, Any]:
    """The compose file of ``project`` as a dict (format 2.4)."""
    services: dict[str, Any] = {}
    for c in project.containers:
        service: dict[str, Any] = {
            "image": c.image,
            "container_name": c.name,
            "hostname": c.element,
            "cap_add": ["NET_ADMIN"],
            "stop_grace_period": "2s",
            "labels": dict(c.labels),
            "networks": {seg: {"ipv4_address": addr} for seg, addr in c.networks.items()},
            "environment": dict(c.environment),
        }
        if c.sysctls:
            service["sysctls"] = dict(c.sysctls)
        if c.kind == "host":  # a natkit node makes its WireGuard interface here (Lab.start_node)
            service["devices"] = ["/dev/net/tun:/dev/net/tun"]
        services[c.element] = service
    networks = {
        n.segment: {
            "driver": "bridge",
            "internal": False,
            "driver_opts": {
                "com.docker.network.bridge.enable_ip_masquerade": "false",
                "com.docker.network.bridge.name": n.bridge,
            },
            "ipam": {"config": [{"subnet": n.subnet, "gateway": n.gateway}]},
            "labels": {LABEL_LAB: project.name},
        }
        for n in project.networks
    }
    return {"version": COMPOSE_VERSION, "services": services, "networks": networks}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(project: Project) -> str:
    """The compose file text (multi-line environment values as literal blocks, keys in plan order)."""
    header = f"# natkit lab {project.name}: rendered by toolkit.lab.docker.compose; run with docker-compose -p {project.name}\n"
    return header + yaml.dump(to_compose(project), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=200)


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.lab.docker.compose LAB.yaml [PREFIX]``: print the compose file (natkit/*:latest images)."""
    import sys
    from pathlib import Path

    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m toolkit.lab.docker.compose LAB.yaml [PREFIX]", file=sys.stderr)
        return 2
    topo = Topology.from_yaml(Path(args[0]))
    prefix = args[1] if len(args) > 1 else topo.name
    sys.stdout.write(render(plan(topo, prefix, "natkit/node:latest", "natkit/router:latest")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "LABEL_ELEMENT",
    "LABEL_KIND",
    "LABEL_LAB",
    "ContainerPlan",
    "NetworkPlan",
    "Project",
    "bridge_name",
    "default_nft_rules",
    "plan",
    "render",
    "to_compose",
]
