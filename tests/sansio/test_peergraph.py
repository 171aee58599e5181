"""The per-peer machine is the seed flowchart (design.md §3): table vs. seed, exports, walks, the mermaid parser."""

from __future__ import annotations

import json
import subprocess
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import VECTORS, require_tool
from toolkit.sansio import mermaid
from toolkit.sansio import peergraph as pg
from toolkit.sansio.peergraph import TRANSITIONS, CoarseState, Kind, NoSuchTransition, State
from toolkit.sansio.trace import TraceLog, TraceRecord

SEED_FILE = VECTORS / "seed" / "000_a24592e441436c56.txt"  # a copy of ../shared/seed/, as design.md asks

# The seed's mermaid block, verbatim but for the trailing spaces of its blank lines (the repository does not hold the seed; this copy keeps the test
# self-contained, and test_embedded_seed_is_the_seed checks it against the file where the file exists).
SEED = """
graph TD
    Start[New Connection Request<br/>Node A → Node B] --> GetInfo{Peer Info<br/>Available?}

    GetInfo -->|No| QueryControl[Query Control Server<br/>for peer endpoints]
    GetInfo -->|Yes| CheckDirect{Can reach<br/>directly?}

    QueryControl --> StoreInfo[Store peer info:<br/>- Public IPs<br/>- DERP regions<br/>- Endpoints]
    StoreInfo --> CheckDirect

    CheckDirect -->|Public IP available| TryDirect[Attempt direct<br/>UDP connection]
    CheckDirect -->|Behind NAT| StartDERP[Establish DERP<br/>relay connection]

    StartDERP --> DERPActive[DERP Connection Active<br/>✓ Packets flowing]

    DERPActive --> StartDisco[Start DISCO Protocol<br/>in parallel]

    StartDisco --> SendSTUN[Send STUN-like probes<br/>to all known endpoints]

    SendSTUN --> MultiProbe[Probe multiple paths:<br/>- Last known endpoint<br/>- STUN discovered IPs<br/>- Local network IPs<br/>- IPv6 addresses]

    MultiProbe --> AnalyzeResponses{Received<br/>probe response?}

    AnalyzeResponses -->|Yes| ValidatePath[Validate path:<br/>- Latency check<br/>- Packet loss test<br/>- MTU discovery]
    AnalyzeResponses -->|No| RetryProbes{Retry<br/>limit reached?}

    RetryProbes -->|No| SendSTUN
    RetryProbes -->|Yes| StayOnDERP[Continue using<br/>DERP relay]

    ValidatePath --> PathGood{Path quality<br/>acceptable?}

    PathGood -->|Yes| EstablishDirect[Establish direct<br/>WireGuard tunnel]
    PathGood -->|No| TryAltPath{Alternative<br/>paths available?}

    TryAltPath -->|Yes| MultiProbe
    TryAltPath -->|No| StayOnDERP

    EstablishDirect --> MigrateDirect[Migrate traffic<br/>to direct path]

    MigrateDirect --> MonitorDirect[Monitor connection:<br/>- Heartbeat packets<br/>- Quality metrics]

    MonitorDirect --> DirectStable{Connection<br/>stable?}

    DirectStable -->|Yes| DirectActive[Direct P2P Active<br/>✓ Optimal performance]
    DirectStable -->|No| FallbackDERP[Fallback to DERP]

    FallbackDERP --> DERPActive

    TryDirect --> DirectSuccess{Connection<br/>successful?}
    DirectSuccess -->|Yes| DirectActive
    DirectSuccess -->|No| StartDERP

    %% Styling
    style Start fill:#1976d2,stroke:#fff,stroke-width:2px,color:#fff
    style DERPActive fill:#f57c00,stroke:#fff,stroke-width:2px,color:#fff
    style DirectActive fill:#388e3c,stroke:#fff,stroke-width:2px,color:#fff
    style StayOnDERP fill:#d32f2f,stroke:#fff,stroke-width:2px,color:#fff
    style QueryControl fill:#e3f2fd,stroke:#000,stroke-width:1px,color:#000
    style SendSTUN fill:#fff3e0,stroke:#000,stroke-width:1px,color:#000
    style MonitorDirect fill:#e8f5e9,stroke:#000,stroke-width:1px,color:#000
"""
# The seed's "### Connection States" list (its text after the graph), verbatim.
SEED_COARSE = """1. **DERP Relay**: Initial connection through relay server
2. **Probing**: Attempting to find direct path while maintaining DERP
3. **Direct P2P**: Optimal state with direct UDP connection
4. **Fallback**: Return to DERP if direct connection fails"""

KINDS = {mermaid.Shape.RECT: Kind.STATE, mermaid.Shape.RHOMBUS: Kind.DECISION}
DESIGN_IDS = (  # design.md §3, in its order
    "Start GetInfo QueryControl StoreInfo CheckDirect TryDirect DirectSuccess StartDERP DERPActive StartDisco "
    "SendSTUN MultiProbe AnalyzeResponses RetryProbes StayOnDERP ValidatePath PathGood TryAltPath EstablishDirect "
    "MigrateDirect MonitorDirect DirectStable DirectActive FallbackDERP"
).split()
SEED_EDGES = {(t.src, t.label, t.dst) for t in TRANSITIONS if not t.extension}
EXTENSIONS = {(t.src, t.label, t.dst) for t in TRANSITIONS if t.extension}


def triples(chart: mermaid.Flowchart, dotted: bool) -> set[tuple[State, str, State]]:
    return {(State(x.src), x.label, State(x.dst)) for x in chart.links if x.dotted is dotted}


def test_embedded_seed_is_the_seed() -> None:
    text = SEED_FILE.read_text(encoding="utf-8")
    assert [line.rstrip() for line in mermaid.extract_block(text).splitlines()] == SEED.splitlines()
    assert SEED_COARSE in text
    assert mermaid.parse(text) == mermaid.parse(SEED)


def test_seed_nodes_are_the_states_exactly() -> None:
    seed = mermaid.parse(SEED)
    assert {(n.id, KINDS[n.shape], n.label) for n in seed.nodes} == {(s.value, s.kind, s.label) for s in State}
    assert [n.id for n in seed.nodes] == [s.value for s in pg.NODES]  # the table keeps the seed's order
    assert sorted(s.name for s in State) == sorted(DESIGN_IDS) and all(s.name == s.value for s in State)
    assert State.StoreInfo.label == "Store peer info:\n- Public IPs\n- DERP regions\n- Endpoints"
    assert pg.is_decision(State.GetInfo) and not pg.is_decision(State.StoreInfo)


def test_seed_edges_are_the_non_extension_transitions_exactly() -> None:
    seed = mermaid.parse(SEED)
    assert len(seed.links) == len(SEED_EDGES) == 30  # no edge drawn twice
    assert triples(seed, dotted=False) == SEED_EDGES and not triples(seed, dotted=True)
    assert (State.DirectSuccess, pg.NO, State.StartDERP) in SEED_EDGES  # the seed's tail
    assert {t.label for t in TRANSITIONS if not t.extension} == {"", "Yes", "No", "Public IP available", "Behind NAT"}


def test_extensions_the_node_needs() -> None:
    assert (State.DirectActive, "heartbeat (every 3 s)", State.MonitorDirect) in EXTENSIONS
    assert (State.StayOnDERP, "upgrade interval (60 s)", State.SendSTUN) in EXTENSIONS
    assert not EXTENSIONS & SEED_EDGES
    assert len({(t.src, t.label) for t in TRANSITIONS}) == len(TRANSITIONS)  # next_state is a function


@pytest.mark.parametrize("current", [None, *State])
def test_to_mermaid_round_trips_with_extensions_dotted(current: State | None) -> None:
    chart = mermaid.parse(pg.to_mermaid(current))
    assert chart == pg.flowchart()
    assert triples(chart, dotted=False) == SEED_EDGES and triples(chart, dotted=True) == EXTENSIONS
    assert {(n.id, KINDS[n.shape], n.label) for n in chart.nodes} == {(s.value, s.kind, s.label) for s in State}


def test_to_mermaid_draws_extensions_dashed_and_highlights() -> None:
    text = pg.to_mermaid(State.SendSTUN)
    assert '    DirectActive -.->|"heartbeat (every 3 s)"| MonitorDirect\n' in text
    assert "    CheckDirect -->|Behind NAT| StartDERP\n" in text
    assert "style SendSTUN fill:#ffeb3b" in text and "style Start fill:#1976d2" in text


def test_to_dot_is_read_by_graphviz() -> None:
    dot = require_tool("dot", "graphviz")
    run = subprocess.run([dot, "-Tjson"], input=pg.to_dot(State.MonitorDirect), capture_output=True, text=True)
    assert run.returncode == 0 and not run.stderr, run.stderr
    graph = json.loads(run.stdout)
    names = [o["name"] for o in graph["objects"]]
    assert names == [s.value for s in pg.NODES]
    shapes = {o["name"]: o["shape"] for o in graph["objects"]}
    assert all(shapes[s.value] == ("diamond" if pg.is_decision(s) else "box") for s in State)
    assert {o["name"]: o.get("fillcolor") for o in graph["objects"]}["MonitorDirect"] == "#ffeb3b"
    edges = {
        (names[e["tail"]], e.get("label", ""), names[e["head"]], e.get("style") == "dashed") for e in graph["edges"]
    }
    assert edges == {(t.src.value, t.label, t.dst.value, t.extension) for t in TRANSITIONS}


def test_every_state_reachable_from_start() -> None:
    seen, todo = {State.Start}, deque([State.Start])
    while todo:
        for t in pg.edges_from(todo.popleft()):
            if t.dst not in seen:
                seen.add(t.dst)
                todo.append(t.dst)
    assert seen == set(State)


def test_exits_by_kind() -> None:
    for s in State:
        seed_exits = [t for t in pg.edges_from(s) if not t.extension]
        if pg.is_decision(s):  # a question: at least two answers, each labelled
            assert len(seed_exits) >= 2 and all(t.label for t in seed_exits), s
        elif s in (State.StayOnDERP, State.DirectActive):  # the seed's resting states: only extensions leave
            assert not seed_exits and pg.edges_from(s) and all(t.extension for t in pg.edges_from(s)), s
        else:  # a step: one unlabelled "done" edge
            assert [t.label for t in seed_exits] == [pg.NEXT], s


def test_lookup_helpers() -> None:
    assert pg.next_state(State.Start) is State.GetInfo
    assert pg.next_state(State.CheckDirect, pg.BEHIND_NAT) is State.StartDERP
    assert pg.labels_from(State.GetInfo) == ("No", "Yes")
    assert pg.labels_from(State.DirectActive) == (pg.HEARTBEAT, pg.UNREACHABLE)
    assert pg.edges_from(State.StayOnDERP) == tuple(t for t in TRANSITIONS if t.src is State.StayOnDERP)
    assert pg.transition(State.DirectActive, pg.HEARTBEAT).extension
    with pytest.raises(NoSuchTransition, match=r"no edge 'Maybe' leaves GetInfo; its exits are 'No', 'Yes'"):
        pg.next_state(State.GetInfo, "Maybe")
    with pytest.raises(NoSuchTransition, match="leaves GetInfo"):
        pg.next_state(State.GetInfo)  # a decision has no unlabelled exit


def test_coarse_states_follow_the_seed_list() -> None:
    seed_names = [line.split("**")[1] for line in SEED_COARSE.splitlines()]
    assert [c.value for c in CoarseState if c is not CoarseState.CONNECTING] == seed_names
    assert {pg.coarse(s) for s in State} == set(CoarseState)
    assert pg.coarse(State.DERPActive) is pg.coarse(State.StayOnDERP) is CoarseState.DERP_RELAY
    assert pg.coarse(State.SendSTUN) is pg.coarse(State.EstablishDirect) is CoarseState.PROBING
    assert pg.coarse(State.DirectActive) is pg.coarse(State.MonitorDirect) is CoarseState.DIRECT_P2P
    assert pg.coarse(State.FallbackDERP) is CoarseState.FALLBACK
    assert pg.coarse(State.GetInfo) is CoarseState.CONNECTING
    # probing starts only once DERP carries packets (seed: "while maintaining DERP")
    assert {t.src for t in TRANSITIONS if pg.coarse(t.dst) is CoarseState.PROBING and pg.coarse(t.src) is not CoarseState.PROBING} == {
        State.DERPActive, State.StayOnDERP,
    }  # fmt: skip


def test_transition_records_match_trace_record() -> None:
    log = TraceLog()
    for i, t in enumerate(TRANSITIONS):
        log(t.record(float(i), "node-a"))
    for t, r in zip(TRANSITIONS, log.of_kind("transition"), strict=True):
        assert (r.kind, r.detail, r.reason, r.raw) == ("transition", f"{t.src.value} -> {t.dst.value}", t.label, b"")
        assert pg.transition_of(r) == t
    bad = [
        TraceRecord(0.0, "n", None, "sent", "GetInfo -> CheckDirect", "Yes"),
        TraceRecord(0.0, "n", None, "transition", "Nowhere -> CheckDirect", "Yes"),
        TraceRecord(0.0, "n", None, "transition", "GetInfo -> QueryControl", "Yes"),
        TraceRecord(0.0, "n", None, "transition", "GetInfo", "Yes"),
    ]
    for record in bad:
        with pytest.raises(NoSuchTransition):
            pg.transition_of(record)


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=0, max_value=2**16), max_size=120))
def test_random_walks_follow_the_table(choices: list[int]) -> None:
    edges = set(TRANSITIONS)
    state = State.Start
    for choice in choices:
        exits = pg.edges_from(state)
        assert exits, f"stuck in {state}"
        t = exits[choice % len(exits)]
        assert t in edges and t.src is state
        assert pg.next_state(state, t.label) is t.dst
        assert pg.transition_of(t.record(0.0, "n")) == t
        if pg.coarse(t.dst) is CoarseState.FALLBACK:  # only a failing direct path falls back
            assert pg.coarse(state) is CoarseState.DIRECT_P2P
        state = t.dst


# --- the mermaid subset itself ---


def test_mermaid_chains_quotes_defaults_and_comments() -> None:
    chart = mermaid.parse(
        '```mermaid\nflowchart LR\n  %% c\n  A["x [y] (z)"] -->|"a|b"| B{q<br>r} -.-> C\n  C -.->|d| A;\n```\n'
    )
    assert chart.direction == "LR"
    assert chart.nodes == (
        mermaid.Node("A", mermaid.Shape.RECT, "x [y] (z)"),
        mermaid.Node("B", mermaid.Shape.RHOMBUS, "q\nr"),
        mermaid.Node("C", mermaid.Shape.RECT, "C"),  # never declared: mermaid draws its id in a rect
    )
    assert chart.links == (
        mermaid.Link("A", "a|b", "B"),
        mermaid.Link("B", "", "C", dotted=True),
        mermaid.Link("C", "d", "A", dotted=True),
    )


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("A --> B\n", "expected 'graph TD'"),
        ("graph TD\n  A ==> B\n", r"line 2: expected '-->' or '-\.->'"),
        ("graph TD\n  A[x] --> B\n  A[y]\n", "node A declared again"),
        ("graph TD\n  A[x --> B\n", "missing ']'"),
        ('graph TD\n  A["x] --> B\n', "quoted label"),
        ("graph TD\n  --> B\n", "expected a node id"),
        ("%% nothing\n", "no 'graph TD' header"),
    ],
)
def test_mermaid_errors_name_the_line(text: str, match: str) -> None:
    with pytest.raises(mermaid.MermaidError, match=match):
        mermaid.parse(text)


IDS = st.from_regex(r"[A-Z][A-Za-z0-9_]{0,5}", fullmatch=True)
LABELS = st.text(alphabet="ab Z09:-?.,'\"()[]{}|\n✓→", max_size=12)


@st.composite
def flowcharts(draw: st.DrawFn) -> mermaid.Flowchart:
    ids = draw(st.lists(IDS, min_size=1, max_size=6, unique=True))
    nodes = tuple(mermaid.Node(i, draw(st.sampled_from(mermaid.Shape)), draw(LABELS)) for i in ids)
    link = st.builds(mermaid.Link, st.sampled_from(ids), LABELS, st.sampled_from(ids), st.booleans())
    return mermaid.Flowchart(nodes, tuple(draw(st.lists(link, max_size=8))), draw(st.sampled_from(["TD", "LR"])))


@settings(max_examples=200)
@given(flowcharts())
def test_mermaid_render_parse_round_trip(chart: mermaid.Flowchart) -> None:
    assert mermaid.parse(mermaid.render(chart)) == chart
