"""NatTableView on a real SimLab: r1's mapping of alice's node port once the nodes went direct, ages on the
lab's clock, a flushed mapping starting over, per-destination mappings of a hard NAT, following live."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from toolkit.errors import UsageError
from toolkit.lab.noderun import first_peer, settled, wait_until, with_latency
from toolkit.lab.registry import load_topology
from toolkit.lab.sim import SimLab
from toolkit.widgets.nattable import COLUMNS, NatTableView

NODE_PORT = 41641


def _with_nodes(scenario: str, body: Callable[[SimLab], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        lab = SimLab(with_latency(load_topology(scenario)), seed=1)
        async with lab:
            alice = await lab.start_node("alice")
            await lab.start_node("bob")
            known = await wait_until(lab, alice, lambda s: first_peer(s) is not None, 60.0)
            await alice.start_traffic(str(first_peer(known)["tunnel_ips"][0]))  # type: ignore[index]
            status = await wait_until(lab, alice, settled, 120.0)
            return await body(lab, (first_peer(status) or {}).get("path"))  # type: ignore[call-arg]

    return asyncio.run(main())


def test_r1_shows_alices_node_mapping_after_direct() -> None:
    async def body(lab: SimLab, path: str) -> None:
        assert path == "direct"
        view = NatTableView(lab, "r1")
        view.widget  # noqa: B018
        await view.refresh()
        (row,) = view.find(NODE_PORT)
        assert str(row.inside) == "192.168.1.10:41641"
        assert str(row.outside) == "203.0.113.1:41641"  # an easy NAT keeps the port
        assert row.remote is None and row.age == 0.0
        assert row.timeout is not None and 0 < row.timeout <= 120.0
        assert any(r.proto == "tcp" for r in view.rows)  # DERP and control connections
        await lab.sleep(2.0)
        await view.refresh()
        (later,) = view.find(NODE_PORT)
        assert later.age == pytest.approx(2.0)
        assert later.timeout is not None and later.timeout > 100  # the direct traffic keeps it fresh
        assert "192.168.1.10:41641" in view.widget.value and "203.0.113.1:41641" in view.widget.value
        assert view.text().splitlines()[0].split() == list(COLUMNS)
        assert "192.168.1.10:41641  203.0.113.1:41641  any     2.0s" in view.text()
        # a flushed mapping is gone; when traffic makes it again it is a new one: its age starts over
        await lab.flush_nat("r1")
        await view.refresh()
        assert view.find(NODE_PORT) == []
        await lab.sleep(0.5)
        await view.refresh()
        (fresh,) = view.find(NODE_PORT)
        assert fresh.age == 0.0

    _with_nodes("easy-easy", body)


def test_hard_nat_mappings_name_their_remote() -> None:
    async def body(lab: SimLab, path: str) -> None:
        assert path == "derp"
        rows = await NatTableView(lab, "r1").refresh()
        node = [r for r in rows if r.proto == "udp" and r.inside.port == NODE_PORT]
        assert len(node) >= 2 and all(r.remote is not None for r in node)  # one mapping per destination
        assert len({r.outside for r in node}) == len(node)  # endpoint-dependent: a port per destination

    _with_nodes("hard-hard", body)


def test_follow_refreshes_until_stopped_and_plain_hosts_are_refused() -> None:
    async def body(lab: SimLab, path: str) -> None:
        view = NatTableView(lab, "r2")
        task = view.follow(0.01)
        assert view.follow(0.01) is task  # one follower per view
        await asyncio.sleep(0.05)
        n = view.refreshes
        assert n >= 2 and view.find(NODE_PORT)
        await lab.sleep(1.0)
        await asyncio.sleep(0.05)
        assert view.refreshed_at == pytest.approx(lab.now()) and view.find(NODE_PORT)[0].age == pytest.approx(1.0)
        await view.stop()
        assert task.done()
        stopped = view.refreshes
        await asyncio.sleep(0.05)
        assert view.refreshes == stopped
        with pytest.raises(UsageError):
            await NatTableView(lab, "alice").refresh()

    _with_nodes("easy-easy", body)
