"""A lab's small internet, described once as data: segments, hosts, routers (issue 5, design.md §1).

Every backend (``sim``, ``netns``, ``docker``) realises the same :class:`Topology`. The model:

* **segments**: one ``internet``, LANs, and carrier segments (the inside of a carrier-grade NAT).
  Each has link properties the ``sim`` backend honours (one-way ``latency`` in seconds, ``loss``
  0..1, ``bandwidth`` in bit/s); ``netns``/``docker`` ignore them (no netem, design.md §5).
* **hosts**: one interface ``eth0`` on one segment, a v4 address (plus ``extra_v4`` addresses, e.g.
  the second address of an RFC 5780 STUN server), an optional v6 address, the services to run
  (:class:`ServiceSpec`) and whether it is a ``node`` host (runs a natkit node).
* **routers**: a ``wan`` interface on their upstream segment and a ``lan`` interface on the segment
  they serve (one router per LAN/carrier segment). ``nat`` is a :class:`~toolkit.lab.nat.NatBehavior`
  (a NAT router) or None (a plain router that routes its LAN). CGNAT is a topology: a NAT router
  whose LAN is a carrier segment, with home NAT routers on that carrier segment.

Addressing (:mod:`toolkit.lab.addressing` has the full plan): internet ``203.0.113.0/24`` (routers'
WAN sides, from .1) + ``198.51.100.0/24`` (public hosts, from .10), both on-link on every internet
interface; LAN N ``192.168.N.0/24``, carrier N ``100.64.N.0/24`` (router .1, hosts from .10); IPv6
``2001:db8::/64`` (internet), ``2001:db8:N::/64`` (LAN N), ``2001:db8:100:N::/64`` (carrier N), not
NATed: routers route v6 plainly, as Tailscale's vnet does (protocols.md §6.2).

Routing (:meth:`Topology.routes`): a LAN or carrier host has a default route via its segment's
router (``.1``); routers whose WAN is a carrier segment have a default route via the carrier router;
internet-attached hosts and routers have no default route, only both internet prefixes on-link.
Prefixes behind a plain router are routed via its WAN address; a NAT router hides its LAN (v4), so
nothing routes to it. IPv6 prefixes are always routed (no NAT for v6).

Names are DNS labels (lowercase letters, digits, ``-``; at most 15 characters) unique across
segments, hosts and routers. Build a topology with :class:`TopologyBuilder` or load a YAML scenario
(:meth:`Topology.from_yaml`; the builder is in :mod:`toolkit.lab.scenario`, the file form in
:mod:`toolkit.lab.labfile`).
Invalid topologies raise :class:`~toolkit.errors.UsageError` naming the element.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import UsageError
from toolkit.lab.addressing import (
    INTERNET,
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    SegmentKind,
    gateway_v4,
    v4_prefixes,
    v6_for,
    v6_prefix,
)
from toolkit.lab.nat import NatBehavior

if TYPE_CHECKING:
    from toolkit.lab.scenario import TopologyBuilder

SERVICE_KINDS = ("stun-server", "derp-server", "control-server", "node")  # node: Lab.start_node
EXPECTATIONS = ("direct", "local", "relayed")
HOST_IFACE = "eth0"
WAN_IFACE = "wan"
LAN_IFACE = "lan"


@dataclass(frozen=True, slots=True)
class Segment:
    """One layer-2 network: the internet, a LAN or a carrier segment, with link properties (sim)."""

    name: str
    kind: SegmentKind
    index: int = 0
    latency: float = 0.0
    loss: float = 0.0
    bandwidth: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, SegmentKind):
            try:
                object.__setattr__(self, "kind", SegmentKind(self.kind))
            except ValueError:
                raise UsageError(f"segment {self.name!r}: kind {self.kind!r} is not lan, carrier or internet") from None
        if self.kind is not SegmentKind.INTERNET and (not isinstance(self.index, int) or not 1 <= self.index <= 255):
            raise UsageError(f"segment {self.name!r}: index {self.index!r} is not in 1..255")

    @property
    def v4(self) -> tuple[IPv4Network, ...]:
        return v4_prefixes(self.kind, self.index)

    @property
    def v6(self) -> IPv6Network:
        return v6_prefix(self.kind, self.index)

    @property
    def gateway(self) -> IPv4Address | None:
        """The LAN address of the segment's router (``.1``); None for the internet."""
        return gateway_v4(self.kind, self.index)

    @property
    def is_internet(self) -> bool:
        return self.kind is SegmentKind.INTERNET


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A program a host runs: ``stun-server``, ``derp-server``, ``control-server`` or ``node``, with CLI-style args."""

    kind: str
    args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SERVICE_KINDS:
            raise UsageError(f"service {self.kind!r} is not one of {', '.join(SERVICE_KINDS)}")
        if not isinstance(self.args, tuple):
            object.__setattr__(self, "args", tuple(str(a) for a in self.args))


@dataclass(frozen=True, slots=True)
class Host:
    """A machine with one interface (``eth0``) on one segment."""

    name: str
    segment: str
    v4: IPv4Address
    v6: IPv6Address | None = None
    extra_v4: tuple[IPv4Address, ...] = ()
    services: tuple[ServiceSpec, ...] = ()
    node: bool = False

    @property
    def addresses(self) -> tuple[IPv4Address | IPv6Address, ...]:
        return (self.v4, *self.extra_v4, *((self.v6,) if self.v6 else ()))


@dataclass(frozen=True, slots=True)
class Router:
    """A router between its ``wan`` segment and the ``lan`` segment it serves; ``nat`` None = plain router."""

    name: str
    wan: str
    lan: str
    wan_v4: IPv4Address
    lan_v4: IPv4Address
    nat: NatBehavior | None = None

    @property
    def is_nat(self) -> bool:
        return self.nat is not None


@dataclass(frozen=True, slots=True)
class Interface:
    """One interface of a host or router as a backend configures it."""

    element: str
    name: str
    segment: str
    v4: IPv4Address
    prefixlen: int
    extra_v4: tuple[IPv4Address, ...] = ()
    v6: IPv6Address | None = None
    v6_prefixlen: int = 64
    gateway: IPv4Address | None = None
    gateway6: IPv6Address | None = None

    @property
    def cidr(self) -> str:
        return f"{self.v4}/{self.prefixlen}"


@dataclass(frozen=True, slots=True)
class Route:
    """A route a backend installs: ``prefix`` (``0.0.0.0/0`` = default) via ``via`` (None = on-link) on ``interface``."""

    prefix: IPv4Network | IPv6Network
    via: IPv4Address | IPv6Address | None
    interface: str

    def __str__(self) -> str:
        via = f" via {self.via}" if self.via is not None else ""
        return f"{self.prefix}{via} dev {self.interface}"


@dataclass(frozen=True, slots=True)
class Topology:
    """A validated lab network. Construct it with :class:`TopologyBuilder` or :meth:`from_yaml`."""

    name: str
    segments: tuple[Segment, ...]
    hosts: tuple[Host, ...]
    routers: tuple[Router, ...]
    description: str = ""
    expect: str | None = None
    _by_name: dict[str, Segment | Host | Router] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        from toolkit.lab.validate import validate

        validate(self)
        by_name: dict[str, Segment | Host | Router] = {}
        elements: tuple[Segment | Host | Router, ...] = (*self.segments, *self.hosts, *self.routers)
        for element in elements:
            by_name[element.name] = element
        object.__setattr__(self, "_by_name", by_name)

    # --- lookups ---------------------------------------------------------------------------------

    @property
    def internet(self) -> Segment:
        return self.segment(INTERNET)

    def segment(self, name: str) -> Segment:
        element = self._by_name.get(name)
        if not isinstance(element, Segment):
            raise UsageError(f"lab {self.name!r} has no segment {name!r}; segments: {self._names(self.segments)}")
        return element

    def host(self, name: str) -> Host:
        element = self._by_name.get(name)
        if not isinstance(element, Host):
            raise UsageError(f"lab {self.name!r} has no host {name!r}; hosts: {self._names(self.hosts)}")
        return element

    def router(self, name: str) -> Router:
        element = self._by_name.get(name)
        if not isinstance(element, Router):
            raise UsageError(f"lab {self.name!r} has no router {name!r}; routers: {self._names(self.routers)}")
        return element

    def element(self, name: str) -> Host | Router:
        """A host or a router by name (what a capture or a command runs on)."""
        element = self._by_name.get(name)
        if not isinstance(element, Host | Router):
            names = self._names((*self.hosts, *self.routers))
            raise UsageError(f"lab {self.name!r} has no host or router {name!r}; known: {names}")
        return element

    @staticmethod
    def _names(elements: tuple[Segment | Host | Router, ...]) -> str:
        return ", ".join(e.name for e in elements) or "(none)"

    def public_hosts(self) -> tuple[Host, ...]:
        """Hosts on the internet segment (servers)."""
        return tuple(h for h in self.hosts if h.segment == INTERNET)

    def lan_hosts(self) -> tuple[Host, ...]:
        """Hosts on a LAN or carrier segment (behind at least one router)."""
        return tuple(h for h in self.hosts if h.segment != INTERNET)

    def nodes(self) -> tuple[Host, ...]:
        """Hosts marked ``node`` (where natkit nodes run)."""
        return tuple(h for h in self.hosts if h.node)

    def hosts_on(self, segment: str) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if h.segment == segment)

    def router_for(self, segment: str) -> Router | None:
        """The router whose LAN is ``segment`` (None for the internet)."""
        return next((r for r in self.routers if r.lan == segment), None)

    def routers_on(self, segment: str) -> tuple[Router, ...]:
        """Routers whose WAN side is on ``segment``."""
        return tuple(r for r in self.routers if r.wan == segment)

    def path_to_internet(self, name: str) -> tuple[Router, ...]:
        """The routers a packet from host or router ``name`` crosses to reach the internet, nearest first."""
        element = self.element(name)
        seg = element.segment if isinstance(element, Host) else element.wan
        path: list[Router] = []
        while seg != INTERNET:
            router = self.router_for(seg)
            assert router is not None  # validate() guarantees every segment has a router
            path.append(router)
            seg = router.wan
        return tuple(path)

    @property
    def uses_ipv6(self) -> bool:
        """True when some host has a v6 address (backends may skip IPv6 otherwise)."""
        return any(h.v6 is not None for h in self.hosts)

    # --- what backends configure -----------------------------------------------------------------

    def interfaces(self, name: str) -> tuple[Interface, ...]:
        """The interfaces of host ``name`` (``eth0``) or router ``name`` (``wan``, ``lan``).

        ``v6`` is None on an interface without IPv6: a host without a v6 address, and every router
        when no host of the lab uses IPv6.
        """
        element = self.element(name)
        if isinstance(element, Host):
            seg = self.segment(element.segment)
            gw = seg.gateway
            gw6 = v6_for(seg.kind, gw) if gw is not None and element.v6 is not None else None
            return (Interface(name, HOST_IFACE, seg.name, element.v4, 24, element.extra_v4, element.v6, 64, gw, gw6),)
        wan, lan = self.segment(element.wan), self.segment(element.lan)
        gw, six = wan.gateway, self.uses_ipv6  # routers get v6 on both sides when any host uses v6
        return (
            Interface(
                name, WAN_IFACE, wan.name, element.wan_v4, 24, (),
                v6_for(wan.kind, element.wan_v4) if six else None, 64, gw,
                v6_for(wan.kind, gw) if gw is not None and six else None,
            ),
            Interface(
                name, LAN_IFACE, lan.name, element.lan_v4, 24, (), v6_for(lan.kind, element.lan_v4) if six else None
            ),
        )  # fmt: skip

    def interface(self, name: str, iface: str) -> Interface:
        """One interface by element and interface name, or a :class:`UsageError` listing them."""
        found = self.interfaces(name)
        for candidate in found:
            if candidate.name == iface:
                return candidate
        raise UsageError(f"{name!r} has no interface {iface!r}; interfaces: {', '.join(i.name for i in found)}")

    def _visible(self, router: Router, v6: bool) -> list[IPv4Network | IPv6Network]:
        """Prefixes reachable through ``router`` from its WAN side: none for v4 behind a NAT."""
        if router.is_nat and not v6:
            return []
        lan = self.segment(router.lan)
        found: list[IPv4Network | IPv6Network] = [lan.v6] if v6 else list(lan.v4)
        for child in self.routers_on(router.lan):
            found.extend(self._visible(child, v6))
        return found

    def routes(self, name: str) -> tuple[Route, ...]:
        """The routes host or router ``name`` needs beyond its connected prefixes (see the module docstring)."""
        routes: list[Route] = []
        for iface in self.interfaces(name):
            v6 = iface.v6 is not None
            seg = self.segment(iface.segment)
            if seg.is_internet:
                routes += [Route(p, None, iface.name) for p in seg.v4 if iface.v4 not in p]
            for child in self.routers_on(seg.name):
                if child.name == name:
                    continue
                routes += [Route(p, child.wan_v4, iface.name) for p in self._visible(child, False)]
                if v6:
                    via6 = v6_for(seg.kind, child.wan_v4)
                    routes += [Route(p, via6, iface.name) for p in self._visible(child, True)]
            if iface.gateway is not None:
                routes.append(Route(IPv4Network("0.0.0.0/0"), iface.gateway, iface.name))
                if iface.gateway6 is not None:
                    routes.append(Route(IPv6Network("::/0"), iface.gateway6, iface.name))
        return tuple(routes)

    # --- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        from toolkit.lab.labfile import topology_to_dict

        return topology_to_dict(self)

    @classmethod
    def from_dict(cls, obj: Any) -> Topology:
        from toolkit.lab.labfile import topology_from_dict

        return topology_from_dict(obj)

    def to_yaml(self) -> str:
        from toolkit.lab.labfile import dump_yaml

        return dump_yaml(self.to_dict())

    @classmethod
    def from_yaml(cls, source: str | Path) -> Topology:
        """From YAML text, or from a file: a :class:`Path`, or a one-line str ending in .yaml/.yml."""
        from toolkit.lab.labfile import load_yaml

        return cls.from_dict(load_yaml(source))


def __getattr__(name: str) -> type[TopologyBuilder]:
    # TopologyBuilder lives in toolkit.lab.scenario; re-exported here lazily (no import cycle).
    if name == "TopologyBuilder":
        from toolkit.lab.scenario import TopologyBuilder

        return TopologyBuilder
    raise AttributeError(name)


__all__ = [
    "EXPECTATIONS",
    "SERVICE_KINDS",
    "Host",
    "Interface",
    "Route",
    "Router",
    "Segment",
    "SegmentKind",
    "ServiceSpec",
    "Topology",
    "TopologyBuilder",
]
