"""The node's virtual tunnel interface in the simulator (design.md §4: "on a virtual interface in sim").

In ``netns`` and ``docker`` labs a node reads and writes IP packets on a TUN device
(:mod:`toolkit.node.tun`); in the ``sim`` backend the same job is done by a :class:`VirtualTun` on a
simulated :class:`~toolkit.lab.sim.net.Machine`:

* it is an :class:`~toolkit.lab.sim.net.Interface` (``tailscale0``, like Tailscale's Linux device) on a
  private segment nobody else is attached to, holding the node's tunnel addresses (``100.64.x.y/32``,
  ``fd7a:115c:a1e0::x/128``, as the coordination server hands them out);
* the machine routes Tailscale's CGNAT range ``100.64.0.0/10`` and its ULA ``fd7a:115c:a1e0::/48`` to it
  (Tailscale's router does the same on Linux), so the machine's stack (sim UDP sockets, sim TCP) picks a
  tunnel address as the source for a peer's tunnel address and sends its packets here;
* a packet the stack sends to the interface is handed, as its exact wire bytes, to ``on_packet(bytes)``
  (the node driver feeds it to WireGuard: ``NodeCore.send_ip_packet``);
* :meth:`VirtualTun.inject` takes an IP packet out of the tunnel (``NodeCore.ip_packets_received``) and
  delivers it into the stack as if it arrived on the interface: sockets bound to the tunnel address (or
  to a wildcard) get it. Delivery is an event of the scheduler at the current time, as a wire of zero
  latency would be, so a driver never re-enters its core from inside its own pump.

The interface has a capture point (``HOST/tailscale0``) like every other, so captures show the plaintext
packets inside the tunnel next to the WireGuard datagrams on ``eth0``. :data:`TUN_MTU` is Tailscale's
default device MTU (1280, protocols.md §4.12); the sim does not fragment, so it is advisory (the sim's TCP
still sends 1460-byte segments; WireGuard carries them, adding 32 bytes of its own).
Bad input (not an IPv4/IPv6 UDP/TCP packet with valid checksums) is dropped and counted, never raised.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable

from toolkit.errors import DecodeError
from toolkit.lab.sim.net import Interface, Machine, Segment
from toolkit.lab.sim.packet import Packet
from toolkit.sansio.trace import TraceRecord
from toolkit.types import IPAddress

TUN_NAME = "tailscale0"
TUN_MTU = 1280  # Tailscale's default TUN MTU (protocols.md §4.12)
TUNNEL_V4 = ipaddress.ip_network("100.64.0.0/10")  # Tailscale's CGNAT range (RFC 6598)
TUNNEL_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")  # Tailscale's ULA range

PacketHandler = Callable[[bytes], None]
AddressLike = IPAddress | ipaddress.IPv4Interface | ipaddress.IPv6Interface | str


class TunInterface(Interface):
    """The interface half: what the machine routes to it leaves through ``on_packet`` instead of a wire."""

    on_packet: PacketHandler | None = None
    counters: Counter[str]

    def send(self, pkt: Packet, next_hop: IPAddress) -> None:
        if self.capture._listeners:
            self.capture.emit(self.segment.sched.now, "out", pkt.raw)
        handler = self.on_packet
        if handler is None:
            self.counters["dropped-down"] += 1
            self.machine.drop(pkt, "tun-down")
            return
        self.counters["sent"] += 1
        self.counters["sent-bytes"] += len(pkt.raw)
        handler(pkt.raw)


def _tun_factory(machine: Machine, name: str, segment: Segment, addrs: list[tuple[IPAddress, int]]) -> Interface:
    iface = TunInterface(machine, name, segment, addrs)
    iface.counters = Counter()
    return iface


def _host_address(value: AddressLike) -> IPAddress:
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return value.ip
    if isinstance(value, str):
        return ipaddress.ip_interface(value).ip
    return value


class VirtualTun:
    """A tunnel interface on ``machine`` (see the module docstring). ``on_packet`` may be set later."""

    def __init__(
        self,
        machine: Machine,
        on_packet: PacketHandler | None = None,
        addresses: Iterable[AddressLike] = (),
        *,
        name: str = TUN_NAME,
    ) -> None:
        if name in machine.interfaces:
            raise OSError(17, f"{machine.name}: interface {name} already exists")
        self.machine = machine
        self.name = name
        segment = Segment(f"{machine.name}/{name}", machine.sched)  # point-to-point: nobody else on it
        iface = machine.add_interface(name, segment, [], factory=_tun_factory)
        assert isinstance(iface, TunInterface)
        self.iface = iface
        iface.on_packet = on_packet
        machine.add_route(TUNNEL_V4, name)
        machine.add_route(TUNNEL_V6, name)
        self.closed = False
        self.set_addresses(addresses)

    # --- configuration ------------------------------------------------------------------------------

    @property
    def on_packet(self) -> PacketHandler | None:
        return self.iface.on_packet

    @on_packet.setter
    def on_packet(self, handler: PacketHandler | None) -> None:
        self.iface.on_packet = handler

    @property
    def addresses(self) -> list[IPAddress]:
        return [ip for ip, _ in self.iface.addresses]

    def address(self, version: int) -> IPAddress | None:
        """The tunnel address of that IP version, None before one is set."""
        return self.iface.address(version)

    def set_addresses(self, addresses: Iterable[AddressLike]) -> None:
        """Make the interface hold exactly ``addresses`` (host addresses: /32, /128)."""
        wanted = [_host_address(a) for a in addresses]
        for ip in self.addresses:
            if ip not in wanted:
                self.machine.remove_address(self.name, ip)
        have = set(self.addresses)
        for ip in wanted:
            if ip not in have:
                self.machine.add_address(self.name, ip, ip.max_prefixlen)
                have.add(ip)

    @property
    def counters(self) -> Counter[str]:
        return self.iface.counters

    # --- packets from the tunnel --------------------------------------------------------------------

    def inject(self, packet: bytes) -> bool:
        """Deliver IP ``packet`` (from the tunnel) into the machine's stack; False when it was dropped."""
        if self.closed:
            self.counters["dropped-closed"] += 1
            return False
        try:
            pkt = Packet.parse(packet)
        except DecodeError as exc:
            self.counters["dropped-malformed"] += 1
            tracer = self.machine.tracer
            if tracer is not None:
                now = self.machine.sched.now
                reason = f"tun-malformed: {exc}"
                tracer(TraceRecord(now, self.machine.name, None, "dropped", "tunnel packet", reason, bytes(packet)))
            return False
        self.counters["received"] += 1
        self.counters["received-bytes"] += len(pkt.raw)
        self.machine.sched.call_at(self.machine.sched.now, self._arrive, pkt)
        return True

    def _arrive(self, pkt: Packet) -> None:
        if not self.closed:
            self.iface.receive(pkt)

    def close(self) -> None:
        """Remove the interface, its addresses and the tunnel routes (``ip link del tailscale0``)."""
        if not self.closed:
            self.closed = True
            self.iface.on_packet = None
            self.machine.remove_interface(self.name)

    def __repr__(self) -> str:
        return f"<VirtualTun {self.machine.name}/{self.name} {[str(ip) for ip in self.addresses]}>"


__all__ = ["TUNNEL_V4", "TUNNEL_V6", "TUN_MTU", "TUN_NAME", "TunInterface", "VirtualTun"]
