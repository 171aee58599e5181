"""What ``natkit lab run`` reports: the path a scenario ended on and the flowchart walk that got there.

A :class:`RunReport` is computed from the public trace records of the nodes (design.md §2: the same
records on every backend; out-of-process nodes stream them as JSON lines) and their final status,
never from a node's private state. The JSON form (``natkit lab run --json``) has at least:

* ``scenario``, ``backend``;
* ``final_path``: ``direct``, ``local`` (the direct path runs over LAN addresses) or ``derp``;
* ``final_state``: the seed flowchart id the first node's machine is in for its first peer;
* ``time_to_direct_s``: seconds from the first node's first packet to the peer to its first ``DirectActive``
  (``null`` when never direct);
* ``states``: the flowchart ids walked for the first peer, in order, from ``Start``.

:func:`walk_of` reads a node's ``transition`` records with :func:`toolkit.sansio.peergraph.transition_of`,
which accepts only edges of the seed's table (records of other machines, such as the WireGuard peer or
magicsock's coarse path state, are not flowchart records and are skipped); :func:`check_walk` says
whether consecutive states are joined by an edge, which the suite asserts for every run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from toolkit.sansio import peergraph
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Key32

PATHS = ("direct", "local", "derp")


@dataclass(frozen=True, slots=True)
class Walk:
    """One node's flowchart walk for one peer: the states entered (from ``Start``) and when."""

    node: str
    peer: str | None  # the peer's key text, as in the records
    states: tuple[str, ...]
    times: tuple[float, ...]  # when each state was entered (the first is the time of the first edge)

    def first(self, state: str) -> float | None:
        """When ``state`` was first entered, or None."""
        return next((t for s, t in zip(self.states, self.times, strict=True) if s == state), None)


def _peer_text(peer: Key32 | None) -> str | None:
    return None if peer is None else peer.text()


def walk_of(records: Iterable[TraceRecord], node: str, peer: Key32 | str | None = None) -> Walk:
    """The flowchart walk of ``node`` towards ``peer`` (default: the first peer it walked for)."""
    want = peer.text() if isinstance(peer, Key32) else peer
    states: list[str] = []
    times: list[float] = []
    for r in records:
        if r.kind != "transition" or r.node != node:
            continue
        try:
            edge = peergraph.transition_of(r)
        except peergraph.NoSuchTransition:
            continue  # another machine's transition record
        who = _peer_text(r.peer)
        if want is None:
            want = who
        if who != want:
            continue
        if not states:
            states.append(edge.src.value)
            times.append(r.at)
        states.append(edge.dst.value)
        times.append(r.at)
    return Walk(node, want, tuple(states), tuple(times))


def check_walk(states: Sequence[str]) -> list[str]:
    """The problems of a walk: a first state other than Start, or consecutive states with no edge between them."""
    problems = []
    if states and states[0] != peergraph.State.Start.value:
        problems.append(f"the walk starts at {states[0]}, not Start")
    for a, b in itertools.pairwise(states):
        if not any(t.dst.value == b for t in peergraph.edges_from(peergraph.State(a))):
            problems.append(f"no edge {a} -> {b}")
    return problems


@dataclass(slots=True)
class RunReport:
    """The outcome of one scenario run (see the module docstring for the JSON fields)."""

    scenario: str
    backend: str
    final_path: str
    final_state: str | None
    time_to_direct_s: float | None
    states: list[str]
    expect: str | None = None  # what the scenario file says should happen (direct, local, derp)
    node: str = ""
    peer: str = ""
    latency_ms: float | None = None
    endpoint: str | None = None
    traffic: dict[str, Any] = field(default_factory=dict)  # what the traffic step sent and got back
    problems: list[str] = field(default_factory=list)  # walk errors, failed checks
    duration_s: float = 0.0  # wall time of the run

    @property
    def ok(self) -> bool:
        """No problem, and the scenario's expectation (if any) met."""
        return not self.problems and (self.expect is None or self.expect == self.final_path)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)

    def format(self) -> str:
        """The human report: outcome line, the walk, timings."""
        ttd = "never" if self.time_to_direct_s is None else f"{self.time_to_direct_s:.3f} s"
        verdict = "ok" if self.ok else "FAILED"
        lines = [
            f"{self.scenario} on {self.backend}: {self.node} -> {self.peer}: final path {self.final_path}"
            f" (expected {self.expect or 'anything'}), state {self.final_state}, time to direct {ttd}: {verdict}",
            "walk: " + " -> ".join(_compress(self.states)),
        ]
        if self.latency_ms is not None:
            lines.append(f"latency {self.latency_ms:.1f} ms via {self.endpoint or 'DERP'}")
        if self.traffic:
            lines.append("traffic: " + ", ".join(f"{k} {v}" for k, v in self.traffic.items()))
        lines += [f"problem: {p}" for p in self.problems]
        lines.append(f"took {self.duration_s:.2f} s of wall time")
        return "\n".join(lines)


def _compress(states: Sequence[str]) -> list[str]:
    """The walk for humans: a heartbeat loop repeated N times is shown once with ``(xN)``."""
    head, loop = "DirectActive", ("MonitorDirect", "DirectStable", "DirectActive")
    out: list[str] = []
    i = 0
    while i < len(states):
        n = 0
        while states[i] == head and tuple(states[i + 1 + 3 * n : i + 4 + 3 * n]) == loop:
            n += 1
        out.append(states[i] if n == 0 else f"{states[i]} (heartbeat x{n})")
        i += 1 + 3 * n
    return out


def time_to_direct(records: Sequence[TraceRecord], walk: Walk) -> float | None:
    """From the node's first packet to the peer (WireGuard or disco, any path) to its first DirectActive
    (None when never direct)."""
    reached = walk.first(peergraph.State.DirectActive.value)
    if reached is None:
        return None
    starts = [r.at for r in records if r.node == walk.node and r.kind == "sent" and _peer_text(r.peer) == walk.peer]
    first = min(starts, default=walk.times[0] if walk.times else reached)
    return max(0.0, reached - first)
