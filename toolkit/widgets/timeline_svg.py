"""The pieces of :class:`~toolkit.widgets.timeline.Timeline`'s picture: its values and the hand-written SVG.

:class:`Arrow` (one packet's hop between two lanes) and :class:`Mark` (a seed-flowchart edge on a node's
lane) are what the timeline draws; :func:`draw` lays them out one row each, top to bottom, under the lane
headers, as one SVG string (a few ms for hundreds of rows: no graphviz, design.md §5). Arrows and marks
are ``<g class="arrow" data-src data-dst data-protocol>`` / ``<g class="mark" data-lane data-edge>``
groups with a ``<title>`` tooltip (the full summary, addresses, the points that saw the packet), so the
picture can be read back (tests) and hovered (notebooks). The timeline's
:class:`~toolkit.widgets.render.ThrottledRenderer` takes this SVG as is (``to_svg=str``: no ``dot`` run).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.sansio.peergraph import Transition
from toolkit.sansio.trace import TraceRecord
from toolkit.widgets.packets import Row

COLOURS = {"stun": "#1976d2", "disco": "#388e3c", "wireguard": "#7b1fa2", "derp": "#f57c00", "other": "#9e9e9e"}
MARK_COLOUR = "#d32f2f"
LEFT, LANE_W, TOP, ROW_H, LABEL_MAX = 78, 150, 58, 17, 72  # layout, in pixels (LABEL_MAX: characters)
_HALO = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"'  # labels stay readable over lines


@dataclass(frozen=True, slots=True)
class Arrow:
    """One packet's hop between two lanes; ``points`` are the capture points that saw it."""

    t: float  # capture time (the lab's clock) when first seen
    src: str  # lane
    dst: str  # lane
    protocol: str  # a PacketInspector protocol: stun, disco, wireguard, derp, other
    summary: str
    points: tuple[str, ...]
    row: Row  # the inspector's row (first seen): ``timeline.inspector.dissection(arrow.row)``
    t_last: float  # when last seen (the last point)


@dataclass(frozen=True, slots=True)
class Mark:
    """A seed-flowchart edge a node took, drawn on its lane."""

    t: float
    lane: str
    edge: Transition
    record: TraceRecord

    @property
    def label(self) -> str:
        e = self.edge
        return f"{e.src.value} -[{e.label}]-> {e.dst.value}" if e.label else f"{e.src.value} -> {e.dst.value}"


def draw(lanes: Sequence[tuple[str, str]], events: Sequence[Arrow | Mark], t0: float) -> str:
    """The SVG of ``events`` (in order, one row each) under ``lanes`` ((name, caption), left to right);
    times on the left are seconds since ``t0``, written when they change."""
    x = {name: LEFT + LANE_W // 2 + i * LANE_W for i, (name, _) in enumerate(lanes)}
    width, height = LEFT + LANE_W * len(lanes) + 260, TOP + ROW_H * (len(events) + 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'font-family="Helvetica, Arial, sans-serif" font-size="10"><defs>'
    ]
    for proto, colour in COLOURS.items():
        out.append(
            f'<marker id="nk-{proto}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
        )
    legend = "  ".join(f'<tspan fill="{c}">&#9632; {p}</tspan>' for p, c in COLOURS.items())
    out.append(f'</defs><text x="4" y="12">{legend}<tspan fill="{MARK_COLOUR}">  &#9644; transition</tspan></text>')
    for name, caption in lanes:
        out.append(
            f'<g class="lane" data-lane="{html.escape(name)}"><text x="{x[name]}" y="30" text-anchor="middle" '
            f'font-weight="bold" font-size="12">{html.escape(name)}</text><text x="{x[name]}" y="43" '
            f'text-anchor="middle" fill="#616161">{html.escape(caption)}</text><line x1="{x[name]}" y1="{TOP - 8}" '
            f'x2="{x[name]}" y2="{height}" stroke="#bdbdbd" stroke-dasharray="4,3"/></g>'
        )
    last = None
    for n, ev in enumerate(events):
        y = TOP + ROW_H * n + 10
        t = f"{ev.t - t0:.3f}s"
        if t != last:
            out.append(f'<text x="{LEFT - 6}" y="{y + 3}" text-anchor="end" fill="#757575">{t}</text>')
            last = t
        out.append(_arrow(ev, x, y) if isinstance(ev, Arrow) else _mark(ev, x[ev.lane], y))
    out.append("</svg>")
    return "".join(out)


def _arrow(a: Arrow, x: dict[str, int], y: int) -> str:
    colour = COLOURS.get(a.protocol, COLOURS["other"])
    x1, x2 = x[a.src], x[a.dst]
    label = a.summary if len(a.summary) <= LABEL_MAX else a.summary[: LABEL_MAX - 2] + ".."
    tip = f"{a.summary}\n{a.row.src} -> {a.row.dst}\nseen at {', '.join(a.points)}"
    head = f'stroke="{colour}" marker-end="url(#nk-{a.protocol if a.protocol in COLOURS else "other"})"'
    if x1 == x2:  # both ends on one lane (addresses the topology does not place): a short loop
        shape = f'<path d="M{x1},{y - 4} h14 v8 h-12" fill="none" {head}/>'
    else:
        shape = f'<line x1="{x1}" y1="{y}" x2="{x2 - 2 if x2 > x1 else x2 + 2}" y2="{y}" stroke-width="1.4" {head}/>'
    return (
        f'<g class="arrow" data-src="{html.escape(a.src)}" data-dst="{html.escape(a.dst)}" '
        f'data-protocol="{html.escape(a.protocol)}"><title>{html.escape(tip)}</title>{shape}'
        f'<text x="{min(x1, x2) + 10}" y="{y - 3}" fill="{colour}"{_HALO}>{html.escape(label)}</text></g>'
    )


def _mark(m: Mark, x: int, y: int) -> str:
    tip = f"{m.record.node}: {m.label} at {m.t:.6f}"
    return (
        f'<g class="mark" data-lane="{html.escape(m.lane)}" data-edge="{html.escape(m.label)}">'
        f'<title>{html.escape(tip)}</title><line x1="{x - LANE_W // 2 + 8}" y1="{y}" '
        f'x2="{x + LANE_W // 2 - 8}" y2="{y}" stroke="{MARK_COLOUR}" stroke-width="3"/>'
        f'<text x="{x + LANE_W // 2 - 4}" y="{y + 4}" fill="{MARK_COLOUR}" font-weight="bold">'
        f"{html.escape(m.label)}</text></g>"
    )


__all__ = ["COLOURS", "MARK_COLOUR", "Arrow", "Mark", "draw"]
