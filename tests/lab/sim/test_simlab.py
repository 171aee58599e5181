"""SimLab, the sim backend behind toolkit.lab.backend.Lab: every scenario in labs/ comes up, `natkit nat-type`
runs on a host, captures, NAT tables, logs, the virtual clock, and clear errors for what the sim cannot do."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from toolkit.codec.pcapio import transport
from toolkit.errors import UsageError
from toolkit.lab.backend import Packet as CapturedPacket
from toolkit.lab.registry import list_scenarios, load_topology, open_lab
from toolkit.lab.sim import SimLab
from toolkit.lab.topology import ServiceSpec


def _run(scenario: str, body: Callable[[SimLab], Awaitable[Any]], seed: int = 1) -> Any:
    async def main() -> Any:
        lab = open_lab(scenario, "sim", seed=seed)
        assert isinstance(lab, SimLab)
        async with lab:
            return await body(lab)

    return asyncio.run(main())


@pytest.mark.parametrize("scenario", [s.name for s in list_scenarios()])
def test_every_scenario_comes_up(scenario: str) -> None:
    async def body(lab: SimLab) -> None:
        status = lab.status()
        assert status.up and status.backend == "sim"
        assert {e.name for e in status.elements} == {
            *(h.name for h in lab.topology.hosts),
            *(r.name for r in lab.topology.routers),
        }
        stun = [s for s in lab.services if s.spec.kind == "stun-server"]
        # the default STUN server is RFC 5780 (A:P, A:Q, B:P, B:Q); dual-stack adds a basic one on v6
        assert stun and all(len(s.listening) == (1 if s.spec.args else 4) for s in stun)
        assert lab.world is not None
        server = str(lab.world.stun_endpoint())
        for node in lab.topology.nodes():
            result = await lab.run(node.name, ["natkit", "nat-type", server, "--format", "json"])
            report = json.loads(result.stdout) if result.stdout else {}
            nats = [r.nat for r in lab.topology.path_to_internet(node.name) if r.nat is not None]
            if any(n.block_udp for n in nats):
                assert result.exit == 1 and report["udp_blocked"] is True
            elif nats:
                assert result.ok and report["behind_nat"] is True
                assert report["mapping"] == nats[-1].mapping.value  # the outermost NAT is what the server sees
            else:
                assert result.ok and report["behind_nat"] is False

    _run(scenario, body)


def test_nat_type_text_capture_nat_table_and_logs() -> None:
    async def body(lab: SimLab) -> None:
        wan = await lab.open_capture("r2", "wan")
        result = await lab.run("bob", ["python", "-m", "toolkit", "nat-type", "198.51.100.10"])
        assert result.ok and "address-and-port-dependent" in result.stdout and "verdict:" in result.stdout
        assert wan.packets and all(isinstance(p, CapturedPacket) for p in wan.packets)
        sources = {transport_src(p.data) for p in wan.packets}
        assert all(ip in ("203.0.113.2", "198.51.100.10", "198.51.100.11") for ip in sources)
        table = await lab.nat_table("r2")
        assert len(table) >= 2 and all(
            m.remote is not None and m.proto == "udp" for m in table
        )  # hard: per destination
        assert all(m.expires_in is not None and 0 < m.expires_in <= 120 for m in table)
        await lab.sleep(121.0)
        assert await lab.nat_table("r2") == []
        assert lab.now() > 121.0
        lines = []

        async def read() -> None:
            async for line in lab.logs("stun1"):
                lines.append(line)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0)
        assert lines and lines[0].startswith("natkit stun-server: listening on udp 198.51.100.10:3478")
        await lab.down()
        await asyncio.wait_for(reader, 1.0)
        assert wan.closed

    _run("easy-hard", body)


def transport_src(raw: bytes) -> str:
    from toolkit.codec.pcapio import LINKTYPE_RAW, Record

    t = transport(Record(0.0, LINKTYPE_RAW, raw))
    assert t is not None
    return t.src.rsplit(":", 1)[0]


def test_router_logs_carry_nat_events_as_json() -> None:
    async def body(lab: SimLab) -> list[dict[str, Any]]:
        await lab.run("alice", ["natkit", "nat-type", "198.51.100.10:3478"])
        found: list[dict[str, Any]] = []

        async def read() -> None:
            async for line in lab.logs("r1"):
                found.append(json.loads(line))
                if len(found) >= 2:
                    return

        await asyncio.wait_for(read(), 1.0)
        return found

    records = _run("easy-easy", body)
    assert records[0]["kind"] == "transition" and records[0]["reason"] == "mapping-created"


def test_what_the_sim_cannot_do_is_a_clear_error() -> None:
    async def body(lab: SimLab) -> None:
        assert not lab.skipped  # every service kind runs in the sim
        with pytest.raises(UsageError, match="already runs"):
            await lab.start_service("control1", ServiceSpec("control-server"))
        with pytest.raises(UsageError, match="nat-type"):
            await lab.run("alice", ["ping", "198.51.100.10"])
        with pytest.raises(UsageError):
            await lab.run("alice", ["natkit", "nat-type", "--bogus"])
        with pytest.raises(UsageError, match=r"plain router|no router"):
            await lab.nat_table("alice")
        with pytest.raises(UsageError):
            await lab.open_capture("alice", "wan")

    _run("easy-easy", body)


def test_not_up_is_an_error_and_down_is_idempotent() -> None:
    async def main() -> None:
        lab = open_lab("easy-easy", "sim")
        with pytest.raises(UsageError, match="not up"):
            await lab.nat_table("r1")
        await lab.down()
        await lab.up()
        await lab.up()
        await lab.down()
        await lab.down()
        assert not lab.status().up

    asyncio.run(main())


def test_same_seed_same_capture_through_the_lab_interface() -> None:
    async def body(lab: SimLab) -> bytes:
        cap = await lab.open_capture("r2", "wan")
        await lab.run("bob", ["natkit", "nat-type", "198.51.100.10", "--hairpin"])
        from toolkit.lab.backend import pcap_bytes

        return pcap_bytes(cap.packets)

    assert _run("hard-hard", body, seed=9) == _run("hard-hard", body, seed=9)
    assert _run("hard-hard", body, seed=9) != _run("hard-hard", body, seed=10)


def test_realtime_sleep_follows_the_wall_clock() -> None:
    import time

    async def main() -> float:
        lab = SimLab(load_topology("easy-easy"), realtime=True)
        async with lab:
            started = time.perf_counter()
            await lab.sleep(0.3)
            assert lab.now() == pytest.approx(0.3)
            return time.perf_counter() - started

    assert 0.25 < asyncio.run(main()) < 2.0
