"""Small topologies for the sim tests, and a traffic generator."""

from __future__ import annotations

from toolkit.lab.nat import NatBehavior
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import Topology, TopologyBuilder
from toolkit.types import Endpoint


def one_nat(nat: str | NatBehavior = "easy", *, hosts: int = 1, latency: float = 0.0) -> Topology:
    """alice (and bob ...) on home1 behind r1 with ``nat``; stun1 (two addresses) and peer on the internet."""
    t = TopologyBuilder("one-nat")
    home1 = t.lan("home1", latency=latency)
    t.nat_router("r1", lan=home1, nat=nat)
    for name in ("alice", "bob", "carol")[:hosts]:
        t.host(name, home1, node=True)
    t.host("stun1", t.internet, extra_v4=1, services=["stun-server"])
    t.host("peer", t.internet)
    return t.build()


def two_nat(nat1: str | NatBehavior = "easy", nat2: str | NatBehavior = "easy", latency: float = 0.0) -> Topology:
    """alice behind r1 (``nat1``), bob behind r2 (``nat2``), stun1 on the internet."""
    t = TopologyBuilder("two-nat")
    t.segment("internet", "internet", latency=latency)
    home1, home2 = t.lan("home1", latency=latency), t.lan("home2", latency=latency)
    t.nat_router("r1", lan=home1, nat=nat1)
    t.nat_router("r2", lan=home2, nat=nat2)
    t.node("alice", home1)
    t.node("bob", home2)
    t.host("stun1", t.internet, extra_v4=1, services=["stun-server"])
    return t.build()


def ep(text: str) -> Endpoint:
    return Endpoint.parse(text)


class Chatter:
    """Every ``interval`` seconds: a STUN Binding request to the server, and a datagram to the peer's
    last known public endpoint (learned from the STUN answers of the other side)."""

    def __init__(self, world: SimWorld, host: str, port: int, interval: float = 0.1) -> None:
        from toolkit.codec import stun
        from toolkit.types import TxID

        self.world, self.interval = world, interval
        self.stun, self.txid = stun, TxID
        self.sock = UdpSocket(world.machine(host), ep(f"0.0.0.0:{port}"), self._datagram)
        self.rng = world.sched.rng_for(f"chatter:{host}")
        self.mapped: Endpoint | None = None
        self.peer: Chatter | None = None
        self.from_peer = 0
        self.stun_answers = 0

    def start(self, at: float = 0.0) -> None:
        self.world.sched.call_at(at, self._tick)

    def _tick(self) -> None:
        request = self.stun.binding_request(self.txid(self.rng.randbytes(12)))
        self.sock.sendto(request, self.world.stun_endpoint())
        if self.peer is not None and self.peer.mapped is not None:
            self.sock.sendto(b"hello from " + self.sock.machine.name.encode(), self.peer.mapped)
        self.world.sched.call_later(self.interval, self._tick)

    def _datagram(self, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        if self.stun.is_stun(data):
            self.mapped = self.stun.decode(data).mapped_endpoint
            self.stun_answers += 1
        else:
            self.from_peer += 1
