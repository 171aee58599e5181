"""``FlowchartView``: the seed flowchart live for one node and one peer, with a transition log (issue 7).

The picture is :func:`toolkit.sansio.peergraph.to_dot` (the seed's nodes, labels, edges and colours;
extensions dashed) with the node's current state highlighted (:data:`~toolkit.sansio.peergraph.CURRENT_COLOURS`)
and the edge it took last drawn bold purple (:func:`mark_edge` adds the attributes to that edge's line).
It is drawn by graphviz on a worker thread, throttled (:mod:`toolkit.widgets.render`): records arrive
on the event loop, the loop never waits for ``dot``.

The view reads only public trace records (design.md §2) from a :class:`~toolkit.widgets.feed.TraceFeed`:
the node's ``transition`` records that :func:`~toolkit.sansio.peergraph.transition_of` accepts (other
machines' transitions are skipped, as :func:`toolkit.lab.runreport.walk_of` skips them) and its packet
records. Each edge's *cause* is chosen as ``natkit demo``'s Narrator does (:mod:`toolkit.lab.demo`):
the last packet received from the peer since the previous edge (the Pong that made
``AnalyzeResponses`` say yes, the peer's CallMeMaybe), else the first one sent (the WireGuard packet
that started discovery, a heartbeat ping). Selecting a log entry shows that packet dissected by scapy
(:func:`dissect_record`); WireGuard transport data is decrypted when a :class:`Keyring` is given.

The ipywidgets tree (:attr:`FlowchartView.widget`, a ``VBox``) is a title, the chart (an ``HTML``
whose value is the SVG, so a saved notebook's widget state shows the last picture), the log (a
``Select``) and the dissection (an ``HTML`` ``<pre>``). The view itself displays as that VBox; it is
not a VBox subclass because ``Widget.log`` (a logger) would clash with :attr:`FlowchartView.log`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets  # type: ignore[import-untyped]

from toolkit.sansio import peergraph
from toolkit.sansio.peergraph import State, Transition
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Key32
from toolkit.widgets.feed import TraceFeed
from toolkit.widgets.render import RenderedView, ThrottledRenderer

if TYPE_CHECKING:
    from toolkit.packets.keyring import Keyring

TAKEN_COLOUR = "#7b1fa2"  # the edge just taken (purple: no seed node has it)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One edge the node took: when, which, and the packet record behind it (None if no packet came first)."""

    index: int
    at: float  # the record's time (the core's clock)
    t: float  # seconds since the node's first packet
    edge: Transition
    record: TraceRecord
    cause: TraceRecord | None

    def line(self) -> str:
        """``  0.258s  MultiProbe -> AnalyzeResponses    [received 203.0.113.2:41641: disco Pong ...]``."""
        label = f" -[{self.edge.label}]->" if self.edge.label else " ->"
        text = f"{self.t:8.3f}s  {self.edge.src.value}{label} {self.edge.dst.value}"
        if self.cause is not None:
            where = f" {self.cause.endpoint}" if self.cause.endpoint is not None else ""
            text += f"    [{self.cause.kind}{where}: {self.cause.detail}]"
        return text


def mark_edge(dot: str, edge: Transition, colour: str = TAKEN_COLOUR) -> str:
    """``dot`` (from :func:`peergraph.to_dot`) with ``edge`` drawn bold in ``colour``; unchanged if absent.
    Two edges may join the same states (StayOnDERP -> SendSTUN): the label tells them apart."""
    head = f"    {edge.src.value} -> {edge.dst.value}"
    extra = f'color="{colour}", fontcolor="{colour}", penwidth=3'
    lines = dot.split("\n")
    for i, line in enumerate(lines):
        rest = line[len(head) :]
        if not line.startswith(head) or rest[:1] not in (" ", ";"):
            continue
        wanted = f'label="{edge.label}"' in rest if edge.label else 'label="' not in rest
        if not wanted:
            continue
        lines[i] = head + (rest[:-2] + f", {extra}];" if rest.endswith("];") else f" [{extra}];")
        break
    return "\n".join(lines)


def dissect_record(record: TraceRecord, keyring: Keyring | None = None) -> str:
    """A packet record as text: its summary, the scapy dissection of its bytes, and a hex dump.

    A node's disco records carry the opened plaintext (a disco message, :class:`DiscoMessage`); its STUN
    and WireGuard records the datagram (dissected by content, protocols.md §4.11), WireGuard transport
    data decrypted with ``keyring`` when it holds the session's keys. Imports scapy on first use."""
    from scapy.utils import hexdump

    from toolkit.packets.disco import DiscoMessage
    from toolkit.packets.dissect import Analyzer, Event

    out = [record.summary()]
    raw = record.raw
    if not raw:
        return out[0] + "\n(the record carries no packet bytes)"
    try:
        if record.detail.startswith("disco"):
            text = DiscoMessage(raw).show(dump=True)
        else:
            d = Analyzer(keyring).describe(raw)
            ev = Event(0, record.at, "", "", "udp", d.kind.value, d.summary, raw, None, d.error, d.opened, d.inner)
            text = d.summary + "\n" + ev.dissection()
    except Exception as exc:  # show what there is: the summary and the bytes
        text = f"(scapy could not dissect it: {type(exc).__name__}: {exc})"
    out += [str(text).rstrip(), f"{len(raw)} bytes:", str(hexdump(raw, dump=True))]
    return "\n".join(out)


def _peer_text(peer: Key32 | str | None) -> str | None:
    return peer.text() if isinstance(peer, Key32) else peer


class FlowchartView(RenderedView):
    """The seed flowchart of ``node``'s machine for ``peer`` (default: the first peer it walks for)."""

    def __init__(
        self,
        feed: TraceFeed | None = None,
        node: str = "alice",
        peer: Key32 | str | None = None,
        *,
        keyring: Keyring | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.node, self.peer, self.keyring = node, _peer_text(peer), keyring
        self.state: str | None = None  # the current state id
        self.taken: Transition | None = None  # the edge taken last
        self.log: list[LogEntry] = []
        self._t0: float | None = None
        self._first_sent: dict[str | None, TraceRecord] = {}  # per peer, since its last edge
        self._last_received: dict[str | None, TraceRecord] = {}
        self._shown = -1  # log length the widgets show
        self._updating = False
        self.title = ipywidgets.HTML()
        self.chart = ipywidgets.HTML(layout=ipywidgets.Layout(max_width="640px", overflow="auto"))
        self.log_select = ipywidgets.Select(options=[], rows=8, layout=ipywidgets.Layout(width="100%"))
        self.packet = ipywidgets.HTML()
        self.log_select.observe(self._on_select, names="value")
        self.widget = ipywidgets.VBox([self.title, self.chart, self.log_select, self.packet])
        self.renderer = ThrottledRenderer(self.dot, self._deliver, min_interval=min_interval, name=f"flowchart {node}")
        self._refresh_title()
        self.renderer.request()
        self._unsubscribe = feed.subscribe(self.add) if feed is not None else None

    # --- records in ------------------------------------------------------------------------------

    def add(self, record: TraceRecord) -> None:
        """Take one record (the feed calls this); a new edge of the watched peer schedules a render."""
        if record.node != self.node:
            return
        who = _peer_text(record.peer)
        if record.kind in ("sent", "received"):
            if self._t0 is None:
                self._t0 = record.at
            if record.detail:
                if record.kind == "received":
                    self._last_received[who] = record
                else:
                    self._first_sent.setdefault(who, record)
            return
        if record.kind != "transition":
            return
        try:
            edge = peergraph.transition_of(record)
        except peergraph.NoSuchTransition:
            return  # another machine's transition (WireGuard, DERP client, ...)
        if self.peer is None:
            self.peer = who
        if who != self.peer:
            return
        cause = self._last_received.pop(who, None) or self._first_sent.get(who)
        self._first_sent.pop(who, None)
        t = record.at - (self._t0 if self._t0 is not None else record.at)
        self.log.append(LogEntry(len(self.log), record.at, t, edge, record, cause))
        self.state, self.taken = edge.dst.value, edge
        self.renderer.request()

    # --- the picture -----------------------------------------------------------------------------

    def dot(self) -> str:
        """The dot text of the picture: seed colours, the current state highlighted, the last edge marked."""
        current = State(self.state) if self.state is not None else None
        text = peergraph.to_dot(current)
        return mark_edge(text, self.taken) if self.taken is not None else text

    def _deliver(self, svg: str) -> None:  # on the render thread
        self.chart.value = svg
        self._refresh_title()
        n = len(self.log)
        if n != self._shown:
            keep = self.log_select.value
            self._updating = True
            try:
                self.log_select.options = [(e.line(), e.index) for e in self.log[:n]]
                self.log_select.value = keep if keep is not None and keep < n else None
            finally:
                self._updating = False
            self._shown = n

    def _refresh_title(self) -> None:
        peer = self.peer[:16] + ".." if self.peer else "(no peer yet)"
        where = "" if self.state is None else f": <b>{self.state}</b> ({peergraph.coarse(State(self.state)).value})"
        self.title.value = f"{html.escape(self.node)} &rarr; {html.escape(peer)}{where}, {len(self.log)} transitions"

    # --- the log ---------------------------------------------------------------------------------

    def select(self, index: int) -> str:
        """Show log entry ``index``'s packet dissected; the text shown."""
        entry = self.log[index]
        head = entry.line().strip()
        if entry.cause is None:
            text = f"{head}\n\nno packet record came before this edge: the node's own timer or decision took it"
        else:
            text = f"{head}\n\n{dissect_record(entry.cause, self.keyring)}"
        self.packet.value = f"<pre style='font-size:11px;line-height:1.2'>{html.escape(text)}</pre>"
        return text

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._updating and change.get("new") is not None:
            self.select(int(change["new"]))

    @property
    def walk(self) -> list[str]:
        """The states walked, from the first edge's source (as :func:`toolkit.lab.runreport.walk_of`)."""
        return ([self.log[0].edge.src.value] if self.log else []) + [e.edge.dst.value for e in self.log]

    # --- display ---------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


__all__ = ["TAKEN_COLOUR", "FlowchartView", "LogEntry", "dissect_record", "mark_edge"]
