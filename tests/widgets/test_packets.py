"""PacketInspector on a real SimLab (easy-easy): two nodes go direct while r1's wan and alice's eth0 are
captured; the rows, filters, the dissection of a selected row with disco opened, pcap export, throttling."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit.codec import pcapio
from toolkit.errors import UsageError
from toolkit.lab.backend import Capture
from toolkit.lab.noderun import first_peer, settled, start_pair, wait_until, with_latency
from toolkit.lab.registry import load_topology
from toolkit.lab.sim import SimLab
from toolkit.packets.keyring import Keyring, keys_path_for
from toolkit.packets.sniffer import read_file
from toolkit.packets.wgopen import WireGuardSession
from toolkit.widgets.packets import PROTOCOLS, PacketInspector, Row

POINTS = ("r1/wan", "alice/eth0")


@dataclass
class Run:
    inspector: PacketInspector
    captures: list[Capture]
    state: str | None
    sessions: list[WireGuardSession]  # alice's WireGuard session keys at the end


async def _run() -> Run:
    lab = SimLab(with_latency(load_topology("easy-easy")), seed=1)
    async with lab:
        inspector = PacketInspector(lab)
        inspector.widget  # noqa: B018  (built before the packets come: the live, throttled path)
        captures = [await inspector.watch("r1", "wan"), await inspector.watch("alice", "eth0")]
        pair = await start_pair(lab)  # alice and bob, known to each other, alice pinging bob's tunnel address
        alice, traffic = pair.a, pair.traffic
        status = await wait_until(lab, alice, settled, 120.0)
        await lab.sleep(1.0)
        await traffic.stop()
        await inspector.stop()
        keys = await alice.keys()  # the node's keys, as on every backend (what lab_keyring reads)
        sessions = [
            s
            for r in keys.sessions
            for s in (
                WireGuardSession(r.local_index, r.recv_key, "in"),
                WireGuardSession(r.remote_index, r.send_key, "out"),
            )
        ]
    return Run(inspector, captures, (first_peer(status) or {}).get("state"), sessions)


@pytest.fixture(scope="module")
def run() -> Run:
    return asyncio.run(_run())


@pytest.fixture
def inspector(run: Run) -> PacketInspector:
    run.inspector.filter(None, None)
    return run.inspector


def _of(rows: list[Row], point: str) -> list[Row]:
    return [r for r in rows if r.point == point]


def test_both_points_show_stun_disco_wireguard_and_derp(run: Run, inspector: PacketInspector) -> None:
    assert run.state == "DirectActive"
    for point in POINTS:
        rows = _of(inspector.rows, point)
        assert {r.protocol for r in rows} >= {"stun", "disco", "wireguard", "derp"}, point
        summaries = [r.summary for r in rows if r.protocol == "disco"]
        assert any(s.startswith("disco Ping") and "from alice to bob" in s for s in summaries), point
        assert any(s.startswith("disco Pong") for s in summaries), point
        assert any("DERP SendPacket to bob" in r.summary for r in rows), point  # node keys named
        assert {r.path for r in rows if r.protocol in ("disco", "wireguard")} == {"direct"}
        assert {r.path for r in rows if r.protocol == "derp"} == {"derp"}
        assert {r.path for r in rows if r.protocol == "stun"} == {"other"}
    # every captured packet is in the table (a packet may give several rows: DERP frames in one segment)
    for capture in run.captures:
        point = f"{capture.element}/{capture.interface}"
        assert len({r.record.data for r in _of(inspector.rows, point)}) == len({d for _, d in capture.packets}) > 50
    assert len(inspector.packets) == sum(len(c.packets) for c in run.captures)
    assert [r.number for r in inspector.all_rows] == list(range(len(inspector.all_rows)))
    assert len(inspector.all_rows) > len(inspector.packets)  # several DERP frames in one TCP segment


def test_filter_by_protocol(inspector: PacketInspector) -> None:
    everything = inspector.rows
    assert inspector.filter("stun") and all(r.protocol == "stun" for r in inspector.rows)
    disco = inspector.filter(["disco"])
    assert all("disco" in r.tags for r in disco)
    assert {r.protocol for r in disco} == {"disco", "derp"}  # disco over UDP, and CallMeMaybe inside DERP frames
    assert any(r.protocol == "derp" and "CallMeMaybe" in r.summary for r in disco)
    assert len(disco) == sum("disco" in r.tags for r in everything)
    both = inspector.filter(["wireguard", "derp"])
    assert {r.protocol for r in both} == {"wireguard", "derp"}
    assert len(inspector.filter(PROTOCOLS)) == len(everything)
    with pytest.raises(UsageError, match="unknown protocol 'dns'"):
        inspector.filter("dns")


def test_filter_by_peer(inspector: PacketInspector) -> None:
    rows = inspector.filter(None, "bob")
    assert rows and not any(r.protocol == "stun" for r in rows)  # alice's STUN goes to the STUN server
    bob = {"192.168.2.10", "203.0.113.2"}  # bob, and bob's NAT as seen from outside it
    for r in rows:
        assert {r.src.rsplit(":", 1)[0], r.dst.rsplit(":", 1)[0]} & bob or "bob" in r.summary.split(), r.line()
    assert any(r.protocol == "derp" for r in rows)  # DERP frames to/from bob, by name
    stun = inspector.filter(None, "198.51.100.10")
    assert stun and {r.protocol for r in stun} == {"stun"}
    assert inspector.filter("disco", "nobody") == []


def test_selected_disco_row_is_dissected_with_the_box_opened(run: Run, inspector: PacketInspector) -> None:
    rows = inspector.filter("disco")
    pong = next(i for i, r in enumerate(rows) if r.summary.startswith("disco Pong"))
    text = inspector.select(pong)
    assert "###[ UDP ]###" in text and "###[ disco ]###" in text
    assert "###[ disco Pong ]###" in text and "txid" in text  # the opened message under its box
    ping = next(i for i, r in enumerate(rows) if r.summary.startswith("disco Ping") and r.path == "direct")
    assert "###[ disco Ping ]###" in inspector.select(ping)
    # without keys the same packet stays sealed
    keyless = PacketInspector(keyring=Keyring())
    keyless.add(run.captures[1])
    sealed = next(r for r in keyless.filter("disco") if r.record.data == rows[pong].record.data)
    assert "no keys" in sealed.summary
    assert "###[ disco Pong ]###" not in keyless.dissection(sealed)


def test_wireguard_opens_with_session_keys(run: Run) -> None:
    ring = Keyring(wireguard=list(run.sessions))
    assert ring.has_wireguard_keys
    inspector = PacketInspector(keyring=ring)
    inspector.add(run.captures[1])
    transport = [r for r in inspector.filter("wireguard") if "Transport" in r.summary and r.path == "direct"]
    assert transport and all("UDP 40007 -> 7" in r.summary or "UDP 7 -> 40007" in r.summary for r in transport)
    text = inspector.select(inspector.rows.index(transport[0]))
    assert text.count("###[ IP ]###") == 2  # the captured packet and the decrypted one inside it


def test_export_pcap_reads_back(run: Run, inspector: PacketInspector, tmp_path: Path) -> None:
    path = tmp_path / "lab.pcap"
    n = inspector.export_pcap(path, keys=True)
    assert n == len(inspector.packets) == sum(len(c.packets) for c in run.captures)
    records = list(pcapio.read_records(path))
    assert len(records) == n and all(r.linktype == pcapio.LINKTYPE_RAW for r in records)
    events = list(read_file(path, Keyring.load(keys_path_for(path))))
    shown = [r.event for r in inspector.rows if r.event is not None]
    assert Counter(e.kind for e in events) == Counter(e.kind for e in shown)
    assert sum(e.opened is not None for e in events) == sum(e.opened is not None for e in shown) > 0


def test_table_widget_keeps_the_last_view_and_follows_selection(run: Run, inspector: PacketInspector) -> None:
    ui = inspector._ui
    assert ui is not None and inspector.renders >= 1
    inspector.flush()
    labels = [label for label, _ in ui["table"].options]
    assert labels == [r.line() for r in inspector.rows]
    ui["boxes"]["other"].value = False  # the checkbox filters the table
    assert "other" not in inspector.protocols
    assert len(ui["table"].options) == len(inspector.rows) < len(inspector.all_rows)
    pong = next(r for r in inspector.rows if r.summary.startswith("disco Pong"))
    ui["table"].value = pong.number  # a click on the row
    assert "disco Pong ]###" in ui["detail"].value
    ui["boxes"]["other"].value = True
    assert ui["table"].value == pong.number  # the selection survives a filter change


def test_updates_are_throttled(run: Run) -> None:
    packets = run.captures[0].packets
    inspector = PacketInspector(keyring=Keyring(), rate=10.0)
    inspector.widget  # noqa: B018
    first = inspector.renders
    for packet in packets:  # one packet at a time, faster than 10 renders/s allow
        inspector.add([packet], "r1/wan")
    assert inspector.renders - first <= 2
    inspector.flush()
    assert len(inspector._ui["table"].options) == len(inspector.rows) >= len(packets)  # type: ignore[index]

    async def live() -> int:  # following a capture: a burst becomes one batch, rendered once by a timer
        burst = PacketInspector(keyring=Keyring(), rate=10.0)
        burst.widget  # noqa: B018
        before = burst.renders
        capture = Capture("r1", "wan")
        burst.follow(capture)
        for ts, data in packets:
            capture.feed(ts, data)
        await asyncio.sleep(0.25)
        assert len(burst.rows) >= len(packets) and {r.point for r in burst.rows} == {"r1/wan"}
        await burst.stop()
        return burst.renders - before

    assert 1 <= asyncio.run(live()) <= 2


def test_one_time_base_for_all_points(run: Run) -> None:
    """A capture point added later, with packets older than the first point's, lines up: times count from
    the earliest packet of any point (none negative) and the rows are in time order."""
    late, early = run.captures[0].packets, run.captures[1].packets
    inspector = PacketInspector(keyring=Keyring())
    first = inspector.add(late[len(late) // 2 :], "r1/wan")
    assert first and min(r.time for r in inspector.rows) == 0.0
    inspector.add(early, "alice/eth0")
    rows = inspector.rows
    assert {r.point for r in rows} == {"r1/wan", "alice/eth0"}
    assert min(r.time for r in rows) == 0.0 and rows[0].record.ts == min(ts for ts, _ in early)
    assert [r.time for r in rows] == sorted(r.time for r in rows)
    assert all(r.time == r.record.ts - rows[0].record.ts for r in rows)
    assert rows[0].point == "alice/eth0" and rows[0].line().split()[1] == "0.000s"
    assert [r.number for r in inspector.all_rows] == list(range(len(inspector.all_rows)))  # arrival order kept
    assert inspector.select(0).startswith(f"#{rows[0].number} 0.000000s at alice/eth0")
