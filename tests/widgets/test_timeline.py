"""Timeline on a real SimLab (easy-easy): alice and bob go direct while alice/eth0, r1/wan, derp1/eth0, r2/wan
and bob/eth0 are captured; lanes, hops, DERP crossings, transitions after the packets behind them, the
render thread, throttling, the time window and the widget's saved state."""

from __future__ import annotations

import asyncio
import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytest

from toolkit.lab.backend import Capture
from toolkit.lab.noderun import first_peer, settled, start_pair, wait_until, with_latency
from toolkit.lab.registry import load_topology
from toolkit.lab.sim import SimLab
from toolkit.packets.keyring import Keyring
from toolkit.sansio.trace import TraceRecord
from toolkit.widgets.feed import TraceFeed
from toolkit.widgets.packets import Row
from toolkit.widgets.timeline import INTERNET_LANE, Arrow, Mark, Timeline

LANES = ["alice", "r1", INTERNET_LANE, "derp1", "r2", "bob"]
YES = "AnalyzeResponses -[Yes]-> ValidatePath"


@dataclass
class Run:
    lab: SimLab
    timeline: Timeline
    feed: TraceFeed
    captures: list[Capture]
    state: str | None
    analysed_on: set[int]  # threads that dissected packets (inspector.extend calls)


async def _run() -> Run:
    feed = TraceFeed()
    lab = SimLab(with_latency(load_topology("easy-easy")), seed=1, tracer=feed)
    analysed_on: set[int] = set()
    async with lab:
        timeline = Timeline(lab, feed=feed)
        extend = timeline.inspector.extend

        def spy(*args: Any, **kwargs: Any) -> list[Row]:  # where the dissection runs (the real extend does it)
            analysed_on.add(threading.get_ident())
            return extend(*args, **kwargs)

        timeline.inspector.extend = spy  # type: ignore[method-assign]
        captures = await timeline.watch()
        pair = await start_pair(lab)  # alice and bob, known to each other, alice pinging bob's tunnel address
        alice, traffic = pair.a, pair.traffic
        status = await wait_until(lab, alice, settled, 120.0)
        await lab.sleep(1.0)
        await traffic.stop()
        await timeline.stop()
    return Run(lab, timeline, feed, captures, (first_peer(status) or {}).get("state"), analysed_on)


@pytest.fixture(scope="module")
def run() -> Run:
    return asyncio.run(_run())


def _drawn(svg: str) -> list[tuple[str, dict[str, str], str]]:
    """The lanes, arrows and marks of an SVG in drawing order: (class, attributes, tooltip and label)."""
    root = ET.fromstring(svg)  # well-formed XML: every label escaped
    out = []
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        cls = g.get("class", "")
        text = "".join(t.text or "" for t in g if t.tag.rsplit("}", 1)[-1] in ("title", "text"))
        out.append((cls, dict(g.attrib), text))
    return out


def _arrows_with(timeline: Timeline, *words: str) -> list[Arrow]:
    return [a for a in timeline.arrows if all(w in a.summary for w in words)]


def test_lanes_in_order(run: Run) -> None:
    assert run.state == "DirectActive"
    assert run.timeline.lanes == LANES
    svg = run.timeline.svg
    assert svg is not None
    assert [attrs["data-lane"] for cls, attrs, _ in _drawn(svg) if cls == "lane"] == LANES
    # without the routers the internet sits between the two hosts
    assert Timeline(run.lab, [("alice", "eth0"), ("bob", "eth0")]).lanes == ["alice", INTERNET_LANE, "bob"]
    assert Timeline(run.lab, [("r1", "wan"), ("r2", "wan")]).lanes == ["r1", INTERNET_LANE, "r2"]


def test_hops_from_addresses_and_topology(run: Run) -> None:
    tl = run.timeline
    assert tl.hop("alice/eth0", "192.168.1.10", "198.51.100.10") == ("alice", "r1")  # to a public IP: its NAT
    assert tl.hop("alice/eth0", "198.51.100.20", "192.168.1.10") == ("r1", "alice")
    assert tl.hop("r1/wan", "203.0.113.1", "198.51.100.20") == ("r1", "derp1")
    assert tl.hop("r1/wan", "203.0.113.1", "198.51.100.10") == ("r1", INTERNET_LANE)  # stun1 is not a lane
    assert tl.hop("r2/wan", "203.0.113.1", "203.0.113.2") == ("r1", "r2")  # direct, NAT to NAT
    assert tl.hop("bob/eth0", "203.0.113.1", "192.168.2.10") == ("r2", "bob")
    narrow = Timeline(run.lab, [("alice", "eth0"), ("bob", "eth0")])
    assert narrow.hop("alice/eth0", "192.168.1.10", "198.51.100.20") == ("alice", INTERNET_LANE)


def test_first_stun_goes_alice_r1_internet_and_back(run: Run) -> None:
    stun = [a for a in run.timeline.arrows if a.protocol == "stun"]
    request = [a for a in stun if "Binding Request" in a.summary]
    first_out = next(a for a in request if a.points == ("alice/eth0",))
    assert (first_out.src, first_out.dst) == ("alice", "r1")
    nat = next(a for a in request if a.points == ("r1/wan",))
    assert (nat.src, nat.dst) == ("r1", INTERNET_LANE) and nat.t > first_out.t
    answer = [
        (a.src, a.dst)
        for a in stun
        if "Success" in a.summary and "xor-mapped 203.0.113.1:" in a.summary and a.t > nat.t
    ]
    assert answer[:2] == [(INTERNET_LANE, "r1"), ("r1", "alice")]
    # drawn in that order, in the STUN colour
    alices = {("alice", "r1"), ("r1", INTERNET_LANE), (INTERNET_LANE, "r1"), ("r1", "alice")}
    drawn = [(attrs["data-src"], attrs["data-dst"]) for cls, attrs, _ in _drawn(run.timeline.svg or "")
             if cls == "arrow" and attrs["data-protocol"] == "stun"]  # fmt: skip
    drawn = [hop for hop in drawn if hop in alices]
    assert drawn[:4] == [("alice", "r1"), ("r1", INTERNET_LANE), (INTERNET_LANE, "r1"), ("r1", "alice")]
    assert 'stroke="#1976d2"' in run.timeline.svg  # type: ignore[operator]


def test_call_me_maybe_crosses_derp(run: Run) -> None:
    cmm = _arrows_with(run.timeline, "CallMeMaybe", "from alice to bob")
    hops = [(a.src, a.dst) for a in cmm]
    assert hops[:4] == [("alice", "r1"), ("r1", "derp1"), ("derp1", "r2"), ("r2", "bob")]
    assert all(a.protocol == "derp" for a in cmm)
    assert "SendPacket to bob" in cmm[1].summary and "RecvPacket from alice" in cmm[2].summary
    assert set(cmm[1].points) == {"r1/wan", "derp1/eth0"}  # one packet seen at both ends of a segment: one arrow
    assert cmm[2].t > cmm[1].t
    svg_hops = [(attrs["data-src"], attrs["data-dst"]) for cls, attrs, text in _drawn(run.timeline.svg or "")
                if cls == "arrow" and "CallMeMaybe 2 endpoints from alice" in text]  # fmt: skip
    assert svg_hops[:4] == hops[:4]


def test_pong_is_drawn_before_the_edge_it_causes(run: Run) -> None:
    tl = run.timeline
    mark = next(m for m in tl.marks if m.lane == "alice" and m.label == YES)
    received = [r for r in run.feed.of_node("alice") if r.kind == "received" and r.detail.startswith("disco Pong")]
    cause = [r for r in received if r.at <= mark.t][-1]  # the Pong that made AnalyzeResponses say yes
    tx = re.search(r"tx=([0-9a-f]{4})", cause.detail)
    assert tx is not None, cause.detail
    pong = next(a for a in tl.arrows if a.points == ("alice/eth0",) and f"disco Pong tx={tx.group(1)}" in a.summary)
    assert (pong.src, pong.dst) == ("r1", "alice") and pong.t <= mark.t
    events = tl.events()
    assert events.index(pong) < events.index(mark)
    drawn = _drawn(tl.svg or "")
    at_mark = next(i for i, (cls, attrs, _) in enumerate(drawn) if cls == "mark" and attrs["data-edge"] == YES
                   and attrs["data-lane"] == "alice")  # fmt: skip
    at_pong = next(i for i, (cls, _, text) in enumerate(drawn) if cls == "arrow"
                   and f"disco Pong tx={tx.group(1)}" in text and "from bob to alice" in text)  # fmt: skip
    assert at_pong < at_mark
    assert {m.lane for m in tl.marks} == {"alice", "bob"}
    assert all(isinstance(m, Mark) for m in tl.marks)


def test_rendering_and_dissection_run_off_the_event_loop(run: Run) -> None:
    tl = run.timeline
    main = threading.get_ident()
    assert run.analysed_on and main not in run.analysed_on
    assert tl.renderer.renders >= 1 and main not in tl.renderer.render_threads
    assert tl.renderer.last_error is None
    assert len(tl.arrows) > 200 and tl.skipped > 0  # bare ACKs hidden
    assert tl.svg is not None and tl.svg.count('class="arrow"') == len(tl.arrows)
    assert tl.svg.count('class="mark"') == len(tl.marks) >= 10


def test_widget_state_holds_the_last_svg(run: Run) -> None:
    tl = run.timeline
    assert tl.chart.get_state()["value"] == tl.svg
    assert tl.chart in tl.widget.children and f"{len(tl.arrows)} packets" in tl.title.value
    assert "application/vnd.jupyter.widget-view+json" in tl._repr_mimebundle_()


def test_window_first_last_and_time_range(run: Run) -> None:
    everything = run.timeline.arrows
    tl = Timeline(run.lab, keyring=Keyring(), window=10)
    for capture in run.captures:
        tl.add(capture)
    svg = tl.render_now()
    assert svg.count('class="arrow"') == 10
    assert [a for a in tl.events() if isinstance(a, Arrow)] == [a for a in tl.arrows[:10]]
    tl.set_window(-5)
    assert tl.flush()
    assert tl.svg is not None and tl.svg.count('class="arrow"') == 5
    t0 = everything[0].t
    tl.set_window((0.2, 0.25))
    assert tl.flush()
    shown = tl.events()
    assert shown and all(0.2 <= e.t - t0 <= 0.25 for e in shown)
    assert tl.svg is not None and tl.svg.count('class="arrow"') == sum(isinstance(e, Arrow) for e in shown)
    tl.close()


def test_rapid_adds_coalesce(run: Run) -> None:
    captured = [(p, f"{c.element}/{c.interface}") for c in run.captures for p in c.packets]
    packets = (captured * 2)[:500]
    assert len(captured) > 250 and len(packets) == 500
    tl = Timeline(run.lab, keyring=Keyring(), min_interval=0.1)
    for packet, point in packets:  # one packet at a time, as a live capture delivers them
        tl.add([packet], point)
    assert tl.renderer.requests >= 501
    assert tl.flush()
    assert tl.renderer.renders <= 5
    assert tl.svg is not None and tl.svg.count('class="arrow"') == len(tl.arrows) > 200
    tl.add(TraceRecord(0.3, "alice", None, "transition", "Start -> GetInfo"))
    tl.add(TraceRecord(0.3, "stun1", None, "transition", "Start -> GetInfo"))  # not a lane: no mark
    tl.add(TraceRecord(0.3, "alice", None, "transition", "Zeroed -> InitiationSent"))  # WireGuard's machine
    assert tl.flush()
    assert [m.label for m in tl.marks] == ["Start -> GetInfo"] and tl.svg.count('class="mark"') == 1
    tl.close()
