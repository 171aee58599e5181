"""TopologyView on real sim labs: easy-easy ends direct, hard-hard stays on DERP, same-lan goes local."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from toolkit.lab.noderun import first_peer, settled, start_pair, wait_until, with_latency
from toolkit.lab.registry import load_topology
from toolkit.lab.sim import SimLab
from toolkit.widgets import TopologyView, TraceFeed
from toolkit.widgets.topology import PATH_STYLE

SVG = "{http://www.w3.org/2000/svg}"


async def _run(scenario: str) -> tuple[TopologyView, dict[str, Any]]:
    """The scenario with two nodes and traffic until alice settles (+ 2 s); the view and alice's last status."""
    feed = TraceFeed()
    lab = SimLab(with_latency(load_topology(scenario)), tracer=feed)
    view = TopologyView(lab, feed)
    await lab.up()
    try:
        alice = (await start_pair(lab)).a
        await wait_until(lab, alice, settled, 300.0)
        await lab.sleep(2.0)
        status = await alice.status()
    finally:
        await lab.down()
    assert view.flush(20.0)
    return view, status


@pytest.fixture(scope="module")
def easy() -> Any:
    view, status = asyncio.run(_run("easy-easy"))
    yield view, status
    view.close()


def _path_edges(svg: str) -> dict[str, tuple[str, str | None]]:
    """The edges between two node boxes in the SVG: title -> (label, stroke colour)."""
    out = {}
    for g in ET.fromstring(svg).iter(f"{SVG}g"):
        title, text, path = g.find(f"{SVG}title"), g.find(f"{SVG}text"), g.find(f"{SVG}path")
        if g.get("class") == "edge" and title is not None and "seg:" not in (title.text or ""):
            assert text is not None and path is not None
            out[title.text or ""] = (text.text or "", path.get("stroke"))
    return out


def test_easy_easy_shows_alice_bob_direct(easy: Any) -> None:
    view, _ = easy
    assert view.path("alice", "bob") == "direct" and view.path("bob", "alice") == "direct"
    info = view.paths()[("alice", "bob")]
    assert info.state == "DirectActive" and info.endpoint == "203.0.113.2:41641"  # bob's NAT mapping
    edges = _path_edges(view.svg or "")
    assert edges == {"alice--bob": ("direct", PATH_STYLE["direct"][0])}
    assert "NAT easy" in (view.svg or "") and ">derp1<" in (view.svg or "")
    assert "<b>direct</b>" in view.table.value and view.chart.value == view.svg


def test_update_from_status_gives_the_same_paths(easy: Any) -> None:
    view, status = easy
    fresh = TopologyView(view.topology)  # no feed: the status alone
    fresh.update_from_status("alice", status)
    assert fresh.path("alice", "bob") == "direct"
    assert fresh.paths()[("alice", "bob")].endpoint == view.paths()[("alice", "bob")].endpoint
    assert fresh.names[status["self"]["node_key"]] == "alice"
    fresh.render_now()
    assert _path_edges(fresh.svg or "") == {"alice--bob": ("alice→bob: direct", PATH_STYLE["direct"][0])}
    fresh.close()


def test_hard_hard_stays_on_derp() -> None:
    view, status = asyncio.run(_run("hard-hard"))
    assert (first_peer(status) or {}).get("state") == "StayOnDERP"
    assert view.path("alice", "bob") == "derp" and view.path("bob", "alice") == "derp"
    assert _path_edges(view.svg or "") == {"alice--bob": ("derp", PATH_STYLE["derp"][0])}
    assert "NAT hard" in (view.svg or "")
    view.close()


def test_same_lan_goes_local() -> None:
    view, _ = asyncio.run(_run("same-lan"))
    assert view.path("alice", "bob") == "local"
    assert view.paths()[("alice", "bob")].endpoint == "192.168.1.11:41641"
    view.close()
