"""A topology as a simulated network (toolkit/lab/sim/world.py, net.py, sockets.py): routing and TTLs,
IPv6 routed without NAT, hole punching through easy NATs, the broken router of design.md §5, hairpinning
between two LAN hosts, cgnat, expiry seen on the wire, and the errors a kernel would give."""

from __future__ import annotations

import pytest

from tests.lab.sim.simnet import ep, one_nat, two_nat
from toolkit.lab.nat import preset
from toolkit.lab.sim.packet import Packet
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import TopologyBuilder
from toolkit.sansio.trace import TraceLog
from toolkit.types import Endpoint


def _inbox(world: SimWorld, host: str, port: int) -> tuple[UdpSocket, list[tuple[bytes, Endpoint]]]:
    got: list[tuple[bytes, Endpoint]] = []
    sock = UdpSocket(world.machine(host), Endpoint.parse(f"0.0.0.0:{port}"), lambda d, s, _: got.append((d, s)))
    return sock, got


def test_routing_ttl_and_nat_on_the_wire() -> None:
    world = SimWorld(one_nat("easy"), seed=1)
    alice, _ = _inbox(world, "alice", 41641)
    _, at_peer = _inbox(world, "peer", 7000)
    peer = world.topology.host("peer").v4
    cap = world.capture()
    alice.sendto(b"ping", Endpoint(peer, 7000))
    world.sched.run()
    assert at_peer == [(b"ping", Endpoint(world.topology.router("r1").wan_v4, 41641))]
    seen = {(p.interface, p.direction): Packet.parse(p.raw) for p in cap.packets}
    assert seen[("alice/eth0", "out")].src == ep("192.168.1.10:41641") and seen[("alice/eth0", "out")].ttl == 64
    assert seen[("r1/lan", "in")] == seen[("alice/eth0", "out")]
    wan = seen[("r1/wan", "out")]
    assert wan.src == ep("203.0.113.1:41641") and wan.ttl == 63 and wan == seen[("peer/eth0", "in")]


def test_ipv6_is_routed_not_translated() -> None:
    t = TopologyBuilder("v6")
    home1 = t.lan("home1")
    t.nat_router("r1", lan=home1, nat="hard")
    t.node("alice", home1, v6=True)
    t.host("srv", t.internet, v6=True)
    world = SimWorld(t.build())
    alice_v6, srv_v6 = world.topology.host("alice").v6, world.topology.host("srv").v6
    _, got = _inbox6(world, "srv", 9)
    sock = UdpSocket(world.machine("alice"), Endpoint.parse("[::]:5000"))
    sock.sendto(b"six", Endpoint(srv_v6, 9))  # type: ignore[arg-type]
    world.sched.run()
    assert got == [(b"six", Endpoint(alice_v6, 5000))]  # type: ignore[arg-type]
    assert world.nat_table("r1") == []


def test_hole_punching_through_two_easy_nats() -> None:
    world = SimWorld(two_nat("easy", "easy"), seed=2)
    a, got_a = _inbox(world, "alice", 41641)
    b, got_b = _inbox(world, "bob", 41641)
    a_pub, b_pub = ep("203.0.113.1:41641"), ep("203.0.113.2:41641")
    a.sendto(b"a1", b_pub)  # dropped by r2: bob never sent to alice
    world.sched.run()
    b.sendto(b"b1", a_pub)  # opens r2 towards alice; r1 lets it in (alice sent to bob)
    world.sched.run()
    a.sendto(b"a2", b_pub)
    world.sched.run()
    assert got_a == [(b"b1", b_pub)] and got_b == [(b"a2", a_pub)]
    assert world.machine("r2").counters["nat-filtered"] == 1


@pytest.mark.parametrize("nat", ["broken-router", "easy"])
def test_the_broken_router_changes_the_port(nat: str) -> None:
    """design.md §5: bob's early probe reaches alice's router before alice sends to bob. A router that
    accepts WAN input keeps that flow for itself, so alice's packets to bob leave from another port."""
    world = SimWorld(two_nat(nat, "full-cone"), seed=2)
    world.start_stun_servers()
    a, got_a = _inbox(world, "alice", 41641)
    b, got_b = _inbox(world, "bob", 41641)
    a.sendto(b"stun-ish", world.stun_endpoint())  # alice's mapping 203.0.113.1:41641 exists (STUN)
    world.sched.run()
    a_pub = ep("203.0.113.1:41641")
    b.sendto(b"early probe", a_pub)
    world.sched.run()
    a.sendto(b"hello bob", ep("203.0.113.2:41641"))
    world.sched.run()
    b.sendto(b"hello alice", a_pub)
    world.sched.run()
    [(_, seen_from)] = got_b
    if nat == "broken-router":
        assert seen_from != a_pub and got_a == []  # bob sees another port; his answer goes to the router
        assert world.nat("r1").counters["port-collision"] == 1
        assert world.machine("r1").counters["port-unreachable"] == 2
        assert {e.public.port for e in world.nat_table("r1")} == {41641, seen_from.port}
    else:
        assert seen_from == a_pub and got_a == [(b"hello alice", ep("203.0.113.2:41641"))]


def test_hairpinning_between_two_lan_hosts() -> None:
    world = SimWorld(one_nat(preset("easy").replace(hairpinning=True), hosts=2), seed=1)
    a, _ = _inbox(world, "alice", 1111)
    b, got_b = _inbox(world, "bob", 2222)
    peer = Endpoint(world.topology.host("peer").v4, 9)
    a.sendto(b"open", peer)
    b.sendto(b"open", peer)
    world.sched.run()
    a.sendto(b"via the public address", ep("203.0.113.1:2222"))
    world.sched.run()
    assert got_b == [(b"via the public address", ep("203.0.113.1:1111"))]  # RFC 4787 REQ-9


def test_a_mapping_expires_on_the_wire() -> None:
    world = SimWorld(one_nat(preset("easy").replace(mapping_timeout=30.0)), seed=1)
    a, got_a = _inbox(world, "alice", 41641)
    p, _ = _inbox(world, "peer", 7)
    a.sendto(b"out", Endpoint(world.topology.host("peer").v4, 7))
    world.sched.run()
    for t, expect in ((29.0, 1), (31.0, 1)):
        world.sched.run_until(t)
        p.sendto(b"back", ep("203.0.113.1:41641"))
        world.sched.run()
        assert len(got_a) == expect
    assert world.nat_table("r1") == [] and world.nat("r1").counters["mapping-expired"] == 1


def test_drops_are_counted_and_traced() -> None:
    log = TraceLog()
    world = SimWorld(one_nat("easy"), seed=1, tracer=log)
    sock = UdpSocket(world.machine("peer"))
    sock.sendto(b"x", ep("203.0.113.1:4000"))  # unsolicited
    sock.sendto(b"x", Endpoint(world.topology.host("stun1").v4, 9))  # nobody listens
    world.sched.run()
    assert world.machine("r1").counters["nat-filtered"] == 1
    assert world.machine("stun1").counters["port-unreachable"] == 1
    assert {r.reason for r in log.of_kind("dropped")} == {"nat-filtered", "port-unreachable"}
    with pytest.raises(OSError):
        sock.sendto(b"x", ep("10.9.9.9:1"))  # no route on the internet
    with pytest.raises(OSError):
        UdpSocket(world.machine("peer"), ep("10.9.9.9:1"))  # not our address
    with pytest.raises(OSError):
        UdpSocket(world.machine("peer"), sock.local)  # in use


@pytest.mark.parametrize(("scenario", "direct"), [("broken-router", False), ("broken-router-fixed", True)])
def test_the_broken_router_lab_breaks_hole_punching(scenario: str, direct: bool) -> None:
    """labs/broken-router.yaml vs broken-router-fixed.yaml: bob starts 50 ms after alice, so his first packet
    reaches alice's router before alice ever sent to him (design.md §5: easy<->easy measured 0/10 on Linux)."""
    from tests.lab.sim.simnet import Chatter
    from toolkit.lab.registry import load_topology

    world = SimWorld(load_topology(scenario), seed=4)
    world.start_stun_servers()
    alice, bob = Chatter(world, "alice", 41641), Chatter(world, "bob", 41641)
    alice.peer, bob.peer = bob, alice
    alice.start(0.0)
    bob.start(0.05)
    world.sched.run_until(5.0)
    if direct:
        assert alice.from_peer > 40 and bob.from_peer > 40
    else:
        assert alice.from_peer == 0 and bob.from_peer == 0
        assert world.nat("r1").counters["wan-input-local"] > 40 and world.nat("r1").counters["port-collision"] == 1


@pytest.mark.parametrize(
    ("nat", "unsolicited", "other_port"),
    [("easy", False, False), ("easyaf", False, True), ("full-cone", False, True), ("broken-router", True, True)],
)
def test_ipv6_is_filtered_like_ipv4(nat: str, unsolicited: bool, other_port: bool) -> None:
    """Routed, not translated, but the NAT router's filter applies (as the netns backend's nftables rules)."""
    t = TopologyBuilder("v6f")
    home1 = t.lan("home1")
    t.nat_router("r1", lan=home1, nat=nat)
    t.node("alice", home1, v6=True)
    t.host("srv", t.internet, v6=True)
    world = SimWorld(t.build())
    alice6, srv6 = world.topology.host("alice").v6, world.topology.host("srv").v6
    assert alice6 is not None and srv6 is not None
    alice, got = _inbox6(world, "alice", 5000)
    srv_a, _ = _inbox6(world, "srv", 9)
    srv_b, _ = _inbox6(world, "srv", 10)
    srv_a.sendto(b"unsolicited", Endpoint(alice6, 5000))
    world.sched.run()
    assert [d for d, _ in got] == ([b"unsolicited"] if unsolicited else [])
    got.clear()
    alice.sendto(b"out", Endpoint(srv6, 9))  # opens the filter towards srv:9
    world.sched.run()
    srv_a.sendto(b"answer", Endpoint(alice6, 5000))
    srv_b.sendto(b"other port", Endpoint(alice6, 5000))
    world.sched.run()
    assert [d for d, _ in got] == [b"answer", *([b"other port"] if other_port else [])]
    assert world.nat_table("r1") == []  # nothing translated


def _inbox6(world: SimWorld, host: str, port: int) -> tuple[UdpSocket, list[tuple[bytes, Endpoint]]]:
    got: list[tuple[bytes, Endpoint]] = []
    sock = UdpSocket(world.machine(host), Endpoint.parse(f"[::]:{port}"), lambda d, s, _: got.append((d, s)))
    return sock, got


def test_wildcard_sockets_by_family() -> None:
    world = SimWorld(one_nat("easy"))
    machine = world.machine("peer")
    v4 = UdpSocket(machine, ep("0.0.0.0:7"))
    with pytest.raises(OSError):
        v4.sendto(b"x", ep("[2001:db8::1]:7"))  # a v4 socket cannot send v6
    with pytest.raises(OSError):
        UdpSocket(machine, ep("[::]:7"))  # the port is taken
