"""The run report reads flowchart walks out of trace records (toolkit/lab/runreport.py)."""

from __future__ import annotations

import json

from toolkit.lab.runreport import RunReport, check_walk, time_to_direct, walk_of
from toolkit.sansio import peergraph as pg
from toolkit.sansio.trace import TraceRecord
from toolkit.types import NodePublicKey

BOB = NodePublicKey(bytes(range(32)))
CAROL = NodePublicKey(bytes(32 * [7]))

UPGRADE = [
    (pg.S.Start, pg.NEXT), (pg.S.GetInfo, pg.NO), (pg.S.QueryControl, pg.NEXT), (pg.S.StoreInfo, pg.NEXT),
    (pg.S.CheckDirect, pg.BEHIND_NAT), (pg.S.StartDERP, pg.NEXT), (pg.S.DERPActive, pg.NEXT),
    (pg.S.StartDisco, pg.NEXT), (pg.S.SendSTUN, pg.NEXT), (pg.S.MultiProbe, pg.NEXT),
    (pg.S.AnalyzeResponses, pg.YES), (pg.S.ValidatePath, pg.NEXT), (pg.S.PathGood, pg.YES),
    (pg.S.EstablishDirect, pg.NEXT), (pg.S.MigrateDirect, pg.NEXT), (pg.S.MonitorDirect, pg.NEXT),
    (pg.S.DirectStable, pg.YES), (pg.S.DirectActive, pg.HEARTBEAT), (pg.S.MonitorDirect, pg.NEXT),
    (pg.S.DirectStable, pg.YES),
]  # fmt: skip


def records(node: str = "alice", peer: NodePublicKey = BOB, start: float = 1.0) -> list[TraceRecord]:
    out = [TraceRecord(start - 0.5, node, peer, "sent", "Ping", None, b"x")]
    for i, (state, label) in enumerate(UPGRADE):
        out.append(pg.transition(state, label).record(start + i * 0.01, node, peer))
    return out


def test_walk_reads_the_edges_in_order_and_skips_other_machines() -> None:
    recs = records()
    recs.insert(3, TraceRecord(1.0, "alice", BOB, "transition", "Zeroed -> InitiationSent", "send"))
    recs += records("bob", CAROL)
    walk = walk_of(recs, "alice")
    assert walk.states[:3] == ("Start", "GetInfo", "QueryControl")
    assert walk.states[-3:] == ("MonitorDirect", "DirectStable", "DirectActive")
    assert len(walk.states) == len(UPGRADE) + 1
    assert check_walk(walk.states) == []
    assert walk.peer == BOB.text()


def test_check_walk_names_a_missing_edge() -> None:
    assert check_walk(["Start", "GetInfo", "DirectActive"]) == ["no edge GetInfo -> DirectActive"]
    assert check_walk(["GetInfo"]) == ["the walk starts at GetInfo, not Start"]


def test_time_to_direct_counts_from_the_first_packet() -> None:
    recs = records(start=10.0)
    walk = walk_of(recs, "alice")
    direct_at = 10.0 + UPGRADE.index((pg.S.DirectStable, pg.YES)) * 0.01
    assert abs(time_to_direct(recs, walk) - (direct_at - 9.5)) < 1e-9  # type: ignore[operator]
    never = walk_of(records()[:8], "alice")
    assert time_to_direct(records()[:8], never) is None


def test_report_json_and_text() -> None:
    walk = walk_of(records(), "alice")
    report = RunReport("easy-easy", "sim", "direct", walk.states[-1], 0.2, list(walk.states), expect="direct")
    obj = json.loads(report.dumps())
    assert {"scenario", "backend", "final_path", "final_state", "time_to_direct_s", "states"} <= obj.keys()
    assert obj["ok"] is True
    text = report.format()
    assert "DirectActive (heartbeat x1)" in text and ": ok" in text.splitlines()[0]
    report.expect = "derp"
    assert not report.ok and "FAILED" in report.format()
