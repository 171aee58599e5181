"""Checks that make a :class:`~toolkit.lab.topology.Topology` realisable by every backend.

Run by ``Topology.__post_init__``: a topology that exists is valid. Each failure is one
:class:`~toolkit.errors.UsageError` naming the element, e.g. ``router 'r1': LAN segment 'home9' does
not exist``. The rules (module docstring of :mod:`toolkit.lab.topology`): unique DNS-label names; one
``internet`` segment; every other segment is served by exactly one router and reaches the internet
through a chain of routers without loops; addresses lie in their segment's prefixes and are unique;
a router's LAN address is its segment's ``.1`` (the gateway of the segment's hosts).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from toolkit.errors import UsageError
from toolkit.lab.addressing import INTERNET, Allocator, IPv4Address, IPv6Address, SegmentKind, v6_for

if TYPE_CHECKING:
    from toolkit.lab.topology import Segment, Topology

NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,13}[a-z0-9])?$")
LAB_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")


def check_name(name: str, what: str) -> None:
    """A :class:`UsageError` unless ``name`` is a short DNS label."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise UsageError(
            f"{what} {name!r}: a name is 1-15 lowercase letters, digits or '-', starting with a letter"
            " and not ending with '-'"
        )


def validate(topo: Topology) -> None:
    from toolkit.lab.topology import EXPECTATIONS

    if not isinstance(topo.name, str) or not LAB_NAME_RE.match(topo.name):
        raise UsageError(f"lab name {topo.name!r}: use 1-40 lowercase letters, digits or '-'")
    if topo.expect is not None and topo.expect not in EXPECTATIONS:
        raise UsageError(f"lab {topo.name!r}: expect {topo.expect!r} is not one of {', '.join(EXPECTATIONS)}")
    seen: dict[str, str] = {}
    for what, elements in (("segment", topo.segments), ("host", topo.hosts), ("router", topo.routers)):
        for element in elements:
            check_name(element.name, what)
            if element.name in seen:
                raise UsageError(f"{what} {element.name!r}: the name is already used by a {seen[element.name]}")
            seen[element.name] = what
    segments = {s.name: s for s in topo.segments}
    _check_segments(topo.segments)
    _check_routers(topo, segments)
    _check_addresses(topo, segments)


def _check_segments(segments: tuple[Segment, ...]) -> None:
    internets = [s for s in segments if s.kind is SegmentKind.INTERNET]
    if len(internets) != 1 or internets[0].name != INTERNET:
        raise UsageError(f"a lab has exactly one segment of kind internet, named {INTERNET!r}")
    indexes: dict[tuple[SegmentKind, int], str] = {}
    for seg in segments:
        if not isinstance(seg.kind, SegmentKind):
            raise UsageError(f"segment {seg.name!r}: kind {seg.kind!r} is not lan, carrier or internet")
        if seg.kind is not SegmentKind.INTERNET:
            if not isinstance(seg.index, int) or not 1 <= seg.index <= 255:
                raise UsageError(f"segment {seg.name!r}: index {seg.index!r} is not in 1..255")
            other = indexes.setdefault((seg.kind, seg.index), seg.name)
            if other != seg.name:
                raise UsageError(f"segment {seg.name!r}: {seg.kind.value} index {seg.index} is already {other!r}'s")
        if not seg.latency >= 0:
            raise UsageError(f"segment {seg.name!r}: latency {seg.latency!r} must be >= 0 seconds")
        if not 0 <= seg.loss < 1:
            raise UsageError(f"segment {seg.name!r}: loss {seg.loss!r} must be in [0, 1)")
        if seg.bandwidth is not None and not seg.bandwidth > 0:
            raise UsageError(f"segment {seg.name!r}: bandwidth {seg.bandwidth!r} must be > 0 bit/s or absent")


def _check_routers(topo: Topology, segments: dict[str, Segment]) -> None:
    served: dict[str, str] = {}
    for router in topo.routers:
        for side, seg_name in (("WAN", router.wan), ("LAN", router.lan)):
            if seg_name not in segments:
                raise UsageError(f"router {router.name!r}: {side} segment {seg_name!r} does not exist")
        if router.lan == INTERNET:
            raise UsageError(f"router {router.name!r}: its LAN segment cannot be the internet")
        if router.lan == router.wan:
            raise UsageError(f"router {router.name!r}: WAN and LAN are both segment {router.lan!r}")
        if router.lan in served:
            raise UsageError(
                f"router {router.name!r}: segment {router.lan!r} already has router {served[router.lan]!r}"
            )
        served[router.lan] = router.name
    for seg in segments.values():
        if seg.kind is not SegmentKind.INTERNET and seg.name not in served:
            raise UsageError(f"segment {seg.name!r} has no router (add a router with lan: {seg.name})")
    up = {r.lan: r.wan for r in topo.routers}
    for router in topo.routers:
        at, hops = router.wan, 0
        while at != INTERNET:
            at, hops = up[at], hops + 1
            if hops > len(topo.routers):
                raise UsageError(
                    f"router {router.name!r}: WAN segment {router.wan!r} loops and never reaches the internet"
                )


def _check_addresses(topo: Topology, segments: dict[str, Segment]) -> None:
    owners: dict[IPv4Address, str] = {}

    def claim(address: IPv4Address, seg: Segment, what: str) -> None:
        if not isinstance(address, IPv4Address):
            raise UsageError(f"{what}: {address!r} is not an IPv4 address")
        if not Allocator(seg.kind, seg.index).contains(address):
            nets = " or ".join(str(p) for p in seg.v4)
            raise UsageError(f"{what}: address {address} is not in segment {seg.name!r} ({nets})")
        if address in owners:
            raise UsageError(f"{what}: address {address} is already {owners[address]}'s")
        owners[address] = what

    for router in topo.routers:
        lan = segments[router.lan]
        if router.lan_v4 != lan.gateway:
            raise UsageError(f"router {router.name!r}: LAN address must be {lan.gateway} (.1 of {lan.name!r})")
        claim(router.lan_v4, lan, f"router {router.name!r}")
        claim(router.wan_v4, segments[router.wan], f"router {router.name!r}")
    owners6: dict[IPv6Address, str] = {}
    if any(h.v6 is not None for h in topo.hosts):  # routers get v6 addresses only then
        for router in topo.routers:
            for side in (router.wan, router.lan):
                v4 = router.wan_v4 if side == router.wan else router.lan_v4
                owners6[v6_for(segments[side].kind, v4)] = f"router {router.name!r}"
    for host in topo.hosts:
        what = f"host {host.name!r}"
        if host.segment not in segments:
            raise UsageError(f"{what}: segment {host.segment!r} does not exist")
        seg = segments[host.segment]
        for address in (host.v4, *host.extra_v4):
            claim(address, seg, what)
        if host.v6 is not None and host.v6 not in seg.v6:
            raise UsageError(f"{what}: IPv6 address {host.v6} is not in segment {seg.name!r} ({seg.v6})")
        if host.v6 is not None and host.v6 in owners6:
            raise UsageError(f"{what}: IPv6 address {host.v6} is already {owners6[host.v6]}'s")
        if host.v6 is not None:
            owners6[host.v6] = what
        if len(set(host.services)) != len(host.services):
            raise UsageError(f"{what}: a service is listed twice")


__all__ = ["check_name", "validate"]
