"""What a run of ``natkit bench upgrade`` measured, read from the nodes' trace records and ``/proc``.

The definitions are :mod:`toolkit.lab.benchupgrade`'s (its docstring): the first packet, each node's
first DirectActive, the CallMeMaybe's DERP delivery and the first direct disco round trip (the physical
minimum), and the CPU time and peak memory of a node process (proc(5)).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.errors import NatkitError
from toolkit.lab.runreport import walk_of
from toolkit.sansio.derphome import region_of
from toolkit.sansio.trace import TraceRecord

DISCO_SEAL_OVERHEAD = 6 + 32 + 24 + 16  # magic, sender disco key, nonce, Poly1305 tag (protocols.md §1.1)
_LATENCY_RE = re.compile(r"(\d+(?:\.\d+)?)ms$")


# --- what the records say -----------------------------------------------------------------------------


def _of(records: Sequence[TraceRecord], node: str, kind: str, peer: str, detail: str = "") -> list[TraceRecord]:
    return [
        r
        for r in records
        if r.node == node and r.kind == kind and r.peer is not None and r.peer.text() == peer
        if r.detail.startswith(detail)
    ]


def first_packet(records: Sequence[TraceRecord], node: str, peer: str) -> float | None:
    """When ``node`` first sent anything to ``peer`` (its key text)."""
    return min((r.at for r in _of(records, node, "sent", peer)), default=None)


def cmm_delivery(a_records: Sequence[TraceRecord], b_records: Sequence[TraceRecord], a: str, b: str, a_key: str,
                 b_key: str) -> float | None:  # fmt: skip
    """Seconds from ``a``'s first CallMeMaybe to ``b`` until ``b`` has it: ``b``'s ``received`` CallMeMaybe
    record if it writes one, else the first DERP ``RecvPacket`` frame from ``a`` that ``b``'s DERP client
    received afterwards carrying a sealed box of the CallMeMaybe's size (frame: 5-byte header, the 32-byte
    source key, the payload; protocols.md §2; a disco box is the message plus :data:`DISCO_SEAL_OVERHEAD`
    bytes, and a CallMeMaybe's size differs from a Ping's and a Pong's)."""
    sent = _of(a_records, a, "sent", b_key, "disco CallMeMaybe")
    if not sent:
        return None
    cmm = min(sent, key=lambda r: r.at)
    got = [r for r in _of(b_records, b, "received", a_key, "disco CallMeMaybe") if r.at >= cmm.at]
    if got:
        return min(r.at for r in got) - cmm.at
    size = DISCO_SEAL_OVERHEAD + len(cmm.raw or b"")
    src = bytes.fromhex(a_key.split(":", 1)[1])
    arrived = [
        r.at
        for r in b_records
        if r.node.startswith(f"{b} derp") and r.kind == "received" and r.at >= cmm.at and r.raw
        if r.detail.startswith("DERP RecvPacket") and r.raw[5:37] == src and len(r.raw) - 37 == size
    ]
    return min(arrived) - cmm.at if arrived else None


def direct_rtt(records: Sequence[TraceRecord], node: str, peer: str) -> float | None:
    """The round trip of ``node``'s first disco Pong from ``peer`` over UDP (not relayed by DERP)."""
    for r in sorted(_of(records, node, "received", peer, "disco Pong"), key=lambda r: r.at):
        if r.endpoint is not None and region_of(r.endpoint) is None and (m := _LATENCY_RE.search(r.detail)):
            return float(m.group(1)) / 1000
    return None


def measure(a_records: Sequence[TraceRecord], b_records: Sequence[TraceRecord], a: str, b: str, a_key: str,
            b_key: str) -> dict[str, Any]:  # fmt: skip
    """One run's figures (seconds; None where the records do not have them)."""
    start = first_packet(a_records, a, b_key)
    out: dict[str, Any] = {"first_packet": start}
    for name, recs, peer in ((a, a_records, b_key), (b, b_records, a_key)):
        reached = walk_of(recs, name, peer).first("DirectActive")
        out[f"{name}_s"] = None if reached is None or start is None else max(0.0, reached - start)
    ta, tb = out[f"{a}_s"], out[f"{b}_s"]
    out["both_s"] = None if ta is None or tb is None else max(ta, tb)
    out["cmm_delivery_s"] = cmm_delivery(a_records, b_records, a, b, a_key, b_key)
    out["rtt_s"] = direct_rtt(b_records, b, a_key)
    out["minimum_s"] = None if None in (out["cmm_delivery_s"], out["rtt_s"]) else out["cmm_delivery_s"] + out["rtt_s"]
    out["ratio"] = None if not out["minimum_s"] or out[f"{b}_s"] is None else out[f"{b}_s"] / out["minimum_s"]
    return out


# --- one natkit run ------------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (``/proc/PID/stat`` fields 14 and 15, proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields[0] is field 3 (state)


def peak_kib(pid: int) -> int:
    """``VmHWM`` of ``pid`` (peak resident set size) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise NatkitError(f"/proc/{pid}/status has no VmHWM line")
