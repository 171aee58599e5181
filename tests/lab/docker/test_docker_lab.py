"""DockerLab end to end: RFC 5780 discovery from LAN hosts behind every preset nftables can express.

One lab holds one LAN per preset (router ``r<i>`` with the preset, host ``h<i>``) and an RFC 5780 STUN
server with two addresses on the internet, so the engine, images and compose project are set up once;
``natkit nat-type`` runs in every LAN host's container concurrently (issue 5: verification).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from toolkit.lab.docker import compose
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.docker.lab import DockerLab
from toolkit.lab.nat import PRESETS, Filtering, Mapping
from toolkit.lab.netns.nftables import inexpressible
from toolkit.lab.scenario import TopologyBuilder
from toolkit.lab.topology import ServiceSpec, Topology

PRESET_NAMES = [name for name, nat in PRESETS.items() if inexpressible(nat) is None]


def _topology() -> Topology:
    t = TopologyBuilder("docker-presets")
    for i, name in enumerate(PRESET_NAMES, start=1):
        lan = t.lan(f"lan{i}", index=i)
        t.nat_router(f"r{i}", lan=lan, nat=name)
        t.host(f"h{i}", lan)
    t.host("stun1", t.internet, v4="198.51.100.10", extra_v4=["198.51.100.11"], services=["stun-server"])
    return t.build()


def _remaining(engine: Engine, prefix: str) -> list[str]:
    label = f"label={compose.LABEL_LAB}={prefix}"
    return (
        engine.docker("ps", "-aq", "--filter", label).stdout.split()
        + engine.docker("network", "ls", "-q", "--filter", label).stdout.split()
    )


@pytest.mark.root
@pytest.mark.slow
def test_nat_type_from_lan_hosts_matches_each_preset(docker_engine: Engine, docker_images: Images) -> None:
    topo = _topology()
    prefix = f"nkd-{uuid.uuid4().hex[:6]}"
    lab = DockerLab(topo, name_prefix=prefix, engine=docker_engine, images=docker_images)

    async def scenario() -> dict[str, dict[str, object]]:
        async with lab:
            assert lab.status().up
            capture = await lab.open_capture("r1", "wan")
            runs = await asyncio.gather(
                *(
                    lab.run(
                        f"h{i}", ["natkit", "nat-type", "--format", "json", "--rto", "0.2", "198.51.100.10"], timeout=60
                    )
                    for i in range(1, len(PRESET_NAMES) + 1)
                )
            )
            await capture.aclose()
            # raw IPv4 packets (no link layer) leaving r1's WAN with its public source address
            wan_udp = [p.data for p in capture.packets if p.data[0] >> 4 == 4 and p.data[9] == 17]
            assert any(d[12:16] == bytes([203, 0, 113, 1]) for d in wan_udp)
            mappings = await lab.nat_table("r1")
            assert mappings and all(str(m.private.ip) == "192.168.1.10" for m in mappings)
            for name, r in zip(PRESET_NAMES, runs, strict=True):
                assert r.stdout.startswith("{"), f"{name}: exit {r.exit}, {r.stderr[-300:]}"
            return {name: json.loads(r.stdout) for name, r in zip(PRESET_NAMES, runs, strict=True)}

    try:
        verdicts = asyncio.run(scenario())
    finally:
        asyncio.run(lab.down())
    assert _remaining(docker_engine, prefix) == []
    for name, verdict in verdicts.items():
        nat = PRESETS[name]
        if nat.block_udp:
            assert verdict["udp_blocked"] is True, name
            continue
        assert verdict["behind_nat"] is True, name
        expected_filtering = Filtering.ENDPOINT_INDEPENDENT if nat.one_to_one else nat.filtering
        assert (verdict["mapping"], verdict["filtering"]) == (nat.mapping.value, expected_filtering.value), name
        assert nat.mapping is Mapping.ENDPOINT_INDEPENDENT or verdict["tailscale"] == "hard", name


@pytest.mark.root
def test_down_after_a_failed_up_leaves_nothing(docker_engine: Engine, docker_images: Images) -> None:
    t = TopologyBuilder("docker-fail")
    lan = t.lan("home1")
    t.nat_router("r1", lan=lan, nat="easy")
    t.host("alice", lan)
    t.host("stun1", t.internet, services=[ServiceSpec("stun-server", ("--listen", "192.0.2.1:3478"))])
    prefix = f"nkf-{uuid.uuid4().hex[:6]}"
    lab = DockerLab(t.build(), name_prefix=prefix, engine=docker_engine, images=docker_images)

    async def scenario() -> None:
        async with lab:  # the STUN server cannot bind an address the host does not have
            pytest.fail("up() should have failed")

    with pytest.raises(Exception, match="stun-server on stun1 did not start"):
        asyncio.run(scenario())
    assert _remaining(docker_engine, prefix) == []
