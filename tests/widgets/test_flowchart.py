"""FlowchartView and TraceFeed on a real sim lab: easy-easy with latency, two nodes, traffic, the feed as tracer."""

from __future__ import annotations

import asyncio
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import pytest

from toolkit.lab.noderun import first_peer, settled, start_pair, wait_until, with_latency
from toolkit.lab.registry import load_topology
from toolkit.lab.runreport import check_walk, walk_of
from toolkit.lab.sim import SimLab
from toolkit.sansio import peergraph
from toolkit.sansio.peergraph import CURRENT_COLOURS, SEED_COLOURS, State
from toolkit.sansio.trace import TraceRecord
from toolkit.sansio.tracejson import dumps_line
from toolkit.types import NodePublicKey
from toolkit.widgets import FlowchartView, TraceFeed
from toolkit.widgets.flowchart import TAKEN_COLOUR, mark_edge

SVG = "{http://www.w3.org/2000/svg}"


@dataclass
class Run:
    feed: TraceFeed
    view: FlowchartView
    pulled: list[TraceRecord]  # alice's records pulled through her NodeHandle
    pull_feed: TraceFeed


async def _run() -> Run:
    feed = TraceFeed()
    view = FlowchartView(feed, node="alice")  # subscribed before the lab makes its first record
    lab = SimLab(with_latency(load_topology("easy-easy")), tracer=feed)
    await lab.up()
    try:
        alice = (await start_pair(lab)).a
        pull_feed = TraceFeed()
        assert await pull_feed.pull(alice) > 0
        status = await wait_until(lab, alice, settled, 300.0)
        assert (first_peer(status) or {}).get("state") == "DirectActive"
        await lab.sleep(4.0)  # one heartbeat round on the direct path
        await pull_feed.pull(alice)  # only the records made since the first pull
        pulled = await alice.records()
    finally:
        await lab.down()
    return Run(feed, view, pulled, pull_feed)


@pytest.fixture(scope="module")
def run() -> Any:
    r = asyncio.run(_run())
    assert r.view.flush(20.0)
    yield r
    r.view.close()


def _node_group(svg: str, state: str) -> ET.Element:
    root = ET.fromstring(svg)
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if g.get("class") == "node" and title is not None and title.text == state:
            return g
    raise AssertionError(f"no node {state} in the SVG")


def _fill(svg: str, state: str) -> str | None:
    shape = _node_group(svg, state).find(f"{SVG}polygon")
    assert shape is not None
    return shape.get("fill")


def test_the_flowchart_ends_with_direct_active_highlighted(run: Run) -> None:
    view = run.view
    assert view.state == "DirectActive"
    svg = view.svg
    assert svg is not None and svg.startswith("<svg")
    assert _fill(svg, "DirectActive") == CURRENT_COLOURS[0]
    assert _fill(svg, "Start") == SEED_COLOURS[State.Start][0]  # the seed's own colours elsewhere
    assert _fill(svg, "DERPActive") == SEED_COLOURS[State.DERPActive][0]
    assert view.chart.value == svg  # the widget state holds the picture (a saved notebook shows it)
    assert view.chart.get_state()["value"] == svg
    assert "DirectActive" in view.title.value


def test_the_edge_just_taken_is_marked(run: Run) -> None:
    view = run.view
    assert view.taken is not None and view.taken.dst is State.DirectActive
    root = ET.fromstring(view.svg or "")
    marked = []
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        path = g.find(f"{SVG}path")
        if g.get("class") == "edge" and title is not None and path is not None and path.get("stroke") == TAKEN_COLOUR:
            marked.append(title.text)
    assert marked == [f"{view.taken.src.value}->DirectActive"]


def test_the_log_is_the_walk(run: Run) -> None:
    walk = walk_of(run.feed.records, "alice")
    assert view_walk(run.view) == list(walk.states)
    assert check_walk(walk.states) == []
    assert walk.states[-1] == "DirectActive" and "MonitorDirect" in walk.states
    assert list(walk.times[1:]) == [e.at for e in run.view.log]
    assert len(run.view.log_select.options) == len(run.view.log)  # the widget lists every entry
    assert run.view.log[0].t >= 0 and all(a.t <= b.t for a, b in zip(run.view.log, run.view.log[1:], strict=False))


def view_walk(view: FlowchartView) -> list[str]:
    return [view.log[0].edge.src.value] + [e.edge.dst.value for e in view.log]


def test_the_cause_of_analyze_responses_is_a_pong_and_dissects(run: Run) -> None:
    view = run.view
    entry = next(e for e in view.log if e.edge == peergraph.transition(State.MultiProbe))
    assert entry.cause is not None
    assert entry.cause.kind == "received" and entry.cause.detail.startswith("disco Pong")
    assert entry.cause.endpoint is not None and str(entry.cause.endpoint) == "203.0.113.2:41641"
    text = view.select(entry.index)
    assert "###[ disco Pong ]###" in text  # scapy's dissection of the disco plaintext
    assert "Pong" in view.packet.value and "0000  02 00" in text  # type 2 = Pong, in the hex dump
    view.log_select.value = entry.index  # what a click does
    assert "disco Pong" in view.packet.value


def test_a_wireguard_cause_dissects_as_wireguard(run: Run) -> None:
    entry = next(e for e in run.view.log if e.edge.label == peergraph.HEARTBEAT)
    assert entry.cause is not None and entry.cause.detail.startswith("WireGuard")
    assert "WireGuard" in run.view.select(entry.index)


def test_rendering_runs_off_the_calling_thread_and_never_blocks(run: Run) -> None:
    feed = TraceFeed()
    view = FlowchartView(feed, node="alice", min_interval=0.05)
    started = time.perf_counter()
    feed.extend(run.feed.records)  # every transition requests a render
    took = time.perf_counter() - started
    assert view.flush(20.0)
    assert view.renderer.renders >= 1 and view.renderer.last_render_s is not None
    assert threading.get_ident() not in view.renderer.render_threads
    edges = len(view.log)
    assert view.renderer.renders < edges  # requests coalesced
    assert took < edges * view.renderer.last_render_s  # the pushes did not wait for a render per edge
    assert view.state == "DirectActive" and _fill(view.svg or "", "DirectActive") == CURRENT_COLOURS[0]
    view.close()


def test_throttling_coalesces_rapid_updates() -> None:
    peer = NodePublicKey(bytes(range(32)))
    view = FlowchartView(node="alice", min_interval=0.1)
    loop = [peergraph.transition(State.DirectActive, peergraph.HEARTBEAT), peergraph.transition(State.MonitorDirect),
            peergraph.transition(State.DirectStable, peergraph.YES)]  # fmt: skip
    for i in range(100):
        view.add(loop[i % 3].record(float(i), "alice", peer))
    assert view.flush(20.0)
    assert view.renderer.requests >= 100
    assert view.renderer.renders <= 4, view.renderer.renders
    assert view.state == "MonitorDirect" and _fill(view.svg or "", "MonitorDirect") == CURRENT_COLOURS[0]
    assert len(view.log) == 100 and len(view.log_select.options) == 100
    view.close()


def test_render_now_is_synchronous() -> None:
    view = FlowchartView(node="alice")
    view.add(peergraph.transition(State.Start).record(1.0, "alice", NodePublicKey(bytes(32))))
    svg = view.render_now()
    assert threading.get_ident() in view.renderer.render_threads
    assert view.chart.value == svg and _fill(svg, "GetInfo") == CURRENT_COLOURS[0]
    view.close()


def test_mark_edge_tells_two_edges_between_the_same_states_apart() -> None:
    dot = mark_edge(peergraph.to_dot(), peergraph.transition(State.StayOnDERP, peergraph.CALL_ME_MAYBE))
    marked = [line for line in dot.splitlines() if "penwidth" in line]
    assert marked == [f'    StayOnDERP -> SendSTUN [label="{peergraph.CALL_ME_MAYBE}", style=dashed, '
                      f'color="{TAKEN_COLOUR}", fontcolor="{TAKEN_COLOUR}", penwidth=3];']  # fmt: skip
    unlabelled = mark_edge(peergraph.to_dot(), peergraph.transition(State.Start))
    assert f'    Start -> GetInfo [color="{TAKEN_COLOUR}"' in unlabelled


def test_the_feed_pulls_a_node_handle_and_reads_json_lines(run: Run) -> None:
    assert run.pull_feed.records == run.pulled  # two pulls, nothing twice, nothing lost
    from_pull = FlowchartView(run.pull_feed, node="alice")
    lines = [dumps_line(r) for r in run.pulled] + ["not json\n", "\n"]
    jsonl = TraceFeed.from_jsonl(lines)
    assert jsonl.bad_lines == 1 and len(jsonl) == len(run.pulled)
    from_json = FlowchartView(jsonl, node="alice")
    assert view_walk(from_pull) == view_walk(from_json) == list(walk_of(run.pulled, "alice").states)
    for v in (from_pull, from_json):
        v.close()


def test_a_failing_subscriber_does_not_stop_the_feed() -> None:
    feed = TraceFeed()
    seen: list[TraceRecord] = []

    def broken(record: TraceRecord) -> None:
        raise RuntimeError("a widget bug")

    feed.subscribe(broken)
    unsubscribe = feed.subscribe(seen.append)
    record = peergraph.transition(State.Start).record(0.0, "alice")
    feed(record)
    assert seen == [record] and feed.errors == 1 and isinstance(feed.last_error, RuntimeError)
    unsubscribe()
    feed(record)
    assert seen == [record] and feed.subscribers == 1


def test_a_saved_notebook_keeps_the_last_picture() -> None:
    """In a real kernel (top-level await on the kernel's loop, renders from the worker thread), the widget
    state nbclient saves holds the final SVG: DirectActive highlighted."""
    import nbclient
    import nbformat

    code = [
        "from toolkit.lab.noderun import first_peer, settled, wait_until, with_latency\n"
        "from toolkit.lab.registry import load_topology\n"
        "from toolkit.lab.sim import SimLab\n"
        "from toolkit.widgets import FlowchartView, TraceFeed\n"
        "feed = TraceFeed()\n"
        'lab = SimLab(with_latency(load_topology("easy-easy")), tracer=feed)\n'
        'view = FlowchartView(feed, "alice")\n'
        "view",
        "await lab.up()\n"
        'a = await lab.start_node("alice")\n'
        'b = await lab.start_node("bob")\n'
        "st = await wait_until(lab, a, lambda s: first_peer(s) is not None, 60)\n"
        'await a.start_traffic(str(first_peer(st)["tunnel_ips"][0]))\n'
        "await wait_until(lab, a, settled, 300)\n"
        "await lab.down()\n"
        "assert view.flush(20)\n"
        "print(view.state)",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in code])
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True).execute()
    assert nb.cells[1].outputs[0]["text"] == "DirectActive\n"
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    svgs = [m["state"]["value"] for m in state.values() if str(m["state"].get("value", "")).startswith("<svg")]
    assert len(svgs) == 1 and _fill(svgs[0], "DirectActive") == CURRENT_COLOURS[0]
