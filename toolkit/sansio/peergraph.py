"""The per-peer connection-upgrade machine, as data: the seed flowchart's nodes and edges (design.md §3).

Every node of the seed's mermaid graph (``/work/shared/seed/000_a24592e441436c56.txt``, "NAT Traversal
and Connection Upgrade Flow") is a member of :class:`State` under the seed's own id, with its kind
(a state ``[...]`` or a decision ``{...}``) and the seed's label (``<br/>`` → newline). Every edge of the
seed is a :class:`Transition` of :data:`TRANSITIONS` with the seed's label; the seed's unlabelled edges
("this step is done, go on") carry the label :data:`NEXT` (``""``). Edges the chart does not draw but a
working node needs are in the table too, flagged ``extension=True``; each one cites protocols.md §4.

The seed's own list of "Connection States" (DERP Relay, Probing, Direct P2P, Fallback) is
:class:`CoarseState`, derived from the state by :func:`coarse`; the steps before any path exists are
a fifth, :attr:`CoarseState.CONNECTING` (the seed's list starts once DERP carries packets).

The node (issue 6) drives this machine and takes no edge that is not here; the widgets (issue 7) draw
it from :func:`to_mermaid` / :func:`to_dot` and colour it from the ``transition`` trace records that
:meth:`Transition.record` builds and :func:`transition_of` reads back.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from toolkit.sansio import mermaid
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Key32


class Kind(enum.Enum):
    STATE = "state"  # seed [ ... ]: something the node does or is
    DECISION = "decision"  # seed { ... }: a question answered by the edge label


class State(enum.Enum):
    """The seed's nodes, under the seed's ids (the value is the id too: ``State("GetInfo")``)."""

    Start = "Start"
    GetInfo = "GetInfo"
    QueryControl = "QueryControl"
    StoreInfo = "StoreInfo"
    CheckDirect = "CheckDirect"
    TryDirect = "TryDirect"
    DirectSuccess = "DirectSuccess"
    StartDERP = "StartDERP"
    DERPActive = "DERPActive"
    StartDisco = "StartDisco"
    SendSTUN = "SendSTUN"
    MultiProbe = "MultiProbe"
    AnalyzeResponses = "AnalyzeResponses"
    RetryProbes = "RetryProbes"
    StayOnDERP = "StayOnDERP"
    ValidatePath = "ValidatePath"
    PathGood = "PathGood"
    TryAltPath = "TryAltPath"
    EstablishDirect = "EstablishDirect"
    MigrateDirect = "MigrateDirect"
    MonitorDirect = "MonitorDirect"
    DirectStable = "DirectStable"
    DirectActive = "DirectActive"
    FallbackDERP = "FallbackDERP"

    @property
    def kind(self) -> Kind:
        return NODES[self][0]

    @property
    def label(self) -> str:
        return NODES[self][1]


S = State
_ST, _DE = Kind.STATE, Kind.DECISION

#: The seed's nodes: kind and label, in the order the seed first names them.
NODES: Mapping[State, tuple[Kind, str]] = MappingProxyType(
    {
        S.Start: (_ST, "New Connection Request\nNode A → Node B"),
        S.GetInfo: (_DE, "Peer Info\nAvailable?"),
        S.QueryControl: (_ST, "Query Control Server\nfor peer endpoints"),
        S.CheckDirect: (_DE, "Can reach\ndirectly?"),
        S.StoreInfo: (_ST, "Store peer info:\n- Public IPs\n- DERP regions\n- Endpoints"),
        S.TryDirect: (_ST, "Attempt direct\nUDP connection"),
        S.StartDERP: (_ST, "Establish DERP\nrelay connection"),
        S.DERPActive: (_ST, "DERP Connection Active\n✓ Packets flowing"),
        S.StartDisco: (_ST, "Start DISCO Protocol\nin parallel"),
        S.SendSTUN: (_ST, "Send STUN-like probes\nto all known endpoints"),
        S.MultiProbe: (
            _ST,
            "Probe multiple paths:\n- Last known endpoint\n- STUN discovered IPs\n- Local network IPs\n- IPv6 addresses",
        ),
        S.AnalyzeResponses: (_DE, "Received\nprobe response?"),
        S.ValidatePath: (_ST, "Validate path:\n- Latency check\n- Packet loss test\n- MTU discovery"),
        S.RetryProbes: (_DE, "Retry\nlimit reached?"),
        S.StayOnDERP: (_ST, "Continue using\nDERP relay"),
        S.PathGood: (_DE, "Path quality\nacceptable?"),
        S.EstablishDirect: (_ST, "Establish direct\nWireGuard tunnel"),
        S.TryAltPath: (_DE, "Alternative\npaths available?"),
        S.MigrateDirect: (_ST, "Migrate traffic\nto direct path"),
        S.MonitorDirect: (_ST, "Monitor connection:\n- Heartbeat packets\n- Quality metrics"),
        S.DirectStable: (_DE, "Connection\nstable?"),
        S.DirectActive: (_ST, "Direct P2P Active\n✓ Optimal performance"),
        S.FallbackDERP: (_ST, "Fallback to DERP"),
        S.DirectSuccess: (_DE, "Connection\nsuccessful?"),
    }
)

# edge labels: the seed's ...
NEXT = ""  # the seed's unlabelled edges: the step is done
YES = "Yes"
NO = "No"
PUBLIC_IP = "Public IP available"
BEHIND_NAT = "Behind NAT"
# ... and the extensions'
HEARTBEAT = "heartbeat (every 3 s)"
UPGRADE_INTERVAL = "upgrade interval (60 s)"
CALL_ME_MAYBE = "CallMeMaybe received"
UNREACHABLE = "send error or link change"


class NoSuchTransition(LookupError):
    """The machine was asked to take an edge the table does not have."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge: from ``src`` on ``label`` to ``dst``; ``extension`` marks an edge the seed does not draw."""

    src: State
    label: str
    dst: State
    extension: bool = False

    @property
    def detail(self) -> str:
        """``"From -> To"``, the ``detail`` of the edge's trace record."""
        return f"{self.src.value} -> {self.dst.value}"

    def record(self, at: float, node: str, peer: Key32 | None = None) -> TraceRecord:
        """The ``transition`` trace record of taking this edge (design.md §2): reason = the edge label."""
        return TraceRecord(at, node, peer, "transition", self.detail, self.label)


#: The machine: the seed's edges, in the seed's order, then the extensions (drawn dashed).
TRANSITIONS: tuple[Transition, ...] = (
    Transition(S.Start, NEXT, S.GetInfo),
    Transition(S.GetInfo, NO, S.QueryControl),
    Transition(S.GetInfo, YES, S.CheckDirect),
    Transition(S.QueryControl, NEXT, S.StoreInfo),
    Transition(S.StoreInfo, NEXT, S.CheckDirect),
    Transition(S.CheckDirect, PUBLIC_IP, S.TryDirect),
    Transition(S.CheckDirect, BEHIND_NAT, S.StartDERP),
    Transition(S.StartDERP, NEXT, S.DERPActive),
    Transition(S.DERPActive, NEXT, S.StartDisco),
    Transition(S.StartDisco, NEXT, S.SendSTUN),
    Transition(S.SendSTUN, NEXT, S.MultiProbe),
    Transition(S.MultiProbe, NEXT, S.AnalyzeResponses),
    Transition(S.AnalyzeResponses, YES, S.ValidatePath),
    Transition(S.AnalyzeResponses, NO, S.RetryProbes),
    Transition(S.RetryProbes, NO, S.SendSTUN),
    Transition(S.RetryProbes, YES, S.StayOnDERP),
    Transition(S.ValidatePath, NEXT, S.PathGood),
    Transition(S.PathGood, YES, S.EstablishDirect),
    Transition(S.PathGood, NO, S.TryAltPath),
    Transition(S.TryAltPath, YES, S.MultiProbe),
    Transition(S.TryAltPath, NO, S.StayOnDERP),
    Transition(S.EstablishDirect, NEXT, S.MigrateDirect),
    Transition(S.MigrateDirect, NEXT, S.MonitorDirect),
    Transition(S.MonitorDirect, NEXT, S.DirectStable),
    Transition(S.DirectStable, YES, S.DirectActive),
    Transition(S.DirectStable, NO, S.FallbackDERP),
    Transition(S.FallbackDERP, NEXT, S.DERPActive),
    Transition(S.TryDirect, NEXT, S.DirectSuccess),
    Transition(S.DirectSuccess, YES, S.DirectActive),
    Transition(S.DirectSuccess, NO, S.StartDERP),
    # --- extensions ---
    # protocols.md §4.5 (heartbeatInterval, §4.1): while the session is active the direct path is pinged
    # every 3 s; each heartbeat is a new round of monitoring, answered by DirectStable.
    Transition(S.DirectActive, HEARTBEAT, S.MonitorDirect, extension=True),
    # protocols.md §4.8: a send error meaning "unreachable" (noteBadEndpoint) or a link change
    # (noteConnectivityChange) clears bestAddr at once; sends go DERP-only without waiting for a heartbeat.
    Transition(S.DirectActive, UNREACHABLE, S.FallbackDERP, extension=True),
    # protocols.md §4.1 upgradeUDPDirectInterval (1 min) and §4.4: a peer left on DERP runs a new
    # discovery round later (design.md §3: "StayOnDERP retries after the upgrade interval"). Tailscale
    # re-probes sooner while traffic flows (§4.5: heartbeat + wantFullPing, each candidate at most every 5 s);
    # the node may take this edge on that schedule too: the label names the default interval.
    Transition(S.StayOnDERP, UPGRADE_INTERVAL, S.SendSTUN, extension=True),
    # protocols.md §4.9: a CallMeMaybe over DERP zeroes every candidate's lastPing and pings them all now;
    # the simultaneous open that punches the hole when the peer probes at the same moment.
    Transition(S.StayOnDERP, CALL_ME_MAYBE, S.SendSTUN, extension=True),
)

_BY_EDGE: Mapping[tuple[State, str], Transition] = MappingProxyType({(t.src, t.label): t for t in TRANSITIONS})
_FROM: Mapping[State, tuple[Transition, ...]] = MappingProxyType(
    {s: tuple(t for t in TRANSITIONS if t.src is s) for s in State}
)
assert len(_BY_EDGE) == len(TRANSITIONS), "two edges leave one state with the same label"


class CoarseState(enum.Enum):
    """The seed's "Connection States" (its own wording), plus CONNECTING for the steps before any path."""

    CONNECTING = "Connecting"  # not in the seed's list: peer info, control, the first direct attempt
    DERP_RELAY = "DERP Relay"  # 1. initial connection through relay server
    PROBING = "Probing"  # 2. attempting to find direct path while maintaining DERP
    DIRECT_P2P = "Direct P2P"  # 3. optimal state with direct UDP connection
    FALLBACK = "Fallback"  # 4. return to DERP if direct connection fails


_C = CoarseState
#: Which coarse state each state belongs to. EstablishDirect is still probing (DERP carries the packets
#: until the WireGuard tunnel is up); MigrateDirect moves the traffic, so it is direct (protocols.md §4.3:
#: a trusted bestAddr means UDP only).
_PROBING = (
    *(S.StartDisco, S.SendSTUN, S.MultiProbe, S.AnalyzeResponses, S.RetryProbes),
    *(S.ValidatePath, S.PathGood, S.TryAltPath, S.EstablishDirect),
)
COARSE: Mapping[State, CoarseState] = MappingProxyType(
    {
        **dict.fromkeys(
            (S.Start, S.GetInfo, S.QueryControl, S.StoreInfo, S.CheckDirect, S.TryDirect, S.DirectSuccess),
            _C.CONNECTING,
        ),
        **dict.fromkeys((S.StartDERP, S.DERPActive, S.StayOnDERP), _C.DERP_RELAY),
        **dict.fromkeys(_PROBING, _C.PROBING),
        **dict.fromkeys((S.MigrateDirect, S.MonitorDirect, S.DirectStable, S.DirectActive), _C.DIRECT_P2P),
        S.FallbackDERP: _C.FALLBACK,
    }
)


def coarse(state: State) -> CoarseState:
    """The seed's coarse connection state of ``state``."""
    return COARSE[state]


def is_decision(state: State) -> bool:
    return state.kind is Kind.DECISION


def edges_from(state: State) -> tuple[Transition, ...]:
    """The transitions leaving ``state``, seed edges first."""
    return _FROM[state]


def labels_from(state: State) -> tuple[str, ...]:
    """The labels a caller may pass to :func:`next_state` from ``state``."""
    return tuple(t.label for t in _FROM[state])


def transition(state: State, label: str = NEXT) -> Transition:
    """The edge leaving ``state`` with ``label``; :class:`NoSuchTransition` if there is none."""
    found = _BY_EDGE.get((state, label))
    if found is None:
        exits = ", ".join(repr(x) for x in labels_from(state))
        raise NoSuchTransition(f"no edge {label!r} leaves {state.value}; its exits are {exits}")
    return found


def next_state(state: State, label: str = NEXT) -> State:
    """Where the edge ``label`` from ``state`` leads; :class:`NoSuchTransition` if there is no such edge."""
    return transition(state, label).dst


def transition_of(record: TraceRecord) -> Transition:
    """The edge a ``transition`` trace record took (what a widget reads from a node's trace stream)."""
    src, sep, dst = record.detail.partition(" -> ")
    if record.kind != "transition" or not sep:
        raise NoSuchTransition(f"not a peer transition record: {record.summary()}")
    try:
        found = transition(State(src), record.reason or NEXT)
    except ValueError as exc:  # an unknown state name
        raise NoSuchTransition(f"not a peer transition record: {record.summary()}") from exc
    if found.dst.value != dst:
        raise NoSuchTransition(f"edge {record.reason!r} from {src} leads to {found.dst.value}, not {dst}")
    return found


# the seed's own colours (its `style` lines: fill, text colour), reused by both renderers
SEED_COLOURS: Mapping[State, tuple[str, str]] = MappingProxyType(
    {
        S.Start: ("#1976d2", "#ffffff"),
        S.DERPActive: ("#f57c00", "#ffffff"),
        S.DirectActive: ("#388e3c", "#ffffff"),
        S.StayOnDERP: ("#d32f2f", "#ffffff"),
        S.QueryControl: ("#e3f2fd", "#000000"),
        S.SendSTUN: ("#fff3e0", "#000000"),
        S.MonitorDirect: ("#e8f5e9", "#000000"),
    }
)
CURRENT_COLOURS = ("#ffeb3b", "#000000")  # the state a widget shows as current


def flowchart() -> mermaid.Flowchart:
    """The machine as a :class:`~toolkit.sansio.mermaid.Flowchart`: extensions are dotted links."""
    shapes = {Kind.STATE: mermaid.Shape.RECT, Kind.DECISION: mermaid.Shape.RHOMBUS}
    nodes = tuple(mermaid.Node(s.value, shapes[kind], label) for s, (kind, label) in NODES.items())
    links = tuple(mermaid.Link(t.src.value, t.label, t.dst.value, t.extension) for t in TRANSITIONS)
    return mermaid.Flowchart(nodes, links, "TD")


def _colours(current: State | None) -> dict[State, tuple[str, str, bool]]:
    """fill, text colour, and whether to draw the node thick, per coloured state."""
    colours = {state: (fill, text, False) for state, (fill, text) in SEED_COLOURS.items()}
    if current is not None:
        colours[current] = (*CURRENT_COLOURS, True)
    return colours


def to_mermaid(current: State | None = None) -> str:
    """Mermaid ``graph TD`` text of the machine (extensions ``-.->|label|``), seed colours, ``current`` highlighted."""
    styles = {
        state.value: f"fill:{fill},stroke:#000,stroke-width:{4 if thick else 1}px,color:{text}"
        for state, (fill, text, thick) in _colours(current).items()
    }
    return mermaid.render(flowchart(), styles)


def to_dot(current: State | None = None) -> str:
    """Graphviz ``dot`` text of the machine (extensions dashed), seed colours, ``current`` highlighted."""
    attrs = {
        state.value: {"style": "filled,bold" if thick else "filled", "fillcolor": fill, "fontcolor": text}
        for state, (fill, text, thick) in _colours(current).items()
    }
    return mermaid.render_dot(flowchart(), "peer", attrs)


__all__ = [
    "BEHIND_NAT", "CALL_ME_MAYBE", "COARSE", "CURRENT_COLOURS", "HEARTBEAT", "NEXT", "NO", "NODES", "PUBLIC_IP",
    "SEED_COLOURS", "TRANSITIONS", "UNREACHABLE", "UPGRADE_INTERVAL", "YES", "CoarseState", "Kind",
    "NoSuchTransition", "State", "Transition", "coarse", "edges_from", "flowchart", "is_decision",
    "labels_from", "next_state", "to_dot", "to_mermaid", "transition", "transition_of",
]  # fmt: skip
