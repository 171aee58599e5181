"""``Timeline``: a sequence diagram of a lab's packets across LANs, NATs, the internet and DERP (issue 7).

The lanes are the elements along a path, in the order of the capture points given, with the internet
between the two sides: ``alice | r1 | internet | derp1 | r2 | bob`` for the points ``alice/eth0``,
``r1/wan``, ``derp1/eth0``, ``r2/wan``, ``bob/eth0``. Each captured packet is an arrow between two
lanes, one row per event in time order (time on the left), labelled with the sniffer's summary
(``STUN Binding Request``, ``disco Ping ...``, ``DERP SendPacket to bob ...: disco CallMeMaybe``) and
coloured by protocol (:data:`~toolkit.widgets.timeline_svg.COLOURS`). Packets are dissected by a
:class:`~toolkit.widgets.packets.PacketInspector` (one :class:`~toolkit.packets.dissect.Analyzer` per
capture point; disco and WireGuard opened with the lab's keys, :func:`~toolkit.widgets.packets.lab_keyring`,
on every backend: the inspector refreshes them on the event loop as the captures are followed);
:attr:`Timeline.inspector` dissects any row on demand (``timeline.inspector.dissection(arrow.row)``).

**Hops** come from the capture point and the topology alone: a packet seen on interface ``I`` of ``E``
is on ``I``'s segment; each of its addresses is the element that owns it on that segment (a host's
address, a router's ``wan``/``lan`` address), an address off the segment is reached through the
segment's router (a LAN's gateway), and an element that is not a lane stands for the nearest lane
towards the internet (``stun1`` and ``control1`` are ``internet``). So on ``alice/eth0`` alice's
STUN request is ``alice → r1``; on ``r1/wan`` the same request, NATed, is ``r1 → internet``, and a
segment to the DERP server ``r1 → derp1``. The very same IP packet seen at two points of one segment
(``r1/wan`` and ``derp1/eth0``) is one arrow (its tooltip lists both points). Bare TCP ACKs are hidden
unless ``acks=True``.

**Transitions**: each ``transition`` record of the feed that is an edge of the seed flowchart
(:func:`~toolkit.sansio.peergraph.transition_of`) is a horizontal rule on its node's lane, labelled
``AnalyzeResponses -[Yes]-> ValidatePath``. Records and captures share the lab's clock (sim: virtual
time); at equal times packets come first (the Pong a node receives is drawn above the edge it causes).

**Rendering** (design.md §5) never runs on the event loop: :meth:`Timeline.add` and the feed only queue
packets and records; the :class:`~toolkit.widgets.render.ThrottledRenderer`'s worker thread dissects
what is queued and writes the SVG by hand (:mod:`~toolkit.widgets.timeline_svg`: no graphviz), at most
``1/min_interval`` times a second, requests coalescing. The widget is an ipywidgets ``HTML`` whose value
is the SVG, so a saved notebook's widget state shows the last picture. ``window`` limits what is drawn:
``N`` (the first N packets), ``-N`` (the last N) or ``(t0, t1)`` (seconds since the first packet).
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import ipywidgets  # type: ignore[import-untyped]

from toolkit.codec import pcapio
from toolkit.lab.backend import Capture, Lab
from toolkit.lab.topology import Router, Topology
from toolkit.packets.keyring import Keyring
from toolkit.sansio import peergraph
from toolkit.sansio.trace import TraceRecord
from toolkit.widgets.feed import CaptureFollower, TraceFeed
from toolkit.widgets.packets import PacketInspector, Row
from toolkit.widgets.render import RenderedView, ThrottledRenderer
from toolkit.widgets.timeline_svg import COLOURS, Arrow, Mark, draw

INTERNET_LANE = "internet"
DEFAULT_POINTS = (("alice", "eth0"), ("r1", "wan"), ("derp1", "eth0"), ("r2", "wan"), ("bob", "eth0"))
MERGE_WINDOW = 1.0  # seconds: the same IP packet at two points of a segment within this is one arrow
Window = int | tuple[float, float] | None


def _ip_pair(data: bytes) -> tuple[str, str] | None:
    """Source and destination address of a raw IP packet."""
    if len(data) >= 20 and data[0] >> 4 == 4:
        return str(ipaddress.IPv4Address(data[12:16])), str(ipaddress.IPv4Address(data[16:20]))
    if len(data) >= 40 and data[0] >> 4 == 6:
        return str(ipaddress.IPv6Address(data[8:24])), str(ipaddress.IPv6Address(data[24:40]))
    return None


def _bare_ack(row: Row) -> bool:
    if row.event is not None:
        return False
    tr = pcapio.transport(row.record)
    return tr is not None and tr.proto == pcapio.IPPROTO_TCP and not tr.payload and not tr.tcp_flags & 0x07


class Timeline(RenderedView):
    """See the module docstring. ``lab`` names the lanes (its topology), opens captures and gives the keys."""

    def __init__(
        self,
        lab: Lab,
        points: Sequence[tuple[str, str]] = DEFAULT_POINTS,
        feed: TraceFeed | None = None,
        keyring: Keyring | None = None,
        window: Window = None,
        *,
        acks: bool = False,
        min_interval: float = 0.1,
    ) -> None:
        self.lab = lab
        self.topology: Topology = lab.topology
        self.points = [f"{e}/{i}" for e, i in points]
        for e, i in points:
            self.topology.interface(e, i)  # a UsageError naming the interfaces if there is no such point
        self.lanes = self._lanes([e for e, _ in points])
        self.window: Window = window
        self.acks = acks
        self.inspector = PacketInspector(lab, keyring)  # DERP's addresses; without a keyring: the lab's keys
        self.marks: list[Mark] = []
        self.skipped = 0  # rows not drawn: bare ACKs (acks=False) and packets without an IP header
        self._arrows: list[Arrow] = []
        self._recent: dict[tuple[str, str, bytes, str], int] = {}  # merge key -> index in _arrows
        self._pending: list[tuple[str, float, bytes]] = []
        self._lock = threading.RLock()
        self.inspector.keys_lock = self._lock  # the render thread dissects with the keyring under this lock
        self.following = CaptureFollower(
            lambda point, ts, data: self.add([(ts, data)], point), "timeline", before=self.inspector.keys_for
        )  # keys refreshed on the loop, before the render thread dissects
        self.title = ipywidgets.HTML()
        self.chart = ipywidgets.HTML(layout=ipywidgets.Layout(max_height="640px", overflow="auto"))
        self.widget = ipywidgets.VBox([self.title, self.chart])
        self.renderer = ThrottledRenderer(
            self.produce, self._deliver, min_interval=min_interval, name="timeline", to_svg=str
        )  # produce() writes SVG itself: no dot
        self.renderer.request()
        self._unsubscribe = feed.subscribe(self.add_record) if feed is not None else None

    # --- lanes and hops --------------------------------------------------------------------------

    def _lanes(self, elements: list[str]) -> list[str]:
        """The elements in order, once each, with the internet before the first public host (else after
        the first element nearest the internet: the last router on the way up)."""
        lanes = list(dict.fromkeys(elements))
        if INTERNET_LANE in lanes:
            return lanes
        servers = {h.name for h in self.topology.public_hosts()}
        public = [i for i, n in enumerate(lanes) if n in servers]
        if public:
            at = public[0]
        else:
            depth = [len(self.topology.path_to_internet(n)) for n in lanes]
            at = depth.index(min(depth)) + 1 if lanes else 0
        return [*lanes[:at], INTERNET_LANE, *lanes[at:]]

    def _owner(self, ip: str, segment: str) -> str:
        """The element behind address ``ip`` as seen on ``segment`` (see the module docstring)."""
        topo = self.topology
        for h in topo.hosts_on(segment):
            if ip in {str(a) for a in h.addresses}:
                return h.name
        for r in topo.routers:
            if (r.wan == segment and str(r.wan_v4) == ip) or (r.lan == segment and str(r.lan_v4) == ip):
                return r.name
        gateway = topo.router_for(segment)
        if gateway is not None:
            return gateway.name  # off this LAN: through its router
        for h in topo.hosts:  # on the internet: a public host, or a host behind a plain (non-NAT) router
            if ip in {str(a) for a in h.addresses}:
                return h.name
        return INTERNET_LANE

    def _lane_of(self, element: str) -> str:
        """``element``'s lane, or the nearest lane on its way to the internet."""
        if element in self.lanes:
            return element
        if element == INTERNET_LANE:
            return INTERNET_LANE
        for router in self.topology.path_to_internet(element):
            if router.name in self.lanes:
                return router.name
        return INTERNET_LANE

    def hop(self, point: str, src_ip: str, dst_ip: str) -> tuple[str, str]:
        """The lanes a packet from ``src_ip`` to ``dst_ip`` seen at ``point`` (``r1/wan``) goes between."""
        element, _, iface = point.partition("/")
        segment = self.topology.interface(element, iface).segment
        return self._lane_of(self._owner(src_ip, segment)), self._lane_of(self._owner(dst_ip, segment))

    # --- packets and records in ------------------------------------------------------------------

    def add(self, packets: Iterable[Any] | Capture | TraceRecord, point: str = "") -> None:
        """Queue packets (a Capture, or ``Packet(time, data)`` / ``(time, data)`` seen at ``point``) or one
        trace record; the render thread dissects and draws them. Cheap: safe on the event loop."""
        if isinstance(packets, TraceRecord):
            self.add_record(packets)
            return
        if isinstance(packets, Capture):
            point = point or f"{packets.element}/{packets.interface}"
            packets = list(packets.packets)
        batch = [(point, float(ts), bytes(data)) for ts, data in packets]
        with self._lock:
            self._pending.extend(batch)
        self.renderer.request()

    def add_record(self, record: TraceRecord) -> None:
        """Take one trace record (the feed calls this): a seed-flowchart edge of a lane's node is a mark."""
        if record.kind != "transition" or record.node not in self.lanes:
            return
        try:
            edge = peergraph.transition_of(record)
        except peergraph.NoSuchTransition:
            return  # another machine's transition (WireGuard, DERP client ...)
        with self._lock:
            self.marks.append(Mark(record.at, record.node, edge, record))
        self.renderer.request()

    async def watch(self, element: str | None = None, interface: str | None = None) -> list[Capture]:
        """Open a capture on one point, or (no arguments) on every point, and follow it live."""
        wanted = [(element, interface)] if element is not None else [p.split("/", 1) for p in self.points]
        captures = []
        for e, i in wanted:
            capture = await self.lab.open_capture(e, i or "eth0")
            self.follow(capture)
            captures.append(capture)
        return captures

    def follow(self, capture: Capture, point: str | None = None) -> asyncio.Task[None]:
        """Draw the packets of an open ``capture`` as they come, until :meth:`stop`."""
        return self.following.follow(capture, point)

    async def stop(self) -> None:
        """Stop following the captures (what was seen stays) and render what is queued, off the loop."""
        await self.following.stop_following()
        if self.inspector.lab_keys:
            await self.inspector.refresh_keys()
        await asyncio.to_thread(self.renderer.flush)

    # --- queued packets to arrows (on the render thread, or a caller's) ---------------------------

    def _drain(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            by_point: dict[str, list[tuple[float, bytes]]] = {}
            for point, ts, data in batch:
                by_point.setdefault(point, []).append((ts, data))
            for point, packets in by_point.items():
                for row in self.inspector.extend(packets, point):
                    self._arrow(row)

    def _arrow(self, row: Row) -> None:
        pair = _ip_pair(row.record.data)
        if pair is None or (not self.acks and _bare_ack(row)):
            self.skipped += 1
            return
        src, dst = self.hop(row.point, *pair)
        ts = row.record.ts
        key = (src, dst, row.record.data, row.summary)
        i = self._recent.get(key)
        if i is not None:
            seen = self._arrows[i]
            if row.point not in seen.points and abs(ts - seen.t_last) <= MERGE_WINDOW:
                self._arrows[i] = replace(seen, t=min(seen.t, ts), t_last=max(seen.t_last, ts),
                                          points=(*seen.points, row.point))  # fmt: skip
                return
        self._recent[key] = len(self._arrows)
        self._arrows.append(Arrow(ts, src, dst, row.protocol, row.summary, (row.point,), row, ts))

    @property
    def arrows(self) -> list[Arrow]:
        """Every arrow so far (all packets queued are dissected first), in time order."""
        self._drain()
        with self._lock:
            return sorted(self._arrows, key=lambda a: a.t)

    def events(self) -> list[Arrow | Mark]:
        """What the diagram draws, top to bottom: arrows and marks in time order (packets first at a tie),
        limited by :attr:`window`."""
        self._drain()
        with self._lock:
            arrows, marks = sorted(self._arrows, key=lambda a: a.t), sorted(self.marks, key=lambda m: m.t)
        t0 = arrows[0].t if arrows else marks[0].t if marks else 0.0
        w = self.window
        if isinstance(w, int):
            arrows = arrows[:w] if w >= 0 else arrows[w:]
            lo = arrows[0].t if w < 0 and arrows else float("-inf")
            hi = arrows[-1].t if w >= 0 and arrows else float("inf")
            marks = [m for m in marks if lo <= m.t <= hi]
        elif w is not None:
            lo, hi = t0 + w[0], t0 + w[1]
            arrows = [a for a in arrows if lo <= a.t <= hi]
            marks = [m for m in marks if lo <= m.t <= hi]
        out: list[tuple[float, int, Arrow | Mark]] = [(a.t, 0, a) for a in arrows] + [(m.t, 1, m) for m in marks]
        return [e for _, _, e in sorted(out, key=lambda x: (x[0], x[1]))]  # stable: marks in record order

    def set_window(self, window: Window) -> None:
        """Draw only the first N packets (``N``), the last N (``-N``), a time range ``(t0, t1)``, or all (None)."""
        self.window = window
        self.renderer.request()

    # --- the picture -----------------------------------------------------------------------------

    def produce(self) -> str:
        """The SVG of :meth:`events` (runs on the render thread)."""
        events = self.events()
        with self._lock:
            t0 = min((a.t for a in self._arrows), default=min((e.t for e in events), default=0.0))
        return draw([(lane, self._caption(lane)) for lane in self.lanes], events, t0)

    def _caption(self, lane: str) -> str:
        if lane == INTERNET_LANE:
            return ", ".join(h.name for h in self.topology.public_hosts() if h.name not in self.lanes)
        element = self.topology.element(lane)
        if isinstance(element, Router):
            return f"{'NAT ' + element.nat.name if element.nat else 'router'} {element.wan_v4}"
        return str(element.v4)

    def _deliver(self, svg: str) -> None:  # on the render thread
        self.chart.value = svg
        with self._lock:
            counts = len(self._arrows), len(self.marks), self.skipped
        lanes = " | ".join(self.lanes)
        self.title.value = (f"<b>timeline</b> {html.escape(lanes)}: {counts[0]} packets, {counts[1]} transitions"
                            + (f" ({counts[2]} bare ACKs hidden)" if counts[2] else ""))  # fmt: skip

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


__all__ = ["COLOURS", "DEFAULT_POINTS", "INTERNET_LANE", "Arrow", "Mark", "Timeline", "Window"]
