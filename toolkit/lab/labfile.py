"""The dict and YAML form of a :class:`~toolkit.lab.topology.Topology`: the scenario files in ``labs/``.

The words are the builder's (:mod:`toolkit.lab.scenario`)::

    name: easy-easy
    description: one line for `natkit lab list`
    expect: direct            # what alice<->bob should end up with: direct, local or relayed
    segments: [home1, {name: home2, kind: lan, index: 2, latency: 0.01}]
    routers:  [{name: r1, lan: home1, nat: easy}, {name: r2, wan: internet, lan: home2, nat: {preset: hard}}]
    hosts:    [{name: alice, segment: home1, node: true}, {name: stun1, extra_v4: 1, services: [stun-server]}]

Omitted fields take defaults: a router's ``wan`` is the internet, ``nat`` absent/null is a plain
router, a host's ``segment`` is the internet, addresses are allocated, ``v6: true`` allocates the v6
address that goes with the v4 one. :func:`topology_to_dict` writes every address out, so
``from_dict(to_dict(t)) == t`` and the dict form of that is the same dict (exact round trip).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import UsageError
from toolkit.lab.addressing import INTERNET, SegmentKind
from toolkit.lab.scenario import TopologyBuilder, nat_to
from toolkit.lab.topology import ServiceSpec, Topology

_TOP = ("name", "description", "expect", "segments", "routers", "hosts")
_SEGMENT = ("name", "kind", "index", "latency", "loss", "bandwidth")
_ROUTER = ("name", "wan", "lan", "wan_v4", "lan_v4", "nat")
_HOST = ("name", "segment", "v4", "v6", "extra_v4", "services", "node")


def _fields(obj: Any, known: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise UsageError(f"{what}: expected a mapping with keys {', '.join(known)}, not {obj!r}")
    unknown = sorted(str(k) for k in set(obj) - set(known))
    if unknown:
        raise UsageError(f"{what}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return obj


def _list(obj: Any, what: str) -> list[Any]:
    if obj is None:
        return []
    if not isinstance(obj, list):
        raise UsageError(f"{what} must be a list, not {obj!r}")
    return obj


def _name(obj: dict[str, Any], what: str) -> str:
    if "name" not in obj:
        raise UsageError(f"{what}: every entry needs a name")
    return str(obj["name"])


def topology_from_dict(obj: Any) -> Topology:
    """A topology from its dict form (see the module docstring)."""
    top = _fields(obj, _TOP, "lab")
    if "name" not in top:
        raise UsageError("lab: the file needs a name")
    t = TopologyBuilder(str(top["name"]), str(top.get("description") or ""), expect=top.get("expect"))
    for entry in _list(top.get("segments"), "segments"):
        seg = _fields({"name": entry} if isinstance(entry, str) else entry, _SEGMENT, "segment")
        name = _name(seg, "segment")
        t.segment(name, seg.get("kind", "internet" if name == INTERNET else "lan"), index=seg.get("index"),
                  latency=float(seg.get("latency", 0.0)), loss=float(seg.get("loss", 0.0)),
                  bandwidth=seg.get("bandwidth"))  # fmt: skip
    for entry in _list(top.get("routers"), "routers"):
        r = _fields(entry, _ROUTER, "router")
        name = _name(r, "router")
        if "lan" not in r:
            raise UsageError(f"router {name!r}: needs lan: (the segment it serves)")
        t.router(name, lan=str(r["lan"]), wan=str(r.get("wan", INTERNET)), nat=r.get("nat"),
                 wan_v4=r.get("wan_v4"), lan_v4=r.get("lan_v4"))  # fmt: skip
    for entry in _list(top.get("hosts"), "hosts"):
        h = _fields(entry, _HOST, "host")
        name = _name(h, "host")
        services = []
        for s in _list(h.get("services"), f"host {name!r}: services"):
            if isinstance(s, dict):
                s = _fields(s, ("kind", "args"), f"host {name!r}: service")
                services.append(ServiceSpec(str(s.get("kind")), tuple(str(a) for a in _list(s.get("args"), "args"))))
            else:
                services.append(ServiceSpec(str(s)))
        t.host(name, str(h.get("segment", INTERNET)), v4=h.get("v4"), v6=h.get("v6") or False,
               extra_v4=h.get("extra_v4", 0), services=services, node=bool(h.get("node", False)))  # fmt: skip
    return t.build()


def topology_to_dict(topo: Topology) -> dict[str, Any]:
    """The dict form with every address written out (exact round trip through :func:`topology_from_dict`)."""
    out: dict[str, Any] = {"name": topo.name}
    if topo.description:
        out["description"] = topo.description
    if topo.expect is not None:
        out["expect"] = topo.expect
    segments = []
    for s in topo.segments:
        entry: dict[str, Any] = {"name": s.name, "kind": s.kind.value}
        if s.kind is not SegmentKind.INTERNET:
            entry["index"] = s.index
        link = {"latency": s.latency, "loss": s.loss, "bandwidth": s.bandwidth}
        entry.update({k: v for k, v in link.items() if v})
        if s.kind is not SegmentKind.INTERNET or len(entry) > 2:
            segments.append(entry)
    out["segments"] = segments
    out["routers"] = [
        {
            "name": r.name,
            "wan": r.wan,
            "lan": r.lan,
            "wan_v4": str(r.wan_v4),
            "lan_v4": str(r.lan_v4),
            "nat": nat_to(r.nat),
        }
        for r in topo.routers
    ]
    hosts = []
    for h in topo.hosts:
        entry = {"name": h.name, "segment": h.segment, "v4": str(h.v4)}
        if h.v6 is not None:
            entry["v6"] = str(h.v6)
        if h.extra_v4:
            entry["extra_v4"] = [str(a) for a in h.extra_v4]
        if h.services:
            entry["services"] = [s.kind if not s.args else {"kind": s.kind, "args": list(s.args)} for s in h.services]
        if h.node:
            entry["node"] = True
        hosts.append(entry)
    out["hosts"] = hosts
    return out


def load_yaml(source: str | Path) -> Any:
    """Parse YAML from text, a :class:`Path`, or a one-line str naming a .yaml/.yml file."""
    origin = "YAML"
    if isinstance(source, str) and "\n" not in source and source.strip().endswith((".yaml", ".yml")):
        source = Path(source.strip())
    if isinstance(source, Path):
        origin = str(source)
        try:
            source = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read lab file {origin}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"{origin}{where}: not valid YAML ({problem})") from None


def dump_yaml(obj: Any) -> str:
    return str(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=120))


__all__ = ["dump_yaml", "load_yaml", "topology_from_dict", "topology_to_dict"]
