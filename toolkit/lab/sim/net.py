"""The simulated internet: segments, interfaces, machines with routing tables and sockets.

After Tailscale's natlab (protocols.md §6.1), at the IP layer: a :class:`Segment` is a layer-2
network that delivers a packet to the interface owning the next-hop address (no ARP, no Ethernet);
an :class:`Interface` attaches a :class:`Machine` to a segment, owns the egress
:class:`~toolkit.lab.sim.link.Link` (latency, loss, bandwidth) and a
:class:`~toolkit.lab.sim.capture.CapturePoint`; a machine has addresses, a routing table (longest
prefix first, on-link or via a next hop) and bound sockets (:meth:`Machine.bind`).

What a machine does with a packet (:meth:`Machine.receive`, the natlab hooks made concrete):

* addressed to one of its addresses: delivered to the socket bound to ``ip:port`` (or to the
  wildcard address and that port), else dropped (``port-unreachable``; no ICMP is simulated);
* otherwise, when ``forwarding`` (routers): routed out again with the TTL one lower (``ttl-exceeded``
  at zero, ``no-route`` without a route), else dropped (``not-for-me``);
* a NAT router (``nat`` + ``nat_wan``) translates IPv4 on the way: LAN packets leaving the WAN
  interface get their source rewritten (:meth:`~toolkit.lab.sim.nat.NatEngine.outbound`); WAN packets
  to its public address are translated back and forwarded, taken by the router itself, or dropped
  (:meth:`~toolkit.lab.sim.nat.NatEngine.inbound`); LAN packets to the public address hairpin
  (:meth:`~toolkit.lab.sim.nat.NatEngine.hairpin`). The router's own packets are not translated.
  Forwarded IPv6 is routed untranslated but filtered like IPv4
  (:meth:`~toolkit.lab.sim.nat.NatEngine.allow_out6`, :meth:`~toolkit.lab.sim.nat.NatEngine.allow_in6`).

A machine's :attr:`Machine.filters` are its forward chain (an ``nft`` rule that drops forwarded
packets): each is called with every packet the machine is about to route on, and a reason string it
returns drops the packet with that reason. Labs and tests use them to cut a path (the NAT dropping a
flow) while the rest of the traffic goes on.

Every drop is counted in :attr:`Machine.counters` by reason and, with a lab ``tracer``, traced as a
:class:`~toolkit.sansio.trace.TraceRecord` (``dropped``, the reason, the packet bytes).

Protocols: a handler is bound per (protocol, address, port), so TCP has the same seam as UDP: a
virtual stream transport (DERP over TCP, issue 6) binds TCP ports and exchanges
:meth:`~toolkit.lab.sim.packet.Packet.tcp` segments over the same links, NATs and captures.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from toolkit.lab.sim.capture import CapturePoint
from toolkit.lab.sim.clock import Scheduler
from toolkit.lab.sim.link import Link, LinkParams
from toolkit.lab.sim.nat import LOCAL, NatEngine
from toolkit.lab.sim.packet import Packet
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.types import Endpoint, IPAddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Handler = Callable[[Packet], None]
EPHEMERAL = (32768, 60999)  # Linux net.ipv4.ip_local_port_range


class Segment:
    """A layer-2 network; ``params`` are the link properties of every interface attached to it."""

    def __init__(self, name: str, sched: Scheduler, params: LinkParams | None = None) -> None:
        self.name = name
        self.sched = sched
        self.params = params or LinkParams()
        self.interfaces: list[Interface] = []
        self._by_ip: dict[IPAddress, Interface] = {}

    def attach(self, iface: Interface) -> None:
        self.interfaces.append(iface)
        for ip, _ in iface.addresses:
            self._by_ip[ip] = iface

    def neighbor(self, ip: IPAddress) -> Interface | None:
        return self._by_ip.get(ip)


class Interface:
    """A machine's attachment to a segment: addresses (ip, prefix), the egress link, a capture point."""

    def __init__(self, machine: Machine, name: str, segment: Segment, addresses: list[tuple[IPAddress, int]]) -> None:
        self.machine = machine
        self.name = name
        self.segment = segment
        self.addresses = addresses
        self.link = Link(segment.params, segment.sched.rng_for(f"link:{machine.name}/{name}"))
        self.capture = CapturePoint(f"{machine.name}/{name}")

    @property
    def full_name(self) -> str:
        return self.capture.name

    def address(self, version: int) -> IPAddress | None:
        """The first address of that IP version."""
        return next((ip for ip, _ in self.addresses if ip.version == version), None)

    def send(self, pkt: Packet, next_hop: IPAddress) -> None:
        sched = self.segment.sched
        if self.capture._listeners:
            self.capture.emit(sched.now, "out", pkt.raw)
        target = self.segment.neighbor(next_hop)
        if target is None:
            self.machine.drop(pkt, "no-neighbor")
            return
        arrival = self.link.transmit(len(pkt.raw), sched.now)
        if arrival is None:
            self.machine.drop(pkt, f"link-{self.link.last_drop}")
            return
        sched.call_at(arrival, target.receive, pkt)

    def receive(self, pkt: Packet) -> None:
        if self.capture._listeners:
            self.capture.emit(self.segment.sched.now, "in", pkt.raw)
        self.machine.receive(pkt, self)

    def __repr__(self) -> str:
        return f"<Interface {self.full_name} {[str(ip) for ip, _ in self.addresses]}>"


@dataclass(frozen=True, slots=True)
class RouteEntry:
    prefix: Network
    interface: Interface
    via: IPAddress | None


class Machine:
    """A host or router: interfaces, routes, sockets; ``forwarding`` makes it route (see the module doc)."""

    def __init__(self, name: str, sched: Scheduler, *, forwarding: bool = False, tracer: Tracer | None = None) -> None:
        self.name = name
        self.sched = sched
        self.forwarding = forwarding
        self.tracer = tracer
        self.interfaces: dict[str, Interface] = {}
        self.routes: list[RouteEntry] = []
        self.counters: Counter[str] = Counter()
        self.nat: NatEngine | None = None
        self.nat_wan: Interface | None = None
        self._local_ips: set[IPAddress] = set()
        self._sockets: dict[tuple[int, IPAddress | str, int], Handler] = {}  # (proto, ip or "any4"/"any6", port)
        self._route_cache: dict[IPAddress, tuple[Interface, IPAddress] | None] = {}
        self._ephemeral = sched.rng_for(f"ephemeral:{name}")
        self.filters: list[Callable[[Packet], str | None]] = []  # forward chain: a drop reason, or None to pass

    # --- configuration ----------------------------------------------------------------------------

    def add_interface(
        self,
        name: str,
        segment: Segment,
        addresses: list[tuple[IPAddress, int]],
        factory: Callable[[Machine, str, Segment, list[tuple[IPAddress, int]]], Interface] | None = None,
    ) -> Interface:
        """Attach to ``segment`` with ``addresses`` [(ip, prefixlen)]; their prefixes become on-link routes.
        ``factory`` builds an :class:`Interface` subclass (the virtual tunnel interface, :mod:`.tun`)."""
        iface = (factory or Interface)(self, name, segment, [])
        self.interfaces[name] = iface
        segment.attach(iface)
        for ip, plen in addresses:
            self.add_address(name, ip, plen)
        return iface

    def add_address(self, interface: str, ip: IPAddress, prefixlen: int) -> None:
        """Give ``interface`` one more address; its prefix becomes an on-link route (``ip addr add``)."""
        iface = self.interfaces[interface]
        iface.addresses.append((ip, prefixlen))
        iface.segment._by_ip[ip] = iface
        self._local_ips.add(ip)
        self.add_route(ipaddress.ip_network(f"{ip}/{prefixlen}", strict=False), interface)

    def remove_address(self, interface: str, ip: IPAddress) -> None:
        """Take ``ip`` off ``interface`` with its on-link route (``ip addr del``)."""
        iface = self.interfaces[interface]
        kept = [(a, p) for a, p in iface.addresses if a != ip]
        gone = {ipaddress.ip_network(f"{a}/{p}", strict=False) for a, p in iface.addresses if a == ip}
        gone -= {ipaddress.ip_network(f"{a}/{p}", strict=False) for a, p in kept}
        iface.addresses[:] = kept
        if iface.segment._by_ip.get(ip) is iface:
            del iface.segment._by_ip[ip]
        self._local_ips = {a for i in self.interfaces.values() for a, _ in i.addresses}
        self.routes = [r for r in self.routes if not (r.interface is iface and r.via is None and r.prefix in gone)]
        self._route_cache.clear()

    def remove_interface(self, name: str) -> None:
        """Detach ``name``: its addresses, and every route through it, are gone (``ip link del``)."""
        iface = self.interfaces.pop(name)
        for ip, _ in iface.addresses:
            if iface.segment._by_ip.get(ip) is iface:
                del iface.segment._by_ip[ip]
        if iface in iface.segment.interfaces:
            iface.segment.interfaces.remove(iface)
        self._local_ips = {ip for i in self.interfaces.values() for ip, _ in i.addresses}
        self.routes = [r for r in self.routes if r.interface is not iface]
        self._route_cache.clear()

    def add_route(self, prefix: Network | str, interface: str, via: IPAddress | str | None = None) -> None:
        net = ipaddress.ip_network(prefix) if isinstance(prefix, str) else prefix
        gw = ipaddress.ip_address(via) if isinstance(via, str) else via
        self.routes.append(RouteEntry(net, self.interfaces[interface], gw))
        self.routes.sort(key=lambda r: -r.prefix.prefixlen)  # stable: first added wins a tie
        self._route_cache.clear()

    def set_nat(self, engine: NatEngine, wan: str) -> None:
        """Make this machine a NAT router translating on interface ``wan``."""
        self.nat, self.nat_wan = engine, self.interfaces[wan]
        self.forwarding = True

    @property
    def addresses(self) -> list[IPAddress]:
        return [ip for iface in self.interfaces.values() for ip, _ in iface.addresses]

    def route(self, dst: IPAddress) -> tuple[Interface, IPAddress] | None:
        """The interface and next hop for ``dst`` (longest prefix match), None without a route."""
        try:
            return self._route_cache[dst]
        except KeyError:
            pass
        found = None
        for r in self.routes:
            if r.prefix.version == dst.version and dst in r.prefix:
                found = (r.interface, r.via if r.via is not None else dst)
                break
        self._route_cache[dst] = found
        return found

    def source_for(self, dst: IPAddress) -> IPAddress | None:
        """The source address the machine picks to reach ``dst`` (the outgoing interface's address)."""
        if dst in self._local_ips:
            return dst
        hop = self.route(dst)
        return None if hop is None else hop[0].address(dst.version)

    # --- sockets ------------------------------------------------------------------------------------

    def bind(self, proto: int, local: Endpoint, handler: Handler) -> Endpoint:
        """Bind ``handler`` to ``local`` (port 0: a random free ephemeral port). ``0.0.0.0`` receives
        on every v4 address, ``::`` on every address of both families (Linux's dual-stack default).
        Raises OSError like a kernel when the address is taken or not ours."""
        ip: IPAddress | None = None if local.ip.is_unspecified else local.ip
        if ip is not None and ip not in self._local_ips:
            raise OSError(99, f"{self.name}: cannot bind {local}: address not available")
        port = local.port
        if port == 0:
            port = self._pick_ephemeral(proto, ip)
        elif self.port_in_use(proto, ip, port):
            raise OSError(98, f"{self.name}: {local} is already in use")
        self._sockets[(proto, _addr_key(local), port)] = handler
        return Endpoint(local.ip, port)

    def unbind(self, proto: int, local: Endpoint) -> None:
        self._sockets.pop((proto, _addr_key(local), local.port), None)

    def port_in_use(self, proto: int, ip: IPAddress | None, port: int) -> bool:
        """True if a socket holds ``port`` on ``ip`` (None: on any address) or on a wildcard address."""
        socks = self._sockets
        if (proto, "any4", port) in socks or (proto, "any6", port) in socks:
            return True
        if ip is None:
            return any(k[0] == proto and k[2] == port for k in socks)
        return (proto, ip, port) in socks

    def _pick_ephemeral(self, proto: int, ip: IPAddress | None) -> int:
        lo, hi = EPHEMERAL
        for _ in range(hi - lo + 1):
            port = self._ephemeral.randint(lo, hi)
            if not self.port_in_use(proto, ip, port):
                return port
        raise OSError(98, f"{self.name}: no free ephemeral port")

    # --- packets ------------------------------------------------------------------------------------

    def send(self, pkt: Packet) -> None:
        """Send a locally generated packet (its source is one of ours)."""
        if pkt.dst.ip in self._local_ips:
            self.sched.call_at(self.sched.now, self._deliver_local, pkt)  # loopback
            return
        hop = self.route(pkt.dst.ip)
        if hop is None:
            self.drop(pkt, "no-route")
            return
        hop[0].send(pkt, hop[1])

    def receive(self, pkt: Packet, iif: Interface) -> None:
        dst_ip = pkt.dst.ip
        nat = self.nat
        if nat is not None and dst_ip == nat.public_ip:
            if iif is self.nat_wan:
                verdict = nat.inbound(pkt, self.sched.now)
                if verdict is None:
                    self.drop(pkt, "nat-filtered")
                    return
                if verdict != LOCAL:
                    assert isinstance(verdict, Endpoint)
                    self._forward(pkt, iif, dst=verdict)
                    return
            else:
                hairpinned = nat.hairpin(pkt, self.sched.now)
                if hairpinned is not None:
                    self._forward(hairpinned, iif, translated=True)
                    return
        if dst_ip in self._local_ips:
            self._deliver_local(pkt)
        elif self.forwarding:
            self._forward(pkt, iif)
        else:
            self.drop(pkt, "not-for-me")

    def _deliver_local(self, pkt: Packet) -> None:
        socks = self._sockets
        dst = pkt.dst
        handler = (
            socks.get((pkt.proto, dst.ip, dst.port))
            or socks.get((pkt.proto, "any4" if dst.ip.version == 4 else "any6", dst.port))
            or (socks.get((pkt.proto, "any6", dst.port)) if dst.ip.version == 4 else None)
        )
        if handler is None:
            self.drop(pkt, "port-unreachable")
            return
        handler(pkt)

    def _forward(self, pkt: Packet, iif: Interface, translated: bool = False, dst: Endpoint | None = None) -> None:
        """Route ``pkt`` on (destination rewritten to ``dst`` by the NAT), TTL one lower, source NAT on the WAN."""
        if pkt.ttl <= 1:
            self.drop(pkt, "ttl-exceeded")
            return
        for rule in self.filters:
            reason = rule(pkt)
            if reason is not None:
                self.drop(pkt, reason)
                return
        hop = self.route(pkt.dst.ip if dst is None else dst.ip)
        if hop is None:
            self.drop(pkt, "no-route")
            return
        oif, next_hop = hop
        src = None
        nat = self.nat
        if nat is not None and (oif is self.nat_wan) is not (iif is self.nat_wan):
            if pkt.version == 6:  # routed, filtered like v4
                if oif is self.nat_wan and not nat.allow_out6(pkt, self.sched.now):
                    self.drop(pkt, "nat-blocked")
                    return
                if iif is self.nat_wan and not nat.allow_in6(pkt, self.sched.now):
                    self.drop(pkt, "nat-filtered")
                    return
            elif oif is self.nat_wan and not translated:
                src = nat.outbound(pkt if dst is None else pkt.rewrite(dst=dst), self.sched.now)
                if src is None:
                    self.drop(pkt, "nat-blocked")
                    return
        oif.send(pkt.rewrite(src=src, dst=dst, ttl=pkt.ttl - 1), next_hop)

    def drop(self, pkt: Packet, reason: str) -> None:
        self.counters[reason] += 1
        if self.tracer is not None:
            self.tracer(
                TraceRecord(self.sched.now, self.name, None, "dropped", pkt.summary(), reason, pkt.raw, pkt.src)
            )

    def __repr__(self) -> str:
        return f"<Machine {self.name}>"


def _addr_key(local: Endpoint) -> IPAddress | str:
    return f"any{local.ip.version}" if local.ip.is_unspecified else local.ip


__all__ = ["EPHEMERAL", "Interface", "Machine", "RouteEntry", "Segment"]
