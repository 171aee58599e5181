"""SimNode (toolkit/lab/sim/simnode.py): NodeCore on sim hosts of labs/easy-easy.yaml and hard-hard.yaml with the
lab's STUN, DERP and control servers: registration, the upgrade to a direct path, a TCP transfer through the
tunnel across the upgrade, the fallback to DERP when the direct path is cut and the re-upgrade, DERP restarts,
hard NATs staying on DERP, and the endpoint cache."""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.lab.labservices import LAB_AUTHKEY
from toolkit.lab.sim.link import LinkParams
from toolkit.lab.sim.packet import UDP, Packet
from toolkit.lab.sim.simnode import NODE_PORT, SimNode
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.tcp import TcpConnection, TcpListener, connect
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import Topology
from toolkit.sansio.nodestatus import PeerStateChanged, PingResult
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

LABS = Path(__file__).resolve().parents[3] / "labs"
BOB_TUN = Endpoint.parse("100.64.0.2:8080")
LATENCY = {"internet": 0.010, "home1": 0.001, "home2": 0.001}  # one way, per hop


@dataclass
class Lab:
    world: SimWorld
    alice: SimNode
    bob: SimNode
    caches: dict[str, dict[str, object]] = field(default_factory=dict)

    def run(self, seconds: float) -> None:
        self.world.sched.run_for(seconds)

    def run_until(self, cond: Callable[[], bool], timeout: float) -> bool:
        return self.world.sched.run_while(lambda: not cond(), timeout)

    def peer(self, node: SimNode) -> tuple[str, str]:
        peers = node.status().peers
        return (peers[0].state, peers[0].path) if peers else ("", "")


def make_lab(name: str = "easy-easy", *, seed: int = 1, latency: bool = True) -> Lab:
    world = SimWorld(Topology.from_yaml(LABS / f"{name}.yaml"), seed=seed)
    if latency:
        for machine in world.machines.values():
            for iface in machine.interfaces.values():
                iface.link.params = LinkParams(latency=LATENCY[iface.segment.name])
    world.start_stun_servers()
    world.start_derp_server("derp1")
    world.start_control_server("control1")
    caches: dict[str, dict[str, object]] = {"alice": {}, "bob": {}}
    control = world.control_endpoint()
    alice, bob = (SimNode(world, h, control=control, authkey=LAB_AUTHKEY, cache=caches[h]) for h in ("alice", "bob"))
    alice.start()
    bob.start()
    lab = Lab(world, alice, bob, caches)
    assert lab.run_until(lambda: all(n.tun is not None and n.tun.addresses for n in (alice, bob)), 5.0)
    return lab


class Transfer:
    """``size`` bytes from alice to bob's tunnel address over sim TCP, ``chunk`` bytes every ``every`` s (0: at once)."""

    def __init__(self, lab: Lab, size: int, *, chunk: int = 0, every: float = 0.0) -> None:
        self.lab, self.chunk, self.every = lab, chunk, every
        self.payload = lab.world.sched.rand_bytes("payload")(size)
        self.received = bytearray()
        self.closed: list[str] = []
        self.sent = 0
        TcpListener(lab.world.machine("bob"), BOB_TUN, self._accept)
        self.conn = connect(lab.world.machine("alice"), BOB_TUN, self._connected, on_closed=self.closed.append)

    def _accept(self, conn: TcpConnection) -> None:
        conn.on_data = self.received.extend

    def _connected(self, conn: TcpConnection) -> None:
        self._more()

    def _more(self) -> None:
        n = self.chunk or len(self.payload)
        self.conn.send(self.payload[self.sent : self.sent + n])
        self.sent += n
        if self.sent < len(self.payload):
            self.lab.world.sched.call_later(self.every, self._more)

    @property
    def done(self) -> bool:
        return len(self.received) >= len(self.payload)

    def intact(self) -> bool:
        return hashlib.sha256(self.received).digest() == hashlib.sha256(self.payload).digest()


def path_changes(node: SimNode) -> list[tuple[str, str]]:
    return [(e.state_id, e.path_kind) for e in node.events if isinstance(e, PeerStateChanged)]


def test_two_nodes_register_get_tunnel_addresses_and_go_direct() -> None:
    lab = make_lab(latency=False)
    assert lab.run_until(lambda: lab.alice.netmap is not None and lab.bob.netmap is not None, 5.0)
    a, b = lab.alice, lab.bob
    assert a.tun is not None and b.tun is not None
    assert [str(ip) for ip in a.tun.addresses] == ["100.64.0.1", "fd7a:115c:a1e0::1"]
    assert [str(ip) for ip in b.tun.addresses] == ["100.64.0.2", "fd7a:115c:a1e0::2"]
    lab.run(2.0)
    status = a.status()
    assert status.home_region == 1 and status.derp_connected == (1,)
    assert Endpoint(ipaddress.ip_address("203.0.113.1"), NODE_PORT) in status.endpoints  # STUN-discovered
    assert Endpoint(ipaddress.ip_address("192.168.1.10"), NODE_PORT) in status.endpoints  # the interface
    assert b.netmap is not None and set(status.endpoints) <= set(b.netmap.peers[0].endpoints)  # told control
    got: list[tuple[bytes, Endpoint]] = []
    UdpSocket(lab.world.machine("bob"), Endpoint.parse("100.64.0.2:9"), lambda d, src, s: got.append((d, src)))
    UdpSocket(lab.world.machine("alice")).sendto(b"hello through the tunnel", Endpoint.parse("100.64.0.2:9"))
    lab.run(5.0)  # WireGuard over DERP first; disco finds the direct path
    assert [(d, str(src.ip)) for d, src in got] == [(b"hello through the tunnel", "100.64.0.1")]
    a.ping("100.64.0.2")
    lab.run(1.0)
    assert lab.peer(a) == ("DirectActive", "direct") and lab.peer(b) == ("DirectActive", "direct")
    last = a.pings[-1]
    assert isinstance(last, PingResult) and last.is_direct and last.via == "203.0.113.2:41641"
    assert not a.counters["control-error"] and not b.counters["control-error"]
    assert any(r.kind == "sent" for r in a.records)  # trace records land in .records without a tracer


def test_tcp_transfer_started_on_derp_survives_the_upgrade_to_direct() -> None:
    lab = make_lab()
    a, b = lab.alice, lab.bob
    assert lab.run_until(lambda: a.derp is not None and a.derp.connected(1) and b.netmap is not None, 5.0)
    assert lab.run_until(lambda: bool(a.netmap and a.netmap.peers and a.netmap.peers[0].endpoints), 5.0)
    assert lab.peer(a)[1] == "derp"  # nothing direct yet: the first packets go over DERP
    t = Transfer(lab, 1_000_000)
    upgraded_at: list[int] = []
    lab.run_until(lambda: lab.peer(a)[1] == "direct" and not upgraded_at.append(len(t.received)), 10.0)
    assert upgraded_at and upgraded_at[-1] < len(t.payload)  # the transfer was under way at the upgrade
    assert lab.run_until(lambda: t.done, 60.0)
    assert t.intact() and not t.closed and t.conn.close_reason is None  # identical bytes, no reset
    assert a.core is not None and a.core.counters["wg-sent-derp"] > 0 and a.core.counters["wg-sent-udp"] > 100
    assert ("DirectActive", "direct") in path_changes(a) and path_changes(a)[0][1] == "derp"


def test_cut_direct_path_falls_back_to_derp_then_upgrades_again() -> None:
    lab = make_lab()
    a = lab.alice
    timing = DEFAULT
    t = Transfer(lab, 1_000_000, chunk=20_000, every=0.5)  # 25 s of paced traffic
    assert lab.run_until(lambda: lab.peer(a) == ("DirectActive", "direct"), 15.0)
    r2 = ipaddress.ip_address("203.0.113.2")  # bob's NAT: cut UDP between the two homes at alice's router

    def cut(pkt: Packet) -> str | None:
        return "test-cut" if pkt.proto == UDP and r2 in (pkt.src.ip, pkt.dst.ip) else None

    r1 = lab.world.machine("r1")
    r1.filters.append(cut)
    cut_at = lab.world.sched.now
    assert lab.run_until(lambda: lab.peer(a)[1] == "derp", timing.trust_udp_addr_duration + timing.ping_timeout)
    fallback = lab.world.sched.now - cut_at
    assert r1.counters["test-cut"] > 0
    lab.run(3.0)
    assert lab.peer(a)[1] == "derp" and not t.closed  # still relayed, the connection lives
    r1.filters.remove(cut)
    restored_at = lab.world.sched.now
    assert lab.run_until(lambda: lab.peer(a) == ("DirectActive", "direct"), timing.upgrade_udp_direct_interval + 10)
    reupgrade = lab.world.sched.now - restored_at
    assert lab.run_until(lambda: t.done, 120.0)
    assert t.intact() and not t.closed and t.conn.close_reason is None
    print(f"fallback after {fallback:.2f} s, re-upgrade after {reupgrade:.2f} s")


def test_hard_nats_stay_on_derp_and_carry_the_transfer() -> None:
    lab = make_lab("hard-hard")
    a, b = lab.alice, lab.bob
    t = Transfer(lab, 300_000)
    assert lab.run_until(lambda: t.done, 60.0)
    assert t.intact() and not t.closed
    rounds = DEFAULT.disco_retry_rounds + 1  # every probe round times out, then the flow gives up for a while
    limit = rounds * (DEFAULT.ping_timeout + 1.0)
    assert lab.run_until(lambda: lab.peer(a)[0] == "StayOnDERP" and lab.peer(b)[0] == "StayOnDERP", limit)
    lab.run(30.0)  # StayOnDERP retries now and then, and never finds a path
    for node in (a, b):
        assert ("StayOnDERP", "derp") in path_changes(node) and all(k == "derp" for _, k in path_changes(node))
    assert a.core is not None and b.core is not None
    assert a.core.counters["wg-sent-derp"] > 100 and a.core.counters["wg-sent-udp"] == 0
    assert b.core.counters["wg-sent-udp"] == 0


def test_derp_restart_reconnects_and_stop_keeps_the_endpoint_cache() -> None:
    lab = make_lab()
    a = lab.alice
    assert lab.run_until(lambda: a.derp is not None and a.derp.connected(1), 5.0)
    relay = lab.world.derp_servers["derp1"]
    relay.close()  # sends Restarting: clients come back after derp_restart_reconnect_in
    lab.run(0.5)
    assert a.derp is not None and not a.derp.connected(1) and a.status().derp_connected == ()
    lab.run(1.5)  # the relay's connections leave TIME-WAIT and free its port
    lab.world.start_derp_server("derp1")
    assert lab.run_until(lambda: a.status().derp_connected == (1,), DEFAULT.derp_restart_reconnect_in + 5.0)
    assert a.derp.counters["connected"] == 2
    a.ping("bob")
    lab.run(10.0)
    a.stop()
    assert lab.caches["alice"]  # the peers' last-known endpoints
    assert "tailscale0" not in lab.world.machine("alice").interfaces and not a.sockets
    a.start()  # a new disco key, the same node key: control keeps the node's addresses
    assert lab.run_until(lambda: a.netmap is not None and a.status().derp_connected == (1,), 10.0)
    assert a.tun is not None and str(a.tun.address(4)) == "100.64.0.1"


def test_same_seed_same_run() -> None:
    def run() -> list[tuple[float, str, str, bytes]]:
        lab = make_lab(seed=5)
        Transfer(lab, 50_000)
        lab.run(8.0)
        return [(r.at, r.kind, r.detail, r.raw) for r in lab.alice.records + lab.bob.records]

    first = run()
    assert len(first) > 100 and first == run()
