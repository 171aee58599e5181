"""The exercise checks (toolkit/lab/grading.py) on the netns backend: the kernel's NAT, real sockets, real time.

What differs from the sim (tests/lab/test_grading.py): captures are fed by a reader thread a moment after the
packet crossed (the checks settle first), a packet captured on the host that sent it has no UDP checksum yet
(checksum offload: the checks must not verify it), ports are the kernel's, and the NAT table is conntrack.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.lab.netns.netnslab import FAST, require_netns, unique_prefix
from toolkit.codec import stun
from toolkit.lab import grading
from toolkit.lab.registry import open_lab
from toolkit.types import Endpoint, TxID

pytestmark = [pytest.mark.root]

EXERCISES = Path(__file__).resolve().parents[2] / "labs" / "exercises"


def test_public_endpoint_and_classification_on_the_kernel_nat() -> None:
    require_netns()

    async def run() -> None:
        async with open_lab(grading.mystery_topology(5, "netns"), "netns", name_prefix=unique_prefix()) as lab:
            caps = {"host_capture": await lab.open_capture("alice", "eth0"),
                    "wan_capture": await lab.open_capture("r1", "wan")}  # fmt: skip
            with pytest.raises(AssertionError, match="your probe never left alice"):
                await grading.check_public_endpoint(lab, "203.0.113.1:1", **caps)
            sock = await lab.udp_socket("alice")
            sock.sendto(stun.binding_request(TxID(bytes(range(12)))), grading.STUN_SERVER)
            got = await sock.recv(timeout=5.0)
            assert got is not None, "stun1 did not answer alice"
            public = stun.decode(got[0]).mapped_endpoint
            assert public is not None and str(public.ip) == "203.0.113.1"
            # checked at once: the captures catch up (settle), and alice's own request verifies without a checksum
            assert (await grading.check_public_endpoint(lab, str(public), **caps)).startswith("✓")
            with pytest.raises(AssertionError, match=re.escape("is alice's own (private) address")):
                await grading.check_public_endpoint(lab, str(sock.local), **caps)
            with pytest.raises(AssertionError, match="no filtering test crossed r1"):
                await grading.check_nat_classification(lab, {}, wan_capture=caps["wan_capture"])
            argv = [
                "natkit",
                "nat-type",
                str(grading.STUN_SERVER),
                *FAST,
            ]  # short STUN timers: a lost answer costs 0.2 s
            (await lab.run("alice", argv, timeout=60)).check("nat-type")
            hard = {"mapping": "address-and-port-dependent", "filtering": "address-and-port-dependent"}
            assert (await grading.check_nat_classification(lab, hard, wan_capture=caps["wan_capture"])).startswith("✓")
            with pytest.raises(AssertionError, match="your mapping answer 'endpoint-independent' is not what r1 does"):
                await grading.check_nat_classification(
                    lab, {**hard, "mapping": "endpoint-independent"}, wan_capture=caps["wan_capture"]
                )

    asyncio.run(run())


def test_hole_punch_verdicts_on_the_kernel_nat() -> None:
    require_netns()

    async def run() -> None:
        async with open_lab(EXERCISES / "03-hole-punch.yaml", "netns", name_prefix=unique_prefix()) as lab:
            caps = {n: await lab.open_capture(n, "eth0") for n in ("alice", "bob")}
            caps |= {r: await lab.open_capture(r, "wan") for r in ("r1", "r2")}
            bob = await lab.udp_socket("bob", "0.0.0.0:41641")
            for _ in range(3):  # only bob probes: r1 drops what alice never asked for (wan_input drop)
                bob.sendto(b"probe", Endpoint.parse("203.0.113.1:41641"))
                await lab.sleep(0.05)
            with pytest.raises(AssertionError, match=r"reached r1's WAN side .* but r1 let none through to alice"):
                await grading.check_hole_punched(lab, caps)
            alice = await lab.udp_socket("alice", "0.0.0.0:41641")
            for _ in range(4):
                alice.sendto(b"probe", Endpoint.parse("203.0.113.2:41641"))
                bob.sendto(b"probe", Endpoint.parse("203.0.113.1:41641"))
                await lab.sleep(0.05)
            assert b"probe" in {d for d, _ in await alice.recv_all()}
            verdict = await grading.check_hole_punched(lab, caps)
            assert verdict.startswith("✓ hole punched: alice received") and "bob received" in verdict

    asyncio.run(run())
