"""A small flowchart model, a parser for the mermaid subset the seed uses, and mermaid/graphviz renderers.

The seed (design.md §3) draws the per-peer connection-upgrade machine as a mermaid ``graph TD``.
This module reads that subset of mermaid's flowchart syntax, with the standard library only:

* the header ``graph TD`` / ``flowchart LR`` (the direction is kept);
* nodes ``A[label]`` (mermaid's rect: a state) and ``A{label}`` (rhombus: a decision), declared alone
  or inline in a link; a label may be quoted (``A["a [b]"]``); ``<br/>`` (also ``<br>``, ``<br />``)
  is a line break, ``#quot;`` a double quote;
* links ``A --> B``, ``A -->|label| B`` and dotted ``A -.-> B`` / ``A -.->|label| B``, also chained
  (``A --> B --> C``); an edge label may be quoted (``-->|"a (b)"|``);
* ``%%`` comments and ``style`` / ``classDef`` / ``class`` / ``linkStyle`` lines are skipped.

Anything else is a :class:`MermaidError` naming the line. A node that is only referenced, never
declared with a shape, is a rect labelled with its id (as mermaid draws it).

:func:`render` writes a :class:`Flowchart` back as mermaid (``parse(render(c)) == c``) and
:func:`render_dot` as graphviz ``dot`` text (rect → box, rhombus → diamond, dotted → dashed); both
are plain strings, nothing here imports graphviz.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


class MermaidError(ValueError):
    """A line of the flowchart is outside the supported subset or contradicts an earlier line."""


class Shape(enum.Enum):
    RECT = "rect"  # A[label]
    RHOMBUS = "rhombus"  # A{label}


_OPEN = {"[": Shape.RECT, "{": Shape.RHOMBUS}
_CLOSE = {Shape.RECT: "]", Shape.RHOMBUS: "}"}


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    shape: Shape
    label: str  # line breaks as "\n"


@dataclass(frozen=True, slots=True)
class Link:
    src: str
    label: str  # "" for an unlabelled link
    dst: str
    dotted: bool = False  # -.-> (drawn dashed)


@dataclass(frozen=True, slots=True)
class Flowchart:
    """Nodes and links in order of first appearance."""

    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    direction: str = "TD"

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)


_HEADER = re.compile(r"^(graph|flowchart)\s+(TB|TD|BT|RL|LR)\s*;?$")
_SKIPPED = ("style ", "classDef ", "class ", "linkStyle ")
_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ARROW = re.compile(r"(-->|-\.->)")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_FENCE = re.compile(r"^```mermaid\s*$(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def _decode(text: str) -> str:
    return _BR.sub("\n", text).replace("#quot;", '"')


def _encode(text: str) -> str:
    return text.replace('"', "#quot;").replace("\n", "<br/>")


def extract_block(text: str) -> str:
    """The first fenced ```` ```mermaid ```` block of a markdown text, or the text itself when it has none."""
    found = _FENCE.search(text)
    return found.group(1) if found else text


class _Line:
    """A cursor over one line of flowchart source."""

    def __init__(self, text: str, number: int) -> None:
        self.text, self.number, self.pos = text, number, 0

    def error(self, what: str) -> MermaidError:
        return MermaidError(f"mermaid line {self.number}: {what}: {self.text.strip()!r}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.text) or self.text[self.pos] == ";"

    def until(self, close: str) -> str:
        """The (possibly quoted) text up to ``close``, consumed with it."""
        if self.text.startswith('"', self.pos):
            end = self.text.find('"', self.pos + 1)
            if end < 0 or not self.text.startswith(close, end + 1):
                raise self.error(f"a quoted label must end with '\"{close}'")
            body, self.pos = self.text[self.pos + 1 : end], end + 1 + len(close)
            return body
        end = self.text.find(close, self.pos)
        if end < 0:
            raise self.error(f"missing {close!r}")
        body, self.pos = self.text[self.pos : end], end + len(close)
        return body.strip()

    def node(self) -> tuple[str, Shape | None, str | None]:
        self.skip_space()
        found = _ID.match(self.text, self.pos)
        if found is None:
            raise self.error("expected a node id")
        self.pos = found.end()
        shape = _OPEN.get(self.text[self.pos : self.pos + 1])
        if shape is None:
            return found.group(), None, None
        self.pos += 1
        return found.group(), shape, _decode(self.until(_CLOSE[shape]))

    def arrow(self) -> tuple[bool, str]:
        self.skip_space()
        found = _ARROW.match(self.text, self.pos)
        if found is None:
            raise self.error("expected '-->' or '-.->'")
        self.pos = found.end()
        label = ""
        if self.text.startswith("|", self.pos):
            self.pos += 1
            label = _decode(self.until("|"))
        return found.group() == "-.->", label


def parse(text: str) -> Flowchart:
    """Parse a mermaid flowchart (or a markdown text holding one in a ```` ```mermaid ```` fence)."""
    shapes: dict[str, tuple[Shape, str] | None] = {}
    links: list[Link] = []
    direction: str | None = None

    def declare(line: _Line, node_id: str, shape: Shape | None, label: str | None) -> None:
        known = shapes.get(node_id)
        if shape is None or label is None:
            shapes.setdefault(node_id, None)
        elif known is None:
            shapes[node_id] = (shape, label)
        elif known != (shape, label):
            raise line.error(f"node {node_id} declared again with another shape or label")

    for number, raw in enumerate(extract_block(text).splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("%%") or stripped.startswith(_SKIPPED):
            continue
        line = _Line(raw, number)
        if direction is None:
            header = _HEADER.match(stripped)
            if header is None:
                raise line.error("expected 'graph TD' (or another direction) first")
            direction = header.group(2)
            continue
        src, shape, label = line.node()
        declare(line, src, shape, label)
        while not line.at_end():
            dotted, edge_label = line.arrow()
            dst, shape, label = line.node()
            declare(line, dst, shape, label)
            links.append(Link(src, edge_label, dst, dotted))
            src = dst
    if direction is None:
        raise MermaidError("no 'graph TD' header found")
    nodes = tuple(Node(i, *(d if d is not None else (Shape.RECT, i))) for i, d in shapes.items())
    return Flowchart(nodes, tuple(links), direction)


def _label(text: str, opener: str, closer: str) -> str:
    encoded = _encode(text)
    plain = re.fullmatch(r"[^\[\]{}()|<>\"]*", text) is not None and encoded.strip() == encoded
    return f"{opener}{encoded}{closer}" if plain else f'{opener}"{encoded}"{closer}'


def render(chart: Flowchart, styles: Mapping[str, str] | None = None) -> str:
    """Mermaid text: the nodes declared first, then one link a line; ``styles`` maps node ids to CSS."""
    out = [f"graph {chart.direction}"]
    for n in chart.nodes:
        opener = "[" if n.shape is Shape.RECT else "{"
        out.append(f"    {n.id}{_label(n.label, opener, _CLOSE[n.shape])}")
    for link in chart.links:
        arrow = "-.->" if link.dotted else "-->"
        text = _label(link.label, "|", "|") if link.label else ""
        out.append(f"    {link.src} {arrow}{text} {link.dst}")
    out.extend(f"    style {node_id} {css}" for node_id, css in (styles or {}).items())
    return "\n".join(out) + "\n"


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _dot_attrs(attrs: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{k}={v}" for k, v in attrs)


def render_dot(chart: Flowchart, name: str = "G", node_attrs: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """Graphviz text: rect → box, rhombus → diamond, dotted links dashed; ``node_attrs`` adds attributes by id."""
    rankdir = {"TD": "TB"}.get(chart.direction, chart.direction)
    out = [f"digraph {_dot_string(name)} {{", f"    rankdir={rankdir};", '    node [fontname="Helvetica"];']
    for n in chart.nodes:
        attrs = [("shape", "box" if n.shape is Shape.RECT else "diamond"), ("label", _dot_string(n.label))]
        attrs += [(k, _dot_string(v)) for k, v in (node_attrs or {}).get(n.id, {}).items()]
        out.append(f"    {n.id} [{_dot_attrs(attrs)}];")
    for link in chart.links:
        attrs = [("label", _dot_string(link.label))] if link.label else []
        if link.dotted:
            attrs.append(("style", "dashed"))
        out.append(f"    {link.src} -> {link.dst}" + (f" [{_dot_attrs(attrs)}]" if attrs else "") + ";")
    out.append("}")
    return "\n".join(out) + "\n"


__all__ = ["Flowchart", "Link", "MermaidError", "Node", "Shape", "extract_block", "parse", "render", "render_dot"]
