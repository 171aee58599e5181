"""The sim's TCP (toolkit/lab/sim/tcp.py): handshake, data and close as real segments, retransmission and
reassembly over a lossy link, RST, giving up, through an easy NAT and a UDP-blocking firewall, determinism."""

from __future__ import annotations

import itertools
from pathlib import Path

from tests.lab.sim.simnet import ep, one_nat
from toolkit.lab.sim.packet import TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.tcp import MAX_RETRIES, RTO, State, TcpConnection, TcpListener, connect
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import Topology, TopologyBuilder

LABS = Path(__file__).resolve().parents[3] / "labs"
PEER = ep("198.51.100.12:80")  # the one_nat() "peer" host


class Sink:
    """A listener on ``peer:80`` that keeps what every accepted connection received."""

    def __init__(self, world: SimWorld, host: str = "peer", port: int = 80) -> None:
        self.conns: list[TcpConnection] = []
        self.data = bytearray()
        self.closed: list[str] = []
        machine = world.machine(host)
        self.listener = TcpListener(machine, ep(f"{machine.addresses[0]}:{port}"), self._accept)

    def _accept(self, conn: TcpConnection) -> None:
        self.conns.append(conn)
        conn.on_data = self.data.extend
        conn.on_closed = self.closed.append


def _flags(raw: bytes) -> int:
    pkt = Packet.parse(raw)  # checks every checksum
    assert pkt.proto == TCP and pkt.tcp_info is not None
    return pkt.tcp_info.flags


def test_handshake_data_and_close_are_real_segments() -> None:
    world = SimWorld(one_nat("easy"), seed=1)
    assert world.machine("peer").addresses[0] == PEER.ip
    sink = Sink(world)
    capture = world.capture("peer", "eth0")
    payload = bytes(range(256)) * 20  # 5120 bytes: four segments of at most 1460
    done: list[str] = []
    client = connect(world.machine("alice"), PEER, lambda c: c.send(payload), on_closed=done.append)
    world.sched.run_for(1.0)
    assert bytes(sink.data) == payload and client.state is State.ESTABLISHED
    client.close()
    world.sched.run_for(5.0)
    assert done == ["closed"] and sink.closed == ["closed"]
    packets = [Packet.parse(r.raw) for r in capture.packets if r.direction == "in"]
    flags = [_flags(r.raw) for r in capture.packets]
    assert flags[:3] == [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK]
    syn, syn_ack = Packet.parse(capture.packets[0].raw), Packet.parse(capture.packets[1].raw)
    assert syn_ack.tcp_info is not None and syn.tcp_info is not None
    assert syn_ack.tcp_info.ack == (syn.tcp_info.seq + 1) % 2**32
    sizes = [len(p.payload) for p in packets if p.payload]
    assert sizes == [1460, 1460, 1460, 740]
    assert b"".join(p.payload for p in packets) == payload
    assert sum(1 for f in flags if f & TCP_FIN) == 2
    assert not world.machine("alice").port_in_use(TCP, None, client.local.port)  # unbound after TIME-WAIT
    assert not sink.listener.conns


def _lossy(loss: float) -> Topology:
    t = TopologyBuilder("lossy")
    t.segment("internet", "internet", latency=0.01, loss=loss)
    t.host("a", t.internet)
    t.host("b", t.internet)
    return t.build()


def test_loss_is_repaired_by_retransmission_in_order() -> None:
    world = SimWorld(_lossy(0.15), seed=7)
    sink = Sink(world, "b")
    rng = world.sched.rng_for("test-data")
    chunks = [rng.randbytes(rng.randint(1, 3000)) for _ in range(100)]
    closed: list[str] = []

    def go(conn: TcpConnection) -> None:
        for i, chunk in enumerate(chunks):
            world.sched.call_later(i * 0.005, conn.send, chunk)
        world.sched.call_later(0.6, conn.close)

    client = connect(world.machine("a"), sink.listener.local, go, on_closed=closed.append)
    world.sched.run_for(60.0)
    assert bytes(sink.data) == b"".join(chunks)
    assert client.counters["retransmitted"] > 0 and sink.conns[0].counters["out-of-order"] > 0
    assert closed == ["closed"] and sink.closed == ["closed"]
    assert world.machine("a").counters["link-loss"] + world.machine("b").counters["link-loss"] > 0


def test_rst_for_an_unknown_connection_and_refused() -> None:
    world = SimWorld(one_nat("easy"), seed=2)
    sink = Sink(world)
    reasons: list[str] = []
    client = connect(world.machine("alice"), PEER, on_closed=reasons.append)
    world.sched.run_for(0.5)
    assert sink.conns[0].established
    sink.listener.conns.clear()  # the server forgets the connection (a crash): the next segment gets a RST
    capture = world.capture("peer", "eth0")
    client.send(b"hello?")
    world.sched.run_for(0.5)
    assert reasons == ["reset"] and client.state is State.CLOSED
    assert any(_flags(r.raw) & TCP_RST for r in capture.packets if r.direction == "out")
    assert sink.listener.counters["reset-sent"] == 1
    # a SYN answered with a RST: refused
    sink.listener.closed = True
    refused: list[str] = []
    connect(world.machine("alice"), PEER, on_closed=refused.append)
    world.sched.run_for(0.5)
    assert refused == ["refused"]


def test_gives_up_after_doubling_timeouts() -> None:
    world = SimWorld(one_nat("easy"), seed=3)
    capture = world.capture("peer", "eth0")
    reasons: list[str] = []
    connected: list[TcpConnection] = []
    connect(world.machine("alice"), ep("198.51.100.12:81"), connected.append, on_closed=reasons.append)
    world.sched.run_for(120.0)
    assert reasons == ["timeout"] and not connected
    times = [r.time for r in capture.packets]
    assert len(times) == MAX_RETRIES + 1  # the SYN and its retransmissions, nobody listening
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert [round(g, 6) for g in gaps] == [round(RTO * 2**i, 6) for i in range(MAX_RETRIES)]
    assert world.machine("peer").counters["port-unreachable"] == MAX_RETRIES + 1


def test_through_an_easy_nat_the_table_shows_the_tcp_mapping() -> None:
    world = SimWorld(one_nat("easy"), seed=4)
    sink = Sink(world)
    client = connect(world.machine("alice"), PEER, lambda c: c.send(b"x" * 100))
    world.sched.run_for(1.0)
    (entry,) = [e for e in world.nat_table("r1") if e.proto == "tcp"]
    assert entry.private == client.local and entry.peers == (PEER,)
    assert sink.conns[0].remote == entry.public and entry.public.ip == world.nat("r1").public_ip
    assert sink.data == b"x" * 100


def test_udp_blocked_tcp_still_works() -> None:
    world = SimWorld(Topology.from_yaml(LABS / "udp-blocked.yaml"), seed=5)
    derp_ip = world.topology.host("derp1").v4
    sink = Sink(world, "derp1", 443)
    udp = UdpSocket(world.machine("alice"))
    udp.sendto(b"probe", ep(f"{derp_ip}:443"))
    connect(world.machine("alice"), ep(f"{derp_ip}:443"), lambda c: c.send(b"over tcp"))
    world.sched.run_for(1.0)
    assert sink.data == b"over tcp"
    assert world.machine("r1").counters["nat-blocked"] == 1 and world.nat("r1").counters["udp-blocked"] == 1
    assert [e.proto for e in world.nat_table("r1")] == ["tcp"]


def _pcap(seed: int) -> bytes:
    world = SimWorld(_lossy(0.1), seed=seed)
    sink = Sink(world, "b")
    capture = world.capture()
    connect(world.machine("a"), sink.listener.local, lambda c: (c.send(b"z" * 50_000), c.close()))
    world.sched.run_for(30.0)
    assert bytes(sink.data) == b"z" * 50_000
    return capture.pcap_bytes()


def test_same_seed_same_pcap_with_tcp() -> None:
    assert _pcap(11) == _pcap(11)
    assert _pcap(11) != _pcap(12)  # other ISNs, other losses
