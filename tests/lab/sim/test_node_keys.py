"""``NodeHandle.keys()`` on ``sim``: the node's keys straight from its core (what ``natkit node --keys-out``
writes on the kernel backends): node key as status shows it, a disco key pair, and each WireGuard session
as both ends see it; ``started_nodes`` lists the handles."""

from __future__ import annotations

import asyncio

from toolkit.crypto.keys import public_key
from toolkit.lab.noderun import first_peer, settled, wait_until
from toolkit.lab.nodes import NodeKeys, started_nodes
from toolkit.lab.registry import load_topology
from toolkit.lab.sim import SimLab


async def _keys() -> tuple[dict[str, NodeKeys], dict[str, NodeKeys], dict[str, object], list[str]]:
    async with SimLab(load_topology("easy-easy"), seed=3) as lab:
        alice, bob = await lab.start_node("alice"), await lab.start_node("bob")
        before = {"alice": await alice.keys(), "bob": await bob.keys()}
        known = await wait_until(lab, alice, lambda s: first_peer(s) is not None, 60.0)
        traffic = await alice.start_traffic(str(first_peer(known)["tunnel_ips"][0]))  # type: ignore[index]
        await wait_until(lab, alice, settled, 120.0)
        await traffic.stop()
        after = {"alice": await alice.keys(), "bob": await bob.keys()}
        return before, after, await alice.status(), sorted(started_nodes(lab))


def test_keys_on_sim() -> None:
    before, after, status, started = asyncio.run(_keys())
    assert started == ["alice", "bob"]
    assert not before["alice"].sessions, "no WireGuard session before traffic"
    alice, bob = after["alice"], after["bob"]
    assert str(alice.node_public) == status["self"]["node_key"]  # type: ignore[index]
    assert (
        alice.disco_private == before["alice"].disco_private and public_key(alice.disco_private) == alice.disco_public
    )
    assert alice.disco_public != bob.disco_public
    pairs = [(a, b) for a in alice.sessions for b in bob.sessions if a.local_index == b.remote_index]
    assert pairs
    for a, b in pairs:
        assert a.peer == bob.node_public and b.peer == alice.node_public
        assert a.send_key == b.recv_key and a.recv_key == b.send_key
