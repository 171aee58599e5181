"""The virtual tunnel interface (toolkit/lab/sim/tun.py): routes, source selection, the packet callback, inject,
and a sim TCP transfer between two machines' tunnel addresses joined by an in-memory pipe with a delay."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from tests.lab.sim.simnet import ep, one_nat
from toolkit.lab.sim.capture import Capture
from toolkit.lab.sim.clock import Scheduler
from toolkit.lab.sim.net import Machine, Segment
from toolkit.lab.sim.packet import TCP, UDP, Packet
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.tcp import State, TcpConnection, TcpListener, connect
from toolkit.lab.sim.tun import TUN_NAME, VirtualTun
from toolkit.lab.sim.world import SimWorld
from toolkit.sansio.trace import TraceRecord

A4, A6 = ipaddress.ip_address("100.64.0.1"), ipaddress.ip_address("fd7a:115c:a1e0::1")
B4, B6 = ipaddress.ip_address("100.64.0.2"), ipaddress.ip_address("fd7a:115c:a1e0::2")


class Pipe:
    """Two tunnels joined by a wire of ``delay`` seconds (what WireGuard + a path would be)."""

    def __init__(self, sched: Scheduler, a: VirtualTun, b: VirtualTun, delay: float) -> None:
        self.sched, self.delay = sched, delay
        self.carried: list[bytes] = []
        a.on_packet = lambda raw: self._carry(raw, b)
        b.on_packet = lambda raw: self._carry(raw, a)

    def _carry(self, raw: bytes, to: VirtualTun) -> None:
        self.carried.append(raw)
        self.sched.call_later(self.delay, to.inject, raw)


def _two_machines(delay: float = 0.02) -> tuple[Scheduler, Machine, Machine, VirtualTun, VirtualTun, Pipe]:
    sched = Scheduler(3)
    lan = Segment("lan", sched)
    a, b = Machine("a", sched), Machine("b", sched)
    a.add_interface("eth0", lan, [(ep("192.168.1.2:0").ip, 24)])
    b.add_interface("eth0", lan, [(ep("192.168.1.3:0").ip, 24)])
    ta, tb = VirtualTun(a, addresses=[A4, A6]), VirtualTun(b, addresses=["100.64.0.2/32", "fd7a:115c:a1e0::2/128"])
    return sched, a, b, ta, tb, Pipe(sched, ta, tb, delay)


def test_addresses_routes_and_source_selection() -> None:
    _sched, a, _, ta, _, _ = _two_machines()
    assert ta.addresses == [A4, A6] and ta.address(4) == A4 and ta.address(6) == A6
    assert a.source_for(B4) == A4 and a.source_for(B6) == A6  # 100.64/10 and fd7a:115c:a1e0::/48 -> tailscale0
    assert a.route(ipaddress.ip_address("100.127.255.254")) is not None
    hop = a.route(B4)
    assert hop is not None and hop[0].name == TUN_NAME
    eth = a.route(ep("192.168.1.3:0").ip)
    assert eth is not None and eth[0].name == "eth0"  # the LAN still goes out of eth0
    assert a.route(ipaddress.ip_address("100.128.0.1")) is None  # outside 100.64/10: no route
    ta.set_addresses([ipaddress.ip_interface("100.64.0.9/32")])
    assert ta.addresses == [ipaddress.ip_address("100.64.0.9")] and a.source_for(B4) == ipaddress.ip_address(
        "100.64.0.9"
    )
    with pytest.raises(OSError):
        a.bind(UDP, ep("100.64.0.1:5"), lambda p: None)  # the old address is gone
    with pytest.raises(OSError):
        VirtualTun(a)  # one tailscale0 per machine


def test_udp_through_the_tunnel_both_families() -> None:
    sched, a, b, ta, tb, pipe = _two_machines()
    got: list[tuple[float, bytes, str]] = []
    UdpSocket(b, ep("[::]:7"), lambda data, src, s: got.append((sched.now, data, str(src))))
    sock = UdpSocket(a, ep("[::]:0"))
    sock.sendto(b"over v4", ep("100.64.0.2:7"))
    sock.sendto(b"over v6", ep("[fd7a:115c:a1e0::2]:7"))
    sched.run()
    assert [(d, s) for _, d, s in got] == [
        (b"over v4", f"100.64.0.1:{sock.local.port}"),
        (b"over v6", f"[fd7a:115c:a1e0::1]:{sock.local.port}"),
    ]
    assert got[0][0] == pytest.approx(0.02)  # the pipe's delay, nothing else
    first = Packet.parse(pipe.carried[0])  # the callback gets real IP bytes with valid checksums
    assert first.proto == UDP and first.src.ip == A4 and first.dst == ep("100.64.0.2:7")
    assert ta.counters["sent"] == 2 and tb.counters["received"] == 2
    assert not a.counters and not b.counters  # no drops


def test_tcp_transfer_between_tunnel_addresses_is_intact() -> None:
    sched, a, b, ta, _tb, _pipe = _two_machines(delay=0.015)
    received = bytearray()
    accepted: list[TcpConnection] = []

    def accept(conn: TcpConnection) -> None:
        accepted.append(conn)
        conn.on_data = received.extend

    TcpListener(b, ep("100.64.0.2:8080"), accept)
    payload = sched.rand_bytes("payload")(1_000_000)
    closed: list[str] = []
    client = connect(a, ep("100.64.0.2:8080"), lambda c: c.send(payload), on_closed=closed.append)
    assert client.local.ip == A4  # picked by the routing table
    cap = Capture([ta.iface.capture])
    sched.run_while(lambda: len(received) < len(payload), 120)
    client.close()
    sched.run_for(5)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert closed == ["closed"] and accepted[0].state is State.CLOSED
    assert client.counters["retransmitted"] == 0
    segments = [Packet.parse(r.raw) for r in cap.packets]
    assert segments and all(p.proto == TCP for p in segments)
    assert {r.direction for r in cap.packets} == {"in", "out"}  # the capture point sees both directions
    assert sum(len(p.payload) for p in segments if p.src.ip == A4) == len(payload)


def test_inject_drops_bad_packets_and_packets_not_for_us() -> None:
    records: list[TraceRecord] = []
    sched, a, _, ta, _, _ = _two_machines()
    a.tracer = records.append
    assert not ta.inject(b"\x45garbage")
    assert ta.counters["dropped-malformed"] == 1 and records[-1].kind == "dropped"
    stray = Packet.udp(ep("100.64.0.2:1"), ep("100.64.0.77:9"), b"x")  # not our tunnel address
    assert ta.inject(stray.raw)
    no_port = Packet.udp(ep("100.64.0.2:1"), ep("100.64.0.1:9"), b"x")  # ours, nobody listens
    assert ta.inject(no_port.raw)
    sched.run()
    assert a.counters["not-for-me"] == 1 and a.counters["port-unreachable"] == 1


def test_down_and_closed_tunnel() -> None:
    _sched, a, _, ta, _, _ = _two_machines()
    ta.on_packet = None
    UdpSocket(a, ep("0.0.0.0:0")).sendto(b"x", ep("100.64.0.2:7"))
    assert a.counters["tun-down"] == 1 and ta.counters["dropped-down"] == 1
    ta.close()
    assert TUN_NAME not in a.interfaces and a.route(B4) is None and A4 not in a.addresses
    assert not ta.inject(Packet.udp(ep("100.64.0.2:1"), ep("100.64.0.1:9"), b"x").raw)
    again = VirtualTun(a, addresses=[A4])  # can be created again
    assert a.source_for(B4) == A4 and again.address(6) is None


def test_tunnel_on_a_host_of_a_world_keeps_its_other_routes() -> None:
    world = SimWorld(one_nat("easy"), seed=1)
    alice = world.machine("alice")
    before = alice.route(ep("198.51.100.12:0").ip)
    tun = VirtualTun(alice, addresses=[A4])
    assert alice.route(ep("198.51.100.12:0").ip) == before  # the default route still goes out of eth0
    assert alice.source_for(B4) == A4
    tun.close()
    assert alice.route(ep("198.51.100.12:0").ip) == before
