"""A small in-memory internet for NodeCores (issue 6): real bytes, simulated time, no sockets.

* Each node sits behind its own NAT: port preserving (LAN port = public port), endpoint-independent
  mapping, address-and-port-dependent filtering (an inbound datagram passes only from a remote the host
  sent to), like a home router (RFC 4787; protocols.md §6.1). ``public=True`` puts a node on the internet.
* A :class:`~toolkit.sansio.stunserver.StunServerCore` answers STUN on 192.0.2.10:3478 (region 1's node).
* DERP is a trivial relay, not DerpServerCore: ``derp_to_send`` (region, destination key, payload) is
  delivered to the destination's ``receive_derp(region, sender key, payload)`` after ``DERP_DELAY``.
* A mini coordination server builds netmaps with :mod:`toolkit.sansio.control_netmap` types: when a node
  reports ``EndpointsChanged`` its entry changes and every node gets a new netmap after ``CONTROL_DELAY``.

:class:`Lab` records every delivery (``deliveries``) and, per node, each IP packet that came out of
``ip_packets_received`` with the path of the datagram that carried it (``"udp"`` / ``"derp"``).
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.sansio.control_netmap import ControlNode, NetMap
from toolkit.sansio.nodecore import NodeConfig, NodeCore
from toolkit.sansio.nodestatus import EndpointsChanged, NodeEvent
from toolkit.sansio.stunserver import StunServerCore
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

UDP_DELAY, DERP_DELAY, CONTROL_DELAY = 0.010, 0.040, 0.050
STUN_EP = Endpoint.parse("192.0.2.10:3478")
PORT = 41641


def derp_map() -> DERPMap:
    node = DERPNode("1a", 1, "derp1.lab", ipv4=str(STUN_EP.ip), stun_port=STUN_EP.port, derp_port=8080, scheme="http")
    return DERPMap({1: DERPRegion(1, "lab", "Lab relay", (node,))})


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A complete IPv4/UDP packet with both checksums (RFC 791, RFC 768)."""
    s, d = ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed
    ulen = 8 + len(payload)
    pseudo = s + d + struct.pack("!BBH", 0, 17, ulen)
    udp = struct.pack("!HHHH", sport, dport, ulen, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0, 64, 17, 0, s, d)
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


@dataclass
class Host:
    name: str
    index: int
    core: NodeCore
    lan: Endpoint
    public: Endpoint
    tunnel_ip: str
    log: TraceLog
    sessions: set[Endpoint] = field(default_factory=set)  # remotes the NAT has sent to (APDF filter)
    received: list[tuple[float, str, bytes]] = field(default_factory=list)  # (at, path, ip packet)
    events: list[tuple[float, NodeEvent]] = field(default_factory=list)
    endpoints: tuple[Endpoint, ...] = ()  # as control knows them

    def control_node(self) -> ControlNode:
        return ControlNode(
            id=self.index,
            name=self.name,
            hostname=self.name,
            node_key=self.core.node_public,
            disco_key=self.core.disco_public,
            addresses=(ipaddress.ip_interface(f"{self.tunnel_ip}/32"),),
            endpoints=self.endpoints,
            home_derp=1,
            online=True,
            last_seen=0.0,
            created=0.0,
        )


@dataclass
class Lab:
    hosts: list[Host]
    stun: StunServerCore
    rng: random.Random = field(default_factory=lambda: random.Random(1))
    udp_loss: float = 0.0
    udp_blocked: bool = False
    udp_blocked_until: float = 0.0  # peer-to-peer UDP (not STUN) is dropped before this time
    now: float = 0.0
    version: int = 0
    members: set[str] = field(default_factory=set)  # hosts control puts in the netmaps
    deliveries: list[tuple[float, str, str, str]] = field(default_factory=list)  # (at, path, from, to)
    counts: dict[str, int] = field(default_factory=dict)
    _queue: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._seq), action))

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    # --- the network -------------------------------------------------------------------------------

    def _udp(self, frm: Host, data: bytes, to: Endpoint) -> None:
        frm.sessions.add(to)
        if to == STUN_EP:
            for reply in self.stun.handle(data, frm.public, STUN_EP, "udp", self.now):
                self.at(self.now + 2 * UDP_DELAY, lambda d=reply.data: self._deliver(frm, d, STUN_EP, "udp", "stun"))
            return
        if self.udp_blocked or self.now < self.udp_blocked_until:
            return self.note("udp blocked")
        if self.udp_loss and self.rng.random() < self.udp_loss:
            return self.note("udp lost")
        dst = next((h for h in self.hosts if h.public == to), None)
        if dst is None:
            return self.note("unroutable")  # a LAN address of another home
        if frm.public not in dst.sessions:
            return self.note("filtered")
        self.at(self.now + UDP_DELAY, lambda: self._deliver(dst, data, frm.public, "udp", frm.name))

    def _derp(self, frm: Host, region: int, key: object, data: bytes) -> None:
        dst = next((h for h in self.hosts if h.core.node_public == key), None)
        if dst is None:
            return self.note("derp peer gone")
        self.at(self.now + DERP_DELAY, lambda: self._deliver(dst, data, None, "derp", frm.name, region, frm))

    def _deliver(
        self,
        dst: Host,
        data: bytes,
        src: Endpoint | None,
        path: str,
        frm: str,
        region: int = 0,
        sender: Host | None = None,
    ) -> None:
        self.deliveries.append((self.now, path, frm, dst.name))
        if path == "derp":
            assert sender is not None
            dst.core.receive_derp(region, sender.core.node_public, data, self.now)
        else:
            assert src is not None
            dst.core.receive_udp(data, src, self.now)
        dst.received += [(self.now, path, p) for p in dst.core.ip_packets_received()]

    # --- control -----------------------------------------------------------------------------------

    def push_netmaps(self) -> None:
        self.version += 1
        members = [h for h in self.hosts if h.name in self.members]
        for h in members:
            netmap = NetMap(
                self.version, h.control_node(), tuple(p.control_node() for p in members if p is not h), None
            )
            self.at(self.now + CONTROL_DELAY, lambda h=h, m=netmap: h.core.set_netmap(m, self.now))

    # --- the clock ---------------------------------------------------------------------------------

    def _flush(self) -> None:
        for h in self.hosts:
            for data, to in h.core.udp_to_send():
                self._udp(h, data, to)
            for region, key, data in h.core.derp_to_send():
                self._derp(h, region, key, data)
            h.received += [(self.now, "local", p) for p in h.core.ip_packets_received()]
            while (ev := h.core.next_event()) is not None:
                h.events.append((self.now, ev))
                if isinstance(ev, EndpointsChanged):
                    h.endpoints = ev.endpoints
                    self.push_netmaps()

    def run_until(self, until: float) -> None:
        while True:
            self._flush()
            timers = [t for h in self.hosts if (t := h.core.get_timer()) is not None]
            nxt = min([*timers, *(q[0] for q in self._queue[:1])], default=None)
            if nxt is None or nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            if self._queue and self._queue[0][0] <= self.now:
                heapq.heappop(self._queue)[2]()
            else:
                for h in self.hosts:
                    t = h.core.get_timer()
                    if t is not None and t <= self.now:
                        h.core.handle_timer(self.now)

    def do(self, action: Callable[[], None]) -> None:
        """Run ``action`` now, then flush its output."""
        action()
        self._flush()


def make_host(name: str, index: int, lan: str, public_ip: str | None, timing: Timing) -> Host:
    node_priv, _ = node_key_pair(f"node-{name}".encode())
    disco_priv, _ = disco_key_pair(f"disco-{name}".encode())
    log = TraceLog()
    core = NodeCore(NodeConfig(name, node_priv, disco_priv, timing, epoch=1.7e9), random.Random(index).randbytes, log)
    lan_ep = Endpoint.parse(f"{lan}:{PORT}")
    public = Endpoint.parse(f"{public_ip}:{PORT}") if public_ip is not None else lan_ep
    return Host(name, index, core, lan_ep, public, f"100.64.0.{index}", log)


def make_lab(*, timing: Timing = DEFAULT, seed: int = 1) -> Lab:
    a = make_host("a", 1, "192.168.1.2", "198.51.100.1", timing)
    b = make_host("b", 2, "10.0.0.2", "203.0.113.1", timing)
    return Lab([a, b], StunServerCore(STUN_EP), rng=random.Random(seed))


def start(lab: Lab, names: tuple[str, ...] = ("a", "b")) -> None:
    """Bring nodes up as a driver would: DERP map, home region 1 connected, local endpoints, netmap."""
    dm = derp_map()
    for name in names:
        h = lab.host(name)
        lab.members.add(name)
        lab.do(lambda h=h: h.core.set_derp_map(dm, lab.now))
        lab.do(lambda h=h: h.core.set_home_region(1, lab.now))
        lab.do(lambda h=h: h.core.derp_state(1, True, lab.now))
        lab.do(lambda h=h: h.core.set_local_endpoints([h.lan], lab.now))
    lab.push_netmaps()


__all__ = ["Host", "Lab", "derp_map", "make_host", "make_lab", "start", "udp_packet"]
