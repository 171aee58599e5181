"""DerpRegions against two real natkit DERP relays (two regions): home switch with NotePreferred,
on-demand dialing, one tagged packet stream, idle cleanup of non-home regions, node fallback."""

from __future__ import annotations

import asyncio

import pytest

from tests.services.derpclienthelp import relay, run, until
from tests.support import free_tcp_port
from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.crypto.keys import generate_node_key
from toolkit.services.derpclient import DerpClient, DerpConnectError
from toolkit.services.derphome import DerpRegions, RegionClosed
from toolkit.services.derpserver import DerpServer
from toolkit.timing import DEFAULT
from toolkit.types import NodePublicKey

QUICK = DEFAULT.replace(derp_inactive_cleanup=0.4, derp_clean_stale_interval=0.1)


def node(rid: int, port: int, name: str = "") -> DERPNode:
    return DERPNode(name or f"{rid}a", rid, "127.0.0.1", ipv4="127.0.0.1", derp_port=port, scheme="http")


def two_region_map(s1: DerpServer, s2: DerpServer) -> DERPMap:
    return DERPMap(
        {
            1: DERPRegion(1, "one", "Region one", (node(1, s1.endpoints[0].port),)),
            2: DERPRegion(2, "two", "Region two", (node(2, s2.endpoints[0].port),)),
        }
    )


def preferred(server: DerpServer, key: NodePublicKey) -> bool | None:
    views = [c for c in server.clients() if c.key == key]
    return views[0].preferred if views else None


def test_home_switch_sends_note_preferred_and_packets_are_tagged() -> None:
    async def main() -> None:
        async with relay() as s1, relay() as s2:
            regions = DerpRegions(two_region_map(s1, s2), generate_node_key())
            my_key = regions.public_key
            await regions.set_home(1)
            assert regions.home_region == 1 and set(regions.clients) == {1}
            assert regions.clients[1].public_key == my_key
            await until(lambda: preferred(s1, my_key) is True, what="NotePreferred(true) at region 1")

            peer1 = DerpClient(s1.url(), generate_node_key(), reconnect=False)
            peer2 = DerpClient(s2.url(), generate_node_key(), reconnect=False)
            await peer1.connect()
            await peer2.connect()
            await regions.send(2, peer2.public_key, b"via region 2")  # dials region 2 on demand
            assert set(regions.clients) == {1, 2}
            assert await asyncio.wait_for(peer2.recv(), 5) == (my_key, b"via region 2")
            assert preferred(s2, my_key) is False

            await peer1.send(my_key, b"from 1")
            await peer2.send(my_key, b"from 2")
            got = {await asyncio.wait_for(regions.recv(), 5) for _ in range(2)}
            assert got == {(1, peer1.public_key, b"from 1"), (2, peer2.public_key, b"from 2")}

            await regions.set_home(2)
            await until(lambda: preferred(s2, my_key) is True, what="NotePreferred(true) at region 2")
            await until(lambda: preferred(s1, my_key) is False, what="NotePreferred(false) at region 1")
            assert regions.home_region == 2
            for client in (peer1, peer2):
                await client.close()
            await regions.close()

    run(main())


def test_idle_non_home_region_is_closed() -> None:
    async def main() -> None:
        async with relay() as s1, relay() as s2:
            regions = DerpRegions(two_region_map(s1, s2), generate_node_key(), timing=QUICK)
            await regions.set_home(1)
            peer2 = DerpClient(s2.url(), generate_node_key(), reconnect=False)
            await peer2.connect()
            for _ in range(3):  # writes keep region 2 open
                await regions.send(2, peer2.public_key, b"keep")
                await asyncio.sleep(0.2)
            assert set(regions.clients) == {1, 2}
            my_key = regions.public_key
            await until(lambda: set(regions.clients) == {1}, 2.0, "region 2 to be closed as idle")
            await until(lambda: preferred(s2, my_key) is None, 2.0, "the relay of region 2 to see us go")
            while await asyncio.wait_for(regions.next_event(), 5) != (2, RegionClosed("idle")):
                pass
            await asyncio.sleep(0.6)
            assert set(regions.clients) == {1}  # home is never closed as idle
            await peer2.close()
            await regions.close()

    run(main())


def test_region_falls_back_to_its_next_node_and_pick_home() -> None:
    async def main() -> None:
        async with relay() as s1:
            dead = node(1, free_tcp_port(), "1-dead")
            live = node(1, s1.endpoints[0].port, "1-live")
            derp_map = DERPMap(
                {
                    1: DERPRegion(1, "one", "Region one", (dead, live)),
                    2: DERPRegion(2, "two", "Region two", (node(2, free_tcp_port()),)),
                    3: DERPRegion(3, "three", "Avoided", (node(3, s1.endpoints[0].port),), avoid=True),
                }
            )
            regions = DerpRegions(derp_map, generate_node_key(), connect_timeout=2.0)
            await regions.set_home(1)
            assert regions.clients[1].target.port == s1.endpoints[0].port
            with pytest.raises(DerpConnectError, match="no relay of DERP region 2") as info:
                await regions.set_home(2)
            assert "connection refused" in str(info.value)
            assert regions.home_region == 1
            assert regions.pick_home({1: 0.030, 2: 0.025, 3: 0.001}) == 1  # within 10 ms: keep home
            assert regions.pick_home({1: 0.090, 2: 0.030}) == 2
            assert regions.pick_home({1: 0.090, 2: 0.030}, previous=None) == 2
            await regions.close()

    run(main())
