"""netcheck against real STUN servers: coturn on 127.0.0.1 (+ ::1), 127.0.0.2 and 127.0.0.3 as three regions.

The IPv6 target is coturn itself (``--listening-ip=::1`` next to 127.0.0.1). A fourth region points at
127.0.0.4, where nothing listens: it gets no latency and the report still comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.coturn import Coturn, start_coturn
from tests.support import free_udp_port
from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.trace import TraceLog
from toolkit.services.netcheck import NetcheckClient, netcheck
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

LIVE = (1, 2, 3)
DEAD = 4


@contextlib.contextmanager
def stun_regions(tmp: Path) -> Iterator[dict[str, Any]]:
    """Three coturn instances and the Tailscale-shaped DERP map (a dict) that names them, plus a dead region."""
    run = contextlib.contextmanager(start_coturn)
    with contextlib.ExitStack() as stack:
        one: Coturn = stack.enter_context(run(tmp, ["127.0.0.1"], extra=["--listening-ip=::1"]))
        two: Coturn = stack.enter_context(run(tmp, ["127.0.0.2"]))
        three: Coturn = stack.enter_context(run(tmp, ["127.0.0.3"]))
        dead_port = free_udp_port("127.0.0.4")

        def reg(rid: int, code: str, name: str, node: dict[str, Any]) -> dict[str, Any]:
            node = {"Name": f"{rid}a", "RegionID": rid, **node}
            return {"RegionID": rid, "RegionCode": code, "RegionName": name, "Nodes": [node]}

        yield {
            "Regions": {
                "1": reg(1, "one", "Lab one", {"HostName": "one.lab", "IPv4": "127.0.0.1", "IPv6": "::1", "STUNPort": one.port}),
                "2": reg(2, "two", "Lab two", {"HostName": "127.0.0.2", "STUNPort": two.port}),
                "3": reg(3, "thr", "Lab three", {"HostName": "three.lab", "IPv4": "127.0.0.3", "IPv6": "none", "STUNPort": three.port}),
                "4": reg(4, "ded", "Dead region", {"HostName": "dead.lab", "IPv4": "127.0.0.4", "IPv6": "none", "STUNPort": dead_port}),
            }
        }  # fmt: skip


@pytest.fixture(scope="module")
def lab_map(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DERPMap]:
    with stun_regions(tmp_path_factory.mktemp("coturn")) as obj:
        yield DERPMap.from_obj(obj)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_three_regions_v6_and_a_dead_region(lab_map: DERPMap) -> None:
    log = TraceLog()
    timing = DEFAULT.replace(netcheck_stun_probe_timeout=1.0)

    async def main() -> tuple[Any, list[Endpoint], float]:
        # enough_regions=100 (Tailscale's verbose mode): wait for every region, so the dead one ends the run
        async with NetcheckClient(lab_map, timing=timing, tracer=log, enough_regions=100) as client:
            t0 = time.monotonic()
            report = await client.get_report()
            return report, client.local_endpoints(), time.monotonic() - t0

    report, (local4, local6), took = run(main())
    assert 1.0 <= took < 2.5  # the dead region kept the run open until the STUN probe timeout
    assert report.udp and report.ipv4 and report.ipv6 and report.os_has_ipv6
    assert report.ipv4_can_send and report.ipv6_can_send
    assert report.global_v4 == Endpoint.parse(f"127.0.0.1:{local4.port}")
    assert report.global_v6 == Endpoint.parse(f"[::1]:{local6.port}")
    assert sorted(report.region_latency) == list(LIVE) and DEAD not in report.region_latency
    assert sorted(report.region_v4_latency) == list(LIVE) and sorted(report.region_v6_latency) == [1]
    assert all(0 < d < 0.5 for d in report.region_latency.values())
    assert report.mapping_varies_by_dest_ip is False  # every server saw the same 127.0.0.1:port
    assert report.global_v4_counters[report.global_v4] >= 3
    fastest = min(report.region_latency, key=lambda r: (report.region_latency[r], r))
    assert report.preferred_derp == fastest
    assert report.now is not None and report.full
    # the dead region got its three tries at 0, 100 and 200 ms; the live ones one probe each
    sent = log.of_kind("sent")
    to_dead = [r.at for r in sent if r.endpoint is not None and str(r.endpoint.ip) == "127.0.0.4"]
    assert len(to_dead) == 3 and 0.2 - 1e-3 <= to_dead[2] - to_dead[0] < 0.6
    received = log.of_kind("received")  # 3 v4 + 1 v6 (more only if a reply took over 100 ms)
    assert len(received) >= 4 and all(len(r.raw) >= 32 and r.endpoint is not None for r in received)


def test_default_stop_rule_does_not_wait_for_the_dead_region(lab_map: DERPMap) -> None:
    t0 = time.monotonic()
    report = run(netcheck(lab_map))
    took = time.monotonic() - t0
    assert took < 1.5, took  # three regions answered: it stopped long before the 3 s STUN probe timeout
    assert sorted(report.region_latency) == list(LIVE)  # the three that answered; the dead one has none
    assert report.udp and report.global_v4 is not None


def test_second_report_is_incremental_and_keeps_history(lab_map: DERPMap) -> None:
    async def main() -> list[Any]:
        async with NetcheckClient(lab_map) as client:
            first = await client.get_report()
            second = await client.get_report()
            assert client.history == [first, second]
            return [first, second]

    first, second = run(main())
    assert first.full and not second.full
    assert second.udp and second.preferred_derp in LIVE and second.global_v4 == first.global_v4


def test_a_node_socket_can_carry_the_probes(lab_map: DERPMap) -> None:
    """The node's own socket (send= and receive_datagram), as magicsock shares its socket with netcheck."""

    async def main() -> tuple[Any, int, int]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        client = NetcheckClient(lab_map, send=lambda data, dst: sock.sendto(data, dst.as_tuple()), have_v6=False)
        other = 0

        def readable() -> None:
            nonlocal other
            data, addr = sock.recvfrom(2048)
            if not client.receive_datagram(data, Endpoint.parse(f"{addr[0]}:{addr[1]}")):
                other += 1  # the node's demux would hand it to disco or WireGuard

        loop.add_reader(sock.fileno(), readable)
        try:
            async with client:
                report = await client.get_report()
        finally:
            loop.remove_reader(sock.fileno())
            port = sock.getsockname()[1]
            sock.close()
        return report, port, other

    report, port, other = run(main())
    assert report.global_v4 == Endpoint.parse(f"127.0.0.1:{port}") and other == 0
    assert not report.ipv6 and report.region_v6_latency == {}


def test_host_names_are_resolved(tmp_path: Path) -> None:
    with contextlib.contextmanager(start_coturn)(tmp_path, ["127.0.0.1"], extra=["--listening-ip=::1"]) as server:
        dm = DERPMap.from_obj(
            {
                "Regions": {
                    "7": {
                        "RegionID": 7,
                        "RegionCode": "loc",
                        "RegionName": "localhost",
                        "Nodes": [{"Name": "7a", "HostName": "localhost", "STUNPort": server.port}],
                    }
                }
            }
        )
        report = run(netcheck(dm, enough_regions=100))
    assert report.region_v4_latency.keys() == {7}
    assert report.global_v4 is not None and str(report.global_v4.ip) == "127.0.0.1"
    if report.region_v6_latency:  # /etc/hosts may or may not list ::1 as localhost
        assert report.global_v6 is not None and str(report.global_v6.ip) == "::1"


def test_no_sockets_means_udp_false_at_once(lab_map: DERPMap) -> None:
    report = run(netcheck(lab_map, bind_v4=None, bind_v6=None))
    assert not report.udp and not report.ipv4_can_send and not report.ipv6_can_send
    assert report.region_latency == {} and report.preferred_derp == 0
