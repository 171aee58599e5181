"""DERP in the sim (toolkit/lab/sim/streams.py): natkit's DERP server and client cores over the sim's TCP,
behind NATs and a UDP-blocking firewall, started by SimLab.up(); deterministic and fast."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from toolkit.lab.sim.lab import SimLab
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import Topology
from toolkit.sansio.derpevents import Closed, RestartingReceived

LABS = Path(__file__).resolve().parents[3] / "labs"


def _world(lab: str, seed: int = 1) -> SimWorld:
    world = SimWorld(Topology.from_yaml(LABS / f"{lab}.yaml"), seed=seed)
    world.start_derp_server("derp1")
    return world


def test_two_clients_behind_two_nats_relay_through_the_sim_derp_server() -> None:
    world = _world("easy-hard")
    alice, bob = world.derp_client("alice"), world.derp_client("bob")
    world.sched.run_for(1.0)
    assert alice.connected and bob.connected
    assert alice.send_packet(bob.core.public_key, b"hello bob")
    assert bob.send_packet(alice.core.public_key, b"hello alice")
    world.sched.run_for(1.0)
    assert bob.received == [(alice.core.public_key, b"hello bob")]  # RecvPacket names the sender's key
    assert alice.received == [(bob.core.public_key, b"hello alice")]
    server = world.derp_servers["derp1"]
    derp_ep = server.local
    for router, host in (("r1", "alice"), ("r2", "bob")):
        (entry,) = world.nat_table(router)
        assert entry.proto == "tcp" and entry.peers == (derp_ep,)
        assert entry.private.ip == world.topology.host(host).v4
    remotes = {e.remote for e in server.events}
    assert remotes == {world.nat_table("r1")[0].public, world.nat_table("r2")[0].public}
    assert server.core.counts["connections"] == 2


def test_udp_blocked_derp_over_tcp_is_the_only_path() -> None:
    world = _world("udp-blocked")
    world.start_stun_servers()
    alice, bob = world.derp_client("alice"), world.derp_client("bob")
    world.sched.run_for(1.0)
    report = world.discover_nat("alice")
    assert report.udp_blocked
    alice.send_packet(bob.core.public_key, b"via derp")
    world.sched.run_for(1.0)
    assert bob.received == [(alice.core.public_key, b"via derp")]


def test_connections_survive_keepalives_and_nat_timeouts() -> None:
    world = _world("easy-easy")
    alice, bob = world.derp_client("alice"), world.derp_client("bob")
    world.sched.run_for(600.0)  # ten minutes: KeepAlives every 60 s, the client read timeout is 120 s
    assert alice.connected and bob.connected
    alice.send_packet(bob.core.public_key, b"still there")
    world.sched.run_for(1.0)
    assert bob.received == [(alice.core.public_key, b"still there")]


def test_stopping_the_server_tells_the_clients() -> None:
    world = _world("easy-easy")
    alice = world.derp_client("alice")
    world.sched.run_for(1.0)
    world.derp_servers["derp1"].close()
    world.sched.run_for(5.0)
    assert any(isinstance(e, RestartingReceived) for e in alice.events)
    assert isinstance(alice.events[-1], Closed) and alice.conn.close_reason == "closed"


def test_a_thousand_packets_relay_in_well_under_a_second() -> None:
    world = _world("easy-easy")
    alice, bob = world.derp_client("alice"), world.derp_client("bob")
    world.sched.run_for(1.0)
    dst = bob.core.public_key
    started = time.perf_counter()
    for i in range(1000):
        alice.send_packet(dst, i.to_bytes(4, "big") + bytes(96))
        world.sched.run_for(0.001)
    world.sched.run_for(1.0)
    wall = time.perf_counter() - started
    assert [int.from_bytes(d[:4], "big") for _, d in bob.received] == list(range(1000))
    assert wall < 0.5, f"1000 DERP packets took {wall:.3f} s"


def _pcap(seed: int) -> bytes:
    world = _world("easy-easy", seed)
    capture = world.capture()
    alice, bob = world.derp_client("alice"), world.derp_client("bob")
    world.sched.run_for(1.0)
    for i in range(20):
        alice.send_packet(bob.core.public_key, bytes([i]) * 50)
        world.sched.run_for(0.05)
    world.sched.run_for(1.0)
    assert len(bob.received) == 20
    return capture.pcap_bytes()


def test_same_seed_same_pcap_with_derp() -> None:
    assert _pcap(3) == _pcap(3)
    assert _pcap(3) != _pcap(4)


def test_simlab_up_starts_the_derp_server() -> None:
    async def main() -> None:
        lab = SimLab(Topology.from_yaml(LABS / "easy-easy.yaml"), seed=1)
        await lab.up()
        try:
            status = {e.name: e for e in lab.status().elements}
            assert status["derp1"].services == ("derp-server tcp 198.51.100.20:3340",)
            assert status["control1"].services == ("control-server tcp 198.51.100.30:8081",)
            assert lab.world is not None
            alice, bob = lab.world.derp_client("alice"), lab.world.derp_client("bob")
            await lab.sleep(1.0)
            alice.send_packet(bob.core.public_key, b"in the lab")
            capture = await lab.open_capture("r1", "wan")
            await lab.sleep(1.0)
            assert bob.received == [(alice.core.public_key, b"in the lab")]
            assert len(capture.packets) >= 2  # the SendPacket segment out, its ACK in
            assert [m.proto for m in await lab.nat_table("r1")] == ["tcp"]
        finally:
            await lab.down()

    asyncio.run(main())
