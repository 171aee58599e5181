"""``TopologyView``: the lab's topology drawn by graphviz, with each node's current path to each peer.

The picture (:meth:`TopologyView.dot`) has the segments (the internet, LANs, carrier networks, with
their prefixes), the routers (``NAT easy`` / ``NAT hard`` ... : the :class:`~toolkit.lab.nat.NatBehavior`
preset's name, or ``router`` for a plain one) and the hosts (address, services, ``node``), wired as
the :class:`~toolkit.lab.topology.Topology` says; over them, one edge per pair of nodes labelled with
the path between them: ``direct``, ``local`` (a direct path over private addresses) or ``derp``.

Paths come from public trace records only (design.md §2), as ``natkit lab run`` derives them:

* the state of ``host``'s machine for a peer is the destination of its last seed-flowchart edge
  (:func:`toolkit.sansio.peergraph.transition_of`); its coarse state (:func:`~toolkit.sansio.peergraph.coarse`)
  is DERP relay / probing / fallback → ``derp`` (packets ride DERP until the path is trusted,
  protocols.md §4.3), direct P2P → ``direct`` or ``local``; before ``StartDERP`` there is no path yet;
* the direct path's endpoint is where the node sends WireGuard over UDP since it went direct (the
  best address), else the source of the last disco Pong from the peer; ``local`` when that endpoint
  is private (:func:`toolkit.sansio.peerflow_types.is_private_endpoint`, the node's own rule).

Records name peers by node key; a key is given a host name from ``names``, from
:meth:`TopologyView.update_from_status` (a node's status lists its peers' names and keys), or by
elimination: the one node host of the topology that is not walking towards that key itself.
:meth:`update_from_status` also sets the paths straight from a status (``path``, ``state``,
``endpoint`` of each peer), the simpler source for an out-of-process node; the newest of the two wins.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import ipywidgets  # type: ignore[import-untyped]

from toolkit.lab.topology import Host, Router, Segment, Topology
from toolkit.sansio import peergraph
from toolkit.sansio.derphome import region_of
from toolkit.sansio.peerflow_types import is_private_endpoint
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Endpoint, Key32
from toolkit.widgets.feed import TraceFeed
from toolkit.widgets.render import RenderedView, ThrottledRenderer

PATH_STYLE = {  # colour, dot style: the seed's colours for direct (DirectActive) and DERP (DERPActive)
    "direct": ("#388e3c", "bold"),
    "local": ("#1976d2", "bold"),
    "derp": ("#f57c00", "dashed"),
}
_C = peergraph.CoarseState


@dataclass(frozen=True, slots=True)
class PathInfo:
    """What a node uses to reach a peer: ``kind`` (direct, local, derp), its flowchart state and endpoint."""

    kind: str
    state: str | None
    endpoint: str | None = None


@dataclass(slots=True)
class _Flow:
    state: str | None = None
    direct_since: float | None = None  # when the node last entered a direct state
    wg: tuple[float, Endpoint] | None = None  # last WireGuard sent over UDP: when, where
    pong: Endpoint | None = None  # source of the last disco Pong over UDP
    status: PathInfo | None = None  # set by update_from_status; cleared by a newer edge


def _q(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: str) -> str:
    return "[" + ", ".join(f"{k}={_q(v)}" for k, v in attrs.items()) + "]"


def _peer_text(peer: Key32 | str | None) -> str | None:
    return peer.text() if isinstance(peer, Key32) else peer


class TopologyView(RenderedView):
    """The topology of ``topology`` (a :class:`Topology` or a lab) with the nodes' paths, from ``feed``."""

    def __init__(
        self,
        topology: Topology | Any,
        feed: TraceFeed | None = None,
        *,
        names: dict[str, str] | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self.topology: Topology = topology if isinstance(topology, Topology) else topology.topology
        self.names: dict[str, str] = dict(names or {})  # peer key text -> host name
        self._nodes = {h.name for h in self.topology.nodes()}
        self._flows: dict[tuple[str, str], _Flow] = {}  # (host, peer key text)
        self.title = ipywidgets.HTML(
            f"<b>{html.escape(self.topology.name)}</b>: {html.escape(self.topology.description)}"
        )
        self.chart = ipywidgets.HTML(layout=ipywidgets.Layout(max_width="760px", overflow="auto"))
        self.table = ipywidgets.HTML()
        self.widget = ipywidgets.VBox([self.title, self.chart, self.table])
        self.renderer = ThrottledRenderer(self.dot, self._deliver, min_interval=min_interval, name="topology")
        self.renderer.request()
        self._unsubscribe = feed.subscribe(self.add) if feed is not None else None

    # --- records and status in -------------------------------------------------------------------

    def add(self, record: TraceRecord) -> None:
        """Take one record (the feed calls this)."""
        if record.node not in self._nodes or record.peer is None:
            return
        flow = self._flows.setdefault((record.node, record.peer.text()), _Flow())
        if record.kind == "transition":
            try:
                edge = peergraph.transition_of(record)
            except peergraph.NoSuchTransition:
                return
            flow.state, flow.status = edge.dst.value, None
            if peergraph.coarse(edge.dst) is _C.DIRECT_P2P and flow.direct_since is None:
                flow.direct_since = record.at
            elif peergraph.coarse(edge.dst) is not _C.DIRECT_P2P:
                flow.direct_since = None
            self.renderer.request()  # the table shows the state: every edge (requests coalesce)
            return
        ep = record.endpoint
        if ep is None or region_of(ep) is not None:
            return  # DERP or no address
        before = self._kind(flow)
        if record.kind == "sent" and record.detail.startswith("WireGuard"):
            flow.wg = (record.at, ep)
        elif record.kind == "received" and record.detail.startswith("disco Pong"):
            flow.pong = ep
        if self._kind(flow) != before:  # direct <-> local
            self.renderer.request()

    def update_from_status(self, host: str, status: dict[str, Any]) -> None:
        """Learn ``host``'s peers (names, keys) and its paths from a node status (``NodeStatus.to_json()``)."""
        me = status.get("self") or {}
        if me.get("node_key"):
            self.names[str(me["node_key"])] = host
        for p in status.get("peers") or []:
            key = p.get("node_key")
            if not key:
                continue
            key = str(key)
            if p.get("name"):
                self.names[key] = str(p["name"])
            flow = self._flows.setdefault((host, key), _Flow())
            kind = p.get("path") if p.get("path") in PATH_STYLE else None
            flow.state = p.get("state") or flow.state
            flow.status = PathInfo(kind, flow.state, p.get("endpoint")) if kind else None
        self.renderer.request()

    # --- paths -----------------------------------------------------------------------------------

    @staticmethod
    def _endpoint(flow: _Flow) -> Endpoint | None:
        if flow.wg is not None and flow.direct_since is not None and flow.wg[0] >= flow.direct_since:
            return flow.wg[1]
        return flow.pong if flow.pong is not None else (flow.wg[1] if flow.wg is not None else None)

    def _kind(self, flow: _Flow) -> str | None:
        if flow.status is not None:
            return flow.status.kind
        if flow.state is None:
            return None
        c = peergraph.coarse(peergraph.State(flow.state))
        if c is _C.CONNECTING:
            return None
        if c is not _C.DIRECT_P2P:
            return "derp"
        ep = self._endpoint(flow)
        return "local" if ep is not None and is_private_endpoint(ep) else "direct"

    def name_of(self, key: str) -> str:
        """The host name of a peer key: given, learned from a status, or the one node host left."""
        if key in self.names:
            return self.names[key]
        walkers = {host for host, k in self._flows if k == key}
        owned = {self.names[k] for k in {k for _, k in self._flows} if k in self.names}
        left = sorted(self._nodes - walkers - owned)
        return left[0] if len(left) == 1 else key[:16] + ".."

    def paths(self) -> dict[tuple[str, str], PathInfo]:
        """Every (host, peer host) with a path now, and that path."""
        out = {}
        for (host, key), flow in sorted(self._flows.items()):
            kind = self._kind(flow)
            if kind is None:
                continue
            if flow.status is not None:
                out[(host, self.name_of(key))] = flow.status
                continue
            ep = self._endpoint(flow) if kind != "derp" else None
            out[(host, self.name_of(key))] = PathInfo(kind, flow.state, str(ep) if ep is not None else None)
        return out

    def path(self, host: str, peer: str) -> str | None:
        """The kind of path ``host`` uses to ``peer`` (a host name) now, or None."""
        info = self.paths().get((host, peer))
        return info.kind if info is not None else None

    # --- the picture -----------------------------------------------------------------------------

    def dot(self) -> str:
        """The topology and the paths as an undirected graphviz graph."""
        topo = self.topology
        out = [f"graph {_q(topo.name)} {{", "    rankdir=TB;", '    node [fontname="Helvetica", fontsize=10];',
               '    edge [fontname="Helvetica", fontsize=9, color="#9e9e9e"];']  # fmt: skip
        out += [f"    {_q('seg:' + s.name)} {self._segment_attrs(s)};" for s in topo.segments]
        out += [f"    {_q(r.name)} {self._router_attrs(r)};" for r in topo.routers]
        out += [f"    {_q(h.name)} {self._host_attrs(h)};" for h in topo.hosts]
        for r in topo.routers:  # internet on top: edges run from the upstream side down
            out.append(f"    {_q('seg:' + r.wan)} -- {_q(r.name)} {_attrs(headlabel='wan')};")
            out.append(f"    {_q(r.name)} -- {_q('seg:' + r.lan)} {_attrs(taillabel='lan')};")
        out += [f"    {_q('seg:' + h.segment)} -- {_q(h.name)};" for h in topo.hosts]
        out += self._path_edges()
        out.append("}")
        return "\n".join(out) + "\n"

    def _path_edges(self) -> list[str]:
        paths = self.paths()
        lines, done = [], set()
        for (a, b), info in paths.items():
            if (a, b) in done or a == b:
                continue
            back = paths.get((b, a))
            same = back is not None and back.kind == info.kind
            label = info.kind if same else f"{a}→{b}: {info.kind}"
            colour, style = PATH_STYLE[info.kind]
            attrs = _attrs(label=label, color=colour, fontcolor=colour, style=style, penwidth="2.5",
                           constraint="false", dir="both" if same else "forward")  # fmt: skip
            lines.append(f"    {_q(a)} -- {_q(b)} {attrs};")
            done.add((a, b))
            if same:
                done.add((b, a))
        return lines

    @staticmethod
    def _segment_attrs(s: Segment) -> str:
        prefixes = "\n".join(str(p) for p in s.v4)
        fill = "#e3f2fd" if s.is_internet else "#f5f5f5"
        what = s.name if s.is_internet else f"{s.name} ({s.kind.value})"
        return _attrs(shape="ellipse", style="filled", fillcolor=fill, label=f"{what}\n{prefixes}")

    @staticmethod
    def _router_attrs(r: Router) -> str:
        what = f"NAT {r.nat.name}" if r.nat is not None else "router"
        return _attrs(shape="box", style="rounded,filled", fillcolor="#fff3e0", label=f"{r.name}\n{what}\n{r.wan_v4}")

    def _host_attrs(self, h: Host) -> str:
        roles = [s.kind for s in h.services] + (["node"] if h.node else [])
        fill = "#e8f5e9" if h.node else "#ffffff"
        return _attrs(shape="box", style="filled", fillcolor=fill, label="\n".join([h.name, str(h.v4), *roles]))

    def _deliver(self, svg: str) -> None:  # on the render thread
        self.chart.value = svg
        rows = "".join(
            f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td><b>{p.kind}</b></td>"
            f"<td>{html.escape(p.state or '')}</td><td>{html.escape(p.endpoint or '')}</td></tr>"
            for (a, b), p in self.paths().items()
        )
        head = "<tr><th>node</th><th>peer</th><th>path</th><th>state</th><th>endpoint</th></tr>"
        self.table.value = f"<table>{head}{rows}</table>" if rows else "<i>no paths yet</i>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


__all__ = ["PATH_STYLE", "PathInfo", "TopologyView"]
