"""Building topologies in Python: :class:`TopologyBuilder`, and NAT behaviours from their short forms.

The builder collects segments, routers and hosts, then :meth:`TopologyBuilder.build` hands out the
addresses nobody spelled out (addressing plan in :mod:`toolkit.lab.addressing`) and returns a
validated :class:`~toolkit.lab.topology.Topology`::

    t = TopologyBuilder("easy-easy")
    home1 = t.lan("home1")
    t.nat_router("r1", lan=home1, nat="easy")
    t.host("alice", home1, node=True)
    t.host("stun1", t.internet, extra_v4=1, services=["stun-server"])
    topo = t.build()

The dict and YAML form (the same words) is in :mod:`toolkit.lab.labfile`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from toolkit.errors import UsageError
from toolkit.lab.addressing import (
    INTERNET,
    Allocator,
    IPv4Address,
    IPv6Address,
    SegmentKind,
    parse_v4,
    parse_v6,
    v6_for,
)
from toolkit.lab.nat import PRESETS, NatBehavior, preset
from toolkit.lab.topology import Host, Router, Segment, ServiceSpec, Topology

NatSpec = str | NatBehavior | Mapping[str, Any] | None


def nat_from(value: NatSpec, what: str) -> NatBehavior | None:
    """A NAT from a preset name, a dict (``{preset: easy, ...}`` or all fields), a NatBehavior or None."""
    if value is None or value == "none":
        return None
    if isinstance(value, NatBehavior):
        return value
    try:
        if isinstance(value, str):
            return preset(value)
        return NatBehavior.from_dict(dict(value))
    except (UsageError, TypeError) as exc:
        raise UsageError(f"{what}: {exc}") from None


def nat_to(nat: NatBehavior | None) -> Any:
    """The shortest dict form of a NAT: a preset name, a preset plus changed fields, or every field."""
    if nat is None:
        return None
    base = PRESETS.get(nat.name)
    if base == nat:
        return nat.name
    full = nat.to_dict()
    if nat.description:
        full["description"] = nat.description
    if base is None:
        return full
    ref = base.to_dict()
    ref["description"] = base.description
    full.setdefault("description", "")
    return {"preset": nat.name, **{k: v for k, v in full.items() if k != "name" and ref.get(k) != v}}


@dataclasses.dataclass
class _HostSpec:
    name: str
    segment: str
    v4: IPv4Address | None
    v6: IPv6Address | bool
    extra_v4: tuple[IPv4Address, ...] | int
    services: tuple[ServiceSpec, ...]
    node: bool


@dataclasses.dataclass
class _RouterSpec:
    name: str
    wan: str
    lan: str
    wan_v4: IPv4Address | None
    lan_v4: IPv4Address | None
    nat: NatBehavior | None


class TopologyBuilder:
    """Collects a lab's elements; :meth:`build` allocates addresses and validates."""

    internet = INTERNET

    def __init__(self, name: str, description: str = "", *, expect: str | None = None) -> None:
        self.name = name
        self.description = description
        self.expect = expect
        self._segments: dict[str, dict[str, Any]] = {INTERNET: {"kind": SegmentKind.INTERNET, "index": 0}}
        self._routers: list[_RouterSpec] = []
        self._hosts: list[_HostSpec] = []

    def segment(
        self,
        name: str,
        kind: SegmentKind | str = SegmentKind.LAN,
        *,
        index: int | None = None,
        latency: float = 0.0,
        loss: float = 0.0,
        bandwidth: int | None = None,
    ) -> str:
        """Add a segment (or set the internet's link properties); returns its name."""
        try:
            kind = SegmentKind(kind)
        except ValueError:
            raise UsageError(f"segment {name!r}: kind {kind!r} is not lan, carrier or internet") from None
        if kind is SegmentKind.INTERNET and name != INTERNET:
            raise UsageError(f"segment {name!r}: the internet segment is named {INTERNET!r}")
        if name in self._segments and name != INTERNET:
            raise UsageError(f"segment {name!r}: defined twice")
        if name == INTERNET and kind is not SegmentKind.INTERNET:
            raise UsageError(f"segment {INTERNET!r} is the internet; name the {kind.value} differently")
        self._segments[name] = {"kind": kind, "index": index, "latency": latency, "loss": loss, "bandwidth": bandwidth}
        return name

    def lan(self, name: str, *, index: int | None = None, **link: Any) -> str:
        """A LAN ``192.168.N.0/24`` (N = ``index``, or the next free one)."""
        return self.segment(name, SegmentKind.LAN, index=index, **link)

    def carrier(self, name: str, *, index: int | None = None, **link: Any) -> str:
        """A carrier segment ``100.64.N.0/24`` (the inside of a CGNAT)."""
        return self.segment(name, SegmentKind.CARRIER, index=index, **link)

    def router(
        self,
        name: str,
        *,
        lan: str,
        wan: str = INTERNET,
        nat: NatSpec = None,
        wan_v4: str | None = None,
        lan_v4: str | None = None,
    ) -> str:
        """A router serving ``lan`` from ``wan``; ``nat`` None is a plain router. ``lan_v4`` must be the LAN's .1."""
        what = f"router {name!r}"
        wan_a = parse_v4(wan_v4, what) if wan_v4 is not None else None
        lan_a = parse_v4(lan_v4, what) if lan_v4 is not None else None
        self._routers.append(_RouterSpec(name, wan, lan, wan_a, lan_a, nat_from(nat, what)))
        return name

    def nat_router(
        self, name: str, *, lan: str, wan: str = INTERNET, nat: NatSpec = "easy", wan_v4: str | None = None
    ) -> str:
        """A NAT router (default preset ``easy``)."""
        if nat_from(nat, f"router {name!r}") is None:
            raise UsageError(f"router {name!r}: a NAT router needs a NAT (use router() for a plain one)")
        return self.router(name, lan=lan, wan=wan, nat=nat, wan_v4=wan_v4)

    def host(
        self,
        name: str,
        segment: str = INTERNET,
        *,
        v4: str | None = None,
        v6: str | bool = False,
        extra_v4: int | Iterable[str] = 0,
        services: Iterable[str | ServiceSpec] = (),
        node: bool = False,
    ) -> str:
        """A host on ``segment``; ``extra_v4`` is a count of extra addresses to allocate or the addresses."""
        what = f"host {name!r}"
        extra: tuple[IPv4Address, ...] | int
        if isinstance(extra_v4, int) and not isinstance(extra_v4, bool):
            if not 0 <= extra_v4 <= 16:
                raise UsageError(f"{what}: extra_v4 count {extra_v4} is not in 0..16")
            extra = extra_v4
        elif isinstance(extra_v4, str):
            extra = (parse_v4(extra_v4, what),)
        elif isinstance(extra_v4, bool):
            raise UsageError(f"{what}: extra_v4 is a count or a list of addresses, not {extra_v4!r}")
        else:
            extra = tuple(parse_v4(a, what) for a in extra_v4)
        six: IPv6Address | bool = v6 if isinstance(v6, bool) else parse_v6(v6, what)
        specs = tuple(s if isinstance(s, ServiceSpec) else ServiceSpec(str(s)) for s in services)
        self._hosts.append(
            _HostSpec(name, segment, parse_v4(v4, what) if v4 is not None else None, six, extra, specs, bool(node))
        )
        return name

    def node(self, name: str, segment: str = INTERNET, **kw: Any) -> str:
        """A host that runs a natkit node."""
        return self.host(name, segment, node=True, **kw)

    def build(self) -> Topology:
        """Allocate indexes and addresses, then validate (UsageError naming the element)."""
        segments = self._build_segments()
        by_name = {s.name: s for s in segments}
        allocators = {s.name: Allocator(s.kind, s.index) for s in segments}
        for r in self._routers:
            seg = by_name.get(r.lan)
            if seg is not None and seg.gateway is not None:
                allocators[r.lan].take(seg.gateway)
        explicit = [(r.wan, r.wan_v4) for r in self._routers] + [
            (h.segment, a) for h in self._hosts for a in (h.v4, *(h.extra_v4 if isinstance(h.extra_v4, tuple) else ()))
        ]
        for seg_name, address in explicit:
            if address is not None and seg_name in allocators:
                allocators[seg_name].take(address)  # duplicates are reported by validate()

        def alloc(seg_name: str, given: IPv4Address | None, what: str, *, router: bool = False) -> IPv4Address:
            if given is not None:
                return given
            if seg_name not in allocators:
                raise UsageError(f"{what}: segment {seg_name!r} does not exist")
            return allocators[seg_name].next(router=router)

        routers = []
        for r in self._routers:
            what = f"router {r.name!r}"
            lan = by_name.get(r.lan)
            if lan is None:
                raise UsageError(f"{what}: LAN segment {r.lan!r} does not exist")
            if lan.gateway is None:
                raise UsageError(f"{what}: its LAN segment cannot be the internet")
            if r.wan not in by_name:
                raise UsageError(f"{what}: WAN segment {r.wan!r} does not exist")
            wan_v4 = alloc(r.wan, r.wan_v4, what, router=True)
            routers.append(Router(r.name, r.wan, r.lan, wan_v4, r.lan_v4 or lan.gateway, r.nat))
        hosts = []
        for h in self._hosts:
            what = f"host {h.name!r}"
            v4 = alloc(h.segment, h.v4, what)
            extra = (
                h.extra_v4
                if isinstance(h.extra_v4, tuple)
                else tuple(alloc(h.segment, None, what) for _ in range(h.extra_v4))
            )
            v6 = h.v6 if isinstance(h.v6, IPv6Address) else (v6_for(by_name[h.segment].kind, v4) if h.v6 else None)
            hosts.append(Host(h.name, h.segment, v4, v6, extra, h.services, h.node))
        return Topology(self.name, segments, tuple(hosts), tuple(routers), self.description, self.expect)

    def _build_segments(self) -> tuple[Segment, ...]:
        used: dict[SegmentKind, set[int]] = {k: set() for k in SegmentKind}
        for spec in self._segments.values():
            if spec["index"] is not None:
                used[spec["kind"]].add(spec["index"])
        out = []
        for name, spec in self._segments.items():
            kind, index = spec["kind"], spec["index"]
            if index is None:
                index = next(i for i in range(1, 1000) if i not in used[kind])
                used[kind].add(index)
            out.append(
                Segment(name, kind, index, spec.get("latency", 0.0), spec.get("loss", 0.0), spec.get("bandwidth"))
            )
        return tuple(out)


__all__ = ["TopologyBuilder", "nat_from", "nat_to"]
