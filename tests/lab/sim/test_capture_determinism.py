"""Captures and determinism of the sim: the issue's benchmark (a two-NAT lab, 60 simulated seconds of
traffic, well under a second of wall time), identical pcap bytes for one seed, other ports for another seed
behind a hard NAT, and capture files that pcapio, scapy and tshark read."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.lab.sim.simnet import Chatter, two_nat
from tests.support import require_tool
from toolkit.codec import pcapio
from toolkit.lab.sim.capture import Capture
from toolkit.lab.sim.world import SimWorld


def _traffic(seed: int, nat2: str = "easy", seconds: float = 60.0) -> tuple[SimWorld, Capture, Chatter, Chatter]:
    world = SimWorld(two_nat("easy", nat2, latency=0.005), seed=seed)
    world.start_stun_servers()
    capture = world.capture()
    alice, bob = Chatter(world, "alice", 41641), Chatter(world, "bob", 41641)
    alice.peer, bob.peer = bob, alice
    alice.start(0.0)
    bob.start(0.05)
    world.sched.run_until(seconds)
    return world, capture, alice, bob


def test_sixty_simulated_seconds_take_well_under_a_second() -> None:
    started = time.perf_counter()
    _, capture, alice, bob = _traffic(seed=1)
    wall = time.perf_counter() - started
    assert alice.stun_answers >= 599 and bob.stun_answers >= 599  # 10 a second, 60 seconds
    assert alice.from_peer >= 590 and bob.from_peer >= 590  # easy <-> easy: direct after the first round
    assert len(capture) > 15_000  # every packet on every interface it crosses, both directions
    assert wall < 0.8, f"60 simulated seconds took {wall:.3f} s"


def test_same_seed_same_bytes() -> None:
    first = _traffic(seed=5, nat2="hard", seconds=5.0)[1]
    second = _traffic(seed=5, nat2="hard", seconds=5.0)[1]
    assert first.pcap_bytes() == second.pcap_bytes()
    assert first.pcapng_bytes() == second.pcapng_bytes()


def test_another_seed_other_ports_behind_a_hard_nat() -> None:
    def ports(seed: int) -> set[int]:
        world = _traffic(seed=seed, nat2="hard", seconds=2.0)[0]
        return {e.public.port for e in world.nat_table("r2")}

    assert ports(5) == ports(5)
    assert ports(5) != ports(6)


def test_pcap_files_read_back(tmp_path: Path) -> None:
    _, capture, _, _ = _traffic(seed=1, seconds=1.0)
    path = capture.write(tmp_path / "lab.pcap")
    records = list(pcapio.read_records(path))
    assert len(records) == len(capture) and records[0].linktype == pcapio.LINKTYPE_RAW
    payloads = [t.payload for t in pcapio.udp_payloads(path)]
    assert payloads == [pcapio.transport(r).payload for r in capture.records()]  # type: ignore[union-attr]
    ng = capture.write(tmp_path / "lab.pcapng")
    assert [r.data for r in pcapio.read_records(ng)] == [r.data for r in records]

    from scapy.layers.inet import IP, UDP
    from scapy.utils import rdpcap

    packets = rdpcap(str(path))
    assert len(packets) == len(capture)
    first = packets[0]
    assert first.haslayer(IP) and first.haslayer(UDP) and bytes(first[IP]) == capture.packets[0].raw


def test_tshark_reads_the_pcapng_with_interface_names(tmp_path: Path) -> None:
    require_tool("tshark", "tshark")
    _, capture, _, _ = _traffic(seed=1, seconds=0.3)
    path = capture.write(tmp_path / "lab.pcapng")
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.interface_name", "-e", "udp.srcport", "-e", "stun.type"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert len(out) == len(capture)
    names = {line.split("\t")[0] for line in out}
    assert {"alice/eth0", "r1/lan", "r1/wan", "stun1/eth0"} <= names
    assert any(line.endswith("0x0001") for line in out)  # STUN Binding requests dissected
