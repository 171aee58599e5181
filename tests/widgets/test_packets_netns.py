"""The lab's keys on a kernel backend (netns, easy-easy): two real ``natkit node`` processes write
``--keys-out``; ``lab_keyring`` reads them through ``NodeHandle.keys()`` and the packet inspector opens
the disco pings and WireGuard transport captured on r1's WAN side; an inspector and a timeline given only
the lab collect the keys by themselves while they follow the captures."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from tests.lab.netns.netnslab import new_lab
from toolkit.lab.backend import Capture
from toolkit.lab.noderun import first_peer, settled, start_pair, wait_until
from toolkit.lab.registry import load_topology
from toolkit.packets.keyring import Keyring
from toolkit.widgets.packets import PacketInspector, lab_keyring
from toolkit.widgets.timeline import Timeline


@dataclass
class Run:
    ring: Keyring
    capture: Capture
    followed: PacketInspector
    timeline: Timeline
    state: str | None


async def _run() -> Run:
    lab = new_lab(load_topology("easy-easy"))
    async with lab:
        followed = PacketInspector(lab)  # no keyring: the lab's, collected as it follows
        capture = await lab.open_capture("r1", "wan")
        await followed.watch("r1", "wan")
        timeline = Timeline(lab, [("alice", "eth0"), ("r1", "wan"), ("derp1", "eth0")])  # the lab's keys too
        await timeline.watch()
        pair = await start_pair(lab)  # alice and bob, known to each other, alice pinging bob's tunnel address
        alice, traffic = pair.a, pair.traffic
        status = await wait_until(lab, alice, settled, 60.0)
        await lab.sleep(1.0)
        await traffic.stop()
        await followed.stop()
        await timeline.stop()
        await capture.aclose()
        ring = await lab_keyring(lab)
    return Run(ring, capture, followed, timeline, (first_peer(status) or {}).get("state"))


@pytest.fixture(scope="module")
def run() -> Run:
    return asyncio.run(_run())


def test_lab_keyring_on_netns_opens_disco_and_wireguard(run: Run) -> None:
    assert run.state == "DirectActive"
    assert len(run.ring.disco_private) == 2 and run.ring.has_wireguard_keys
    assert set(run.ring.names.values()) == {"alice", "bob"}
    inspector = PacketInspector(keyring=run.ring)
    inspector.add(run.capture)
    pings = [r for r in inspector.filter("disco") if r.summary.startswith("disco Ping") and r.path == "direct"]
    assert pings and any("from alice to bob" in r.summary for r in pings), [r.summary for r in pings[:5]]
    text = inspector.select(inspector.rows.index(pings[0]))
    assert "###[ disco Ping ]###" in text
    transport = [r for r in inspector.filter("wireguard") if "Transport" in r.summary and r.path == "direct"]
    assert transport and all("ICMP" in r.summary for r in transport), [r.summary for r in transport[:5]]
    sealed = PacketInspector(keyring=Keyring())
    sealed.add(run.capture)
    assert not any(r.summary.startswith("disco Ping") for r in sealed.rows), "without the keys the boxes stay shut"


def test_a_following_inspector_collects_the_lab_keys(run: Run) -> None:
    rows = run.followed.filter("disco")
    assert any(r.summary.startswith("disco Ping") and "from alice to bob" in r.summary for r in rows)
    assert len(run.followed.keyring.disco_private) == 2 and run.followed.keyring.has_wireguard_keys
    transport = [r for r in run.followed.filter("wireguard") if "Transport" in r.summary]
    assert transport and all("ICMP" in r.summary for r in transport), "opened from the first one on"
    assert run.followed.following.errors == 0


def test_a_timeline_opens_the_callmemaybe_through_derp(run: Run) -> None:
    arrows = run.timeline.arrows
    cmm = [a for a in arrows if "CallMeMaybe" in a.summary]
    assert any(a.dst == "derp1" for a in cmm) and any(a.src == "derp1" for a in cmm), [a.summary for a in arrows[:20]]
    assert any("ICMP echo-request" in a.summary for a in arrows if a.protocol == "wireguard")
    assert run.timeline.following.errors == 0 and run.timeline.renderer.last_error is None
