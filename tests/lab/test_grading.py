"""The exercise checks (toolkit/lab/grading.py) grade what happened on the network: their verdicts on the sim.

Each test opens the exercise's lab on the sim, makes the network do something a student might (through the
backend-neutral :meth:`~toolkit.lab.backend.Lab.udp_socket`, or ``natkit nat-type`` run on a host), and checks
the verdict and its message. tests/lab/netns/test_grading_netns.py runs the same checks on the kernel's NAT.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import time
from pathlib import Path
from typing import Any

import pytest

from toolkit.codec import stun
from toolkit.errors import UsageError
from toolkit.lab import grading
from toolkit.lab.backend import Packet
from toolkit.lab.nat import Filtering, Mapping
from toolkit.lab.registry import load_topology, open_lab
from toolkit.types import Endpoint, TxID

EXERCISES = Path(__file__).resolve().parents[2] / "labs" / "exercises"
REQUEST = stun.binding_request(TxID(bytes(range(12))))


async def _public(lab: Any, sock: Any) -> Endpoint:
    """The endpoint the lab's STUN server reports for ``sock``."""
    sock.sendto(REQUEST, grading.STUN_SERVER)
    got = await sock.recv()
    assert got is not None, "the STUN server did not answer"
    mapped = stun.decode(got[0]).mapped_endpoint
    assert mapped is not None
    return mapped


def test_public_endpoint_check_rejects_the_private_address_and_a_wrong_port() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "01-public-endpoint.yaml", "sim", seed=1) as lab:
            caps = {"host_capture": await lab.open_capture("alice", "eth0"),
                    "wan_capture": await lab.open_capture("r1", "wan")}  # fmt: skip
            with pytest.raises(AssertionError, match="your probe never left alice"):
                await grading.check_public_endpoint(lab, None, **caps)
            sock = await lab.udp_socket("alice")
            public = await _public(lab, sock)
            assert public.ip != sock.local.ip and str(public.ip) == "203.0.113.1"
            with pytest.raises(AssertionError, match=re.escape("is alice's own (private) address")):
                await grading.check_public_endpoint(lab, str(sock.local), **caps)
            with pytest.raises(AssertionError, match=re.escape("r1 maps none of alice's sockets to 203.0.113.1:1")):
                await grading.check_public_endpoint(lab, "203.0.113.1:1", **caps)
            with pytest.raises(AssertionError, match="is not an ip:port"):
                await grading.check_public_endpoint(lab, "my public endpoint", **caps)
            with pytest.raises(AssertionError, match="MY_PUBLIC_ENDPOINT is not set yet"):
                await grading.check_public_endpoint(lab, None, **caps)
            assert (await grading.check_public_endpoint(lab, str(public), **caps)).startswith("✓")
            assert (await grading.check_public_endpoint(lab, (str(public.ip), public.port), **caps)).startswith("✓")

    asyncio.run(run())


def test_public_endpoint_check_wants_the_stun_server_not_another_address() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "01-public-endpoint.yaml", "sim", seed=1) as lab:
            caps = {"host_capture": await lab.open_capture("alice", "eth0"),
                    "wan_capture": await lab.open_capture("r1", "wan")}  # fmt: skip
            sock = await lab.udp_socket("alice")
            sock.sendto(REQUEST, Endpoint.parse("198.51.100.10:9999"))
            assert await sock.recv(timeout=1.0) is None
            with pytest.raises(AssertionError, match=re.escape("the lab's STUN server listens on 198.51.100.10:3478")):
                await grading.check_public_endpoint(lab, "203.0.113.1:1", **caps)

    asyncio.run(run())


def test_classification_check_wants_the_tests_and_the_right_words() -> None:
    async def run() -> None:
        async with open_lab(grading.mystery_topology(5), "sim", seed=1) as lab:  # seed 5: the hard preset
            wan = await lab.open_capture("r1", "wan")
            with pytest.raises(AssertionError, match="no STUN request crossed r1"):
                await grading.check_nat_classification(lab, {}, wan_capture=wan)
            sock = await lab.udp_socket("alice")  # test I only: no CHANGE-REQUEST crossed r1 yet
            await _public(lab, sock)
            await sock.close()
            with pytest.raises(AssertionError, match="no filtering test crossed r1"):
                await grading.check_nat_classification(lab, {}, wan_capture=wan)
            (await lab.run("alice", ["natkit", "nat-type", str(grading.STUN_SERVER)])).check("nat-type")
            with pytest.raises(AssertionError, match="ANSWER is not set yet"):
                await grading.check_nat_classification(lab, None, wan_capture=wan)
            answer = {"mapping": "endpoint-independent", "filtering": "address and port dependent"}
            with pytest.raises(AssertionError, match="your mapping answer 'endpoint-independent' is not what r1 does"):
                await grading.check_nat_classification(lab, answer, wan_capture=wan)
            with pytest.raises(AssertionError, match="is not an RFC 4787 filtering behaviour"):
                await grading.check_nat_classification(lab, {**answer, "filtering": "strict"}, wan_capture=wan)
            right = {**answer, "mapping": "Address-And-Port-Dependent"}
            assert (await grading.check_nat_classification(lab, right, wan_capture=wan)).startswith("✓")
            enums = {"mapping": Mapping.ADDRESS_AND_PORT_DEPENDENT, "filtering": Filtering.ADDRESS_AND_PORT_DEPENDENT}
            assert (await grading.check_nat_classification(lab, enums, wan_capture=wan)).startswith("✓")

    asyncio.run(run())


def test_hole_punch_check_names_the_router_that_filtered() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "03-hole-punch.yaml", "sim", seed=1) as lab:
            caps = {n: await lab.open_capture(n, "eth0") for n in ("alice", "bob")}
            caps |= {r: await lab.open_capture(r, "wan") for r in ("r1", "r2")}
            with pytest.raises(
                AssertionError, match=re.escape("bob never sent anything to alice's public address 203.0.113.1")
            ):
                await grading.check_hole_punched(lab, caps)
            bob = await lab.udp_socket("bob", "0.0.0.0:41641")
            for _ in range(3):  # only bob probes: alice never opened r1's filter for him
                bob.sendto(b"probe", Endpoint.parse("203.0.113.1:41641"))
                await lab.sleep(0.1)
            with pytest.raises(AssertionError, match=r"reached r1's WAN side .* but r1 let none through to alice"):
                await grading.check_hole_punched(lab, caps)
            alice = await lab.udp_socket("alice", "0.0.0.0:41641")
            for _ in range(3):  # now both probe: the later probes pass both filters
                alice.sendto(b"probe", Endpoint.parse("203.0.113.2:41641"))
                bob.sendto(b"probe", Endpoint.parse("203.0.113.1:41641"))
                await lab.sleep(0.1)
            assert {d for d, _ in await alice.recv_all()} == {b"probe"}
            verdict = await grading.check_hole_punched(lab, caps)
            assert verdict.startswith("✓ hole punched: alice received") and "bob received" in verdict

    asyncio.run(run())


def test_hard_side_check_wants_tests_from_both_sides_and_the_router() -> None:
    async def run() -> None:
        async with open_lab("easy-hard", "sim", seed=1) as lab:
            wan = {r: await lab.open_capture(r, "wan") for r in ("r1", "r2")}
            (await lab.run("alice", ["natkit", "nat-type", str(grading.STUN_SERVER)])).check("nat-type")
            with pytest.raises(AssertionError, match="no RFC 5780 test crossed r2: run the NAT discovery from bob"):
                await grading.check_hard_side(lab, "r2", wan_captures=wan)
            (await lab.run("bob", ["natkit", "nat-type", str(grading.STUN_SERVER)])).check("nat-type")
            with pytest.raises(AssertionError, match="HARD_ROUTER is not set yet"):
                await grading.check_hard_side(lab, None, wan_captures=wan)
            with pytest.raises(AssertionError, match="name the router"):
                await grading.check_hard_side(lab, "bob", wan_captures=wan)
            with pytest.raises(AssertionError, match="r1 is not it"):
                await grading.check_hard_side(lab, "r1", wan_captures=wan)
            assert (await grading.check_hard_side(lab, "r2", wan_captures=wan)).startswith("✓ r2 is the hard NAT")

    asyncio.run(run())


def test_the_mystery_nat_is_one_nat_per_seed_on_every_backend() -> None:
    drawn = {grading.mystery_nat(seed).to_dict()["mapping"] for seed in range(40)}
    assert drawn == {m.value for m in (Mapping.ENDPOINT_INDEPENDENT, Mapping.ADDRESS_AND_PORT_DEPENDENT)}
    assert grading.mystery_nat(5).mapping is Mapping.ADDRESS_AND_PORT_DEPENDENT  # exercise 02's default
    for backend in ("netns", "docker"):
        assert grading.mystery_presets(backend) == grading.MYSTERY_PRESETS  # all of them run on the kernel's NAT
        for seed in range(20):
            assert grading.mystery_nat(seed, backend) == grading.mystery_nat(seed)
    topo = grading.mystery_topology(5, "netns")
    assert topo.router("r1").nat.to_dict() == grading.mystery_nat(5).to_dict()


def test_presets_a_backend_cannot_build_are_never_drawn_there() -> None:
    candidates = ("symmetric-sequential", "easy", "symmetric-preserving")
    assert grading.mystery_presets("sim", candidates) == candidates
    assert grading.mystery_presets("netns", candidates) == ("easy",)
    assert {grading.mystery_nat(s, "docker", candidates).mapping for s in range(30)} == {Mapping.ENDPOINT_INDEPENDENT}
    with pytest.raises(UsageError, match="none of the NAT presets symmetric-sequential can run on the netns backend"):
        grading.mystery_presets("netns", ("symmetric-sequential",))


def test_settle_waits_on_kernel_backends_only() -> None:
    async def run() -> None:
        async with open_lab(EXERCISES / "01-public-endpoint.yaml", "sim", seed=1) as lab:
            cap = await lab.open_capture("alice", "eth0")
            before, wall = lab.now(), time.monotonic()
            await grading.settle(lab, [cap])
            assert lab.now() == before and time.monotonic() - wall < 0.1  # sim: its captures are never behind

    asyncio.run(run())
    assert grading.lab_name("01", "sim") is None
    name = grading.lab_name("03", "netns")
    assert name is not None and name.startswith("x03-") and name == grading.lab_name("03", "docker")


def test_topology_checks_keep_the_other_side_and_the_lesson() -> None:
    original = load_topology("easy-hard")

    def changed(router: str, **fields: Any) -> Any:
        rs = tuple(
            dataclasses.replace(r, nat=r.nat.replace(**fields)) if r.name == router else r for r in original.routers
        )
        return dataclasses.replace(original, routers=rs)

    with pytest.raises(AssertionError, match="r2 is not yours to change"):
        grading.check_only_changed(changed("r2", mapping="endpoint-independent"), original, routers=("r1",))
    with pytest.raises(AssertionError, match="you changed filtering of r1's NAT: the fix needs only wan_input"):
        grading.check_only_changed(changed("r1", filtering="address-dependent"), original, routers=("r1",),
                                   fields=("wan_input",))  # fmt: skip
    with pytest.raises(AssertionError, match="must be a Topology"):
        grading.check_only_changed(original.to_yaml(), original, routers=("r1",))
    assert grading.check_only_changed(changed("r1", one_to_one=True), original, routers=("r1",)) is not None


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, proto: int = 17, frag: int = 0) -> bytes:
    """A raw IPv4/UDP packet whose UDP checksum is left to the NIC (a zero-ish placeholder, as checksum offload)."""
    udp = sport.to_bytes(2) + dport.to_bytes(2) + (8 + len(payload)).to_bytes(2) + b"\xbe\xef" + payload
    header = bytes([0x45, 0]) + (20 + len(udp)).to_bytes(2) + bytes(2) + frag.to_bytes(2) + bytes([64, proto, 0, 0])
    return header + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + udp


def test_captured_datagrams_are_read_without_verifying_checksums() -> None:
    raw = _ipv4_udp("192.168.1.10", "198.51.100.10", 40000, 3478, REQUEST)
    v6 = bytes([0x60, 0, 0, 0]) + (8 + 5).to_bytes(2) + bytes([17, 64])
    v6 += ipaddress.ip_address("2001:db8::1").packed + ipaddress.ip_address("2001:db8::2").packed
    v6 += (1).to_bytes(2) + (2).to_bytes(2) + (13).to_bytes(2) + bytes(2) + b"hello"
    packets = [
        Packet(1.0, raw),
        Packet(2.0, _ipv4_udp("1.2.3.4", "5.6.7.8", 1, 2, b"tcp?", proto=6)),  # not UDP
        Packet(3.0, _ipv4_udp("1.2.3.4", "5.6.7.8", 1, 2, b"tail", frag=185)),  # a later fragment
        Packet(4.0, raw[:24]),  # truncated
        Packet(5.0, v6),
        Packet(6.0, b""),
    ]
    seen = grading.udp_seen(packets)
    assert [(s.time, str(s.src), str(s.dst), s.payload) for s in seen] == [
        (1.0, "192.168.1.10:40000", "198.51.100.10:3478", REQUEST),
        (5.0, "[2001:db8::1]:1", "[2001:db8::2]:2", b"hello"),
    ]
    ((first, msg),) = grading.binding_requests(packets, to=grading.STUN_SERVER)
    assert first == seen[0] and msg.txid == TxID(bytes(range(12)))
    assert grading.binding_responses(packets) == []
