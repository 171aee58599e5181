"""netcheck's decisions: which STUN probes to send when, and which DERP region becomes home.

Pure functions over a :class:`~toolkit.codec.derpmap.DERPMap` and earlier :class:`Report` s, following
Tailscale's ``net/netcheck`` (protocols.md §5.2):

* :func:`make_probe_plan` - the initial/full plan (every measured region: 3 tries at 0, 100, 200 ms,
  cycling through the region's nodes, over v4 and v6) or the incremental plan (the fastest 3 regions
  plus the home region; 1 try, 2 for the fastest two, 4 for home; try ``n`` at ``n × 1.2 × last latency``
  (``n × 200 ms`` for a region without one) plus ``n × 50 ms`` from the third try on; on dual-stack
  hosts the slower regions alternate between v4 and v6). protocols.md §5.2 writes the spacing as
  ``max(1.2 × latency, 200 ms)``; Tailscale's code is ``cmp.Or(latency × 120/100, 200ms)`` (the first
  non-zero), so a fast region is retried sooner than 200 ms. natkit follows the code.
* :func:`pick_preferred_derp` - the home region: the lowest latency per region over the last 5 min + 5 s
  of reports, scaled by the map's ``RegionScore``, with the "keep the old home" rules.

natkit's choices where Tailscale is silent or differs:

* A probe is planned only when its node has an address for that family (a literal ``IPv4``/``IPv6``, an IP
  literal ``HostName``, or a DNS answer the driver resolved before the run): a set of probes never waits
  for a probe that cannot be sent. Tailscale plans the probe and drops it when DNS fails.
* ``Avoid`` regions are measured on full reports (as Tailscale does) but are never picked as home, and an
  old home in an ``Avoid`` region is not kept: ``tailcfg`` says clients "should migrate away" from them.
  ``NoMeasureNoHome`` regions are neither probed nor picked. Regions gone from the map are not kept.
* Equal latencies pick the lower region id (Go iterates a map, so its tie-break is random).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from toolkit.codec.derpmap import DEFAULT_STUN_PORT, DERPMap, DERPNode, DERPRegion
from toolkit.sansio.netcheck_report import Report
from toolkit.timing import Timing
from toolkit.types import Endpoint, IPAddress

# Tailscale's counts (net/netcheck/netcheck.go). Its timers and latency thresholds are Timing's
# netcheck_active_retransmit, netcheck_retry_extra and netcheck_preferred_derp_*; the 2/3 ratio of the home
# rule is not a duration (Timing.scaled would stretch it) and stays in pick_preferred_derp.
INCREMENTAL_REGIONS = 3  # numIncrementalRegions
INITIAL_TRIES = 3  # tries per region and family in the initial/full plan

LastDERPActivity = Callable[[int], float | None]


@dataclass(frozen=True, slots=True)
class Probe:
    """One STUN probe: sent ``delay`` seconds after the run starts, to ``dst`` (a node's STUN address)."""

    delay: float
    region_id: int
    node: str
    family: int  # 4 or 6
    dst: Endpoint

    @property
    def set_name(self) -> str:
        """The probe set this probe belongs to (Tailscale's plan keys): ``region-1-v4``."""
        return plan_key(self.region_id, self.family)


def plan_key(region_id: int, family: int) -> str:
    return f"region-{region_id}-v{family}"


def stun_endpoint(node: DERPNode, family: int, resolved: Mapping[str, Sequence[IPAddress]]) -> Endpoint | None:
    """Where ``node`` takes STUN over IPv``family`` (``nodeAddrPort``): its literal address, an IP
    literal host name, or a resolved DNS answer; None when STUN is off or the family is disabled."""
    if not node.stun_enabled or node.family_disabled(family):
        return None
    port = node.stun_port or DEFAULT_STUN_PORT
    literal = node.address(family)
    if literal:
        return Endpoint(ipaddress.ip_address(literal), port)
    try:
        ip = ipaddress.ip_address(node.host_name)
    except ValueError:
        ips = [a for a in resolved.get(node.host_name, ()) if a.version == family]
        return Endpoint(ips[0], port) if ips else None
    return Endpoint(ip, port) if ip.version == family else None


def hosts_to_resolve(derp_map: DERPMap) -> list[str]:
    """Host names a driver must look up before a run: nodes missing a literal address for some family."""
    names: set[str] = set()
    for region in derp_map.sorted_regions():
        for node in region.nodes:
            if not node.stun_enabled or not node.host_name:
                continue
            try:
                ipaddress.ip_address(node.host_name)
                continue
            except ValueError:
                pass
            if any(not node.address(f) and not node.family_disabled(f) for f in (4, 6)):
                names.add(node.host_name)
    return sorted(names)


def make_probe_plan(
    derp_map: DERPMap,
    *,
    timing: Timing,
    last: Report | None,
    preferred: int,
    have_v4: bool,
    have_v6: bool,
    resolved: Mapping[str, Sequence[IPAddress]] | None = None,
) -> dict[str, list[Probe]]:
    """The probe sets of one run, keyed ``region-<id>-v<family>`` (``makeProbePlan``, protocols.md §5.2).

    ``last`` is None for a full report (or the first one); ``preferred`` is the current home region.
    """
    res = resolved or {}
    if last is None or not last.region_latency:
        return _initial_plan(derp_map, timing, have_v4, have_v6, res)
    plan: dict[str, list[Probe]] = {}
    had4, had6 = bool(last.region_v4_latency), bool(last.region_v6_latency)
    had_both = have_v6 and had4 and had6
    plan_has_home = preferred == 0
    for rank, region in enumerate(_sorted_regions(derp_map, last, preferred)):
        is_home = region.region_id == preferred
        if rank >= INCREMENTAL_REGIONS:
            if plan_has_home:
                break
            if not is_home:
                continue
        do4, do6 = have_v4, have_v6
        fastest_two = rank < 2
        tries = 1
        if fastest_two or is_home:
            tries = 2
        elif had_both:  # dual stack: the 3rd and slower regions alternate between v4 and v6
            do4, do6 = rank % 2 == 0, rank % 2 == 1
        if not is_home and not fastest_two and not had6:
            do6 = False
        if is_home:
            tries = 4  # try extra hard on the home region so it does not flip-flop
            plan_has_home = True
        # cmp.Or(1.2 × last latency, 200 ms): the first that is not zero (protocols.md §5.2 says max; the code does not)
        spacing = 1.2 * last.region_latency.get(region.region_id, 0.0) or timing.netcheck_active_retransmit
        for attempt in range(tries):
            if not region.nodes:
                continue
            if attempt != 0 and not had6:
                do6 = False
            node = region.nodes[attempt % len(region.nodes)]
            delay = attempt * spacing + (attempt * timing.netcheck_retry_extra if attempt > 1 else 0.0)
            for family, wanted in ((4, do4), (6, do6)):
                if wanted:
                    _add(plan, region, node, family, delay, res)
    return plan


def _initial_plan(
    derp_map: DERPMap, timing: Timing, have_v4: bool, have_v6: bool, res: Mapping[str, Sequence[IPAddress]]
) -> dict[str, list[Probe]]:
    plan: dict[str, list[Probe]] = {}
    for region in derp_map.sorted_regions():
        if region.no_measure_no_home or not region.nodes:
            continue
        for attempt in range(INITIAL_TRIES):
            node = region.nodes[attempt % len(region.nodes)]
            delay = attempt * timing.netcheck_initial_retransmit
            for family, have in ((4, have_v4), (6, have_v6)):
                if have:
                    _add(plan, region, node, family, delay, res)
    return plan


def _add(
    plan: dict[str, list[Probe]],
    region: DERPRegion,
    node: DERPNode,
    family: int,
    delay: float,
    res: Mapping[str, Sequence[IPAddress]],
) -> None:
    dst = stun_endpoint(node, family, res)
    if dst is not None:
        plan.setdefault(plan_key(region.region_id, family), []).append(
            Probe(delay, region.region_id, node.name, family, dst)
        )


def _sorted_regions(derp_map: DERPMap, last: Report, preferred: int) -> list[DERPRegion]:
    """``sortRegions``: measured regions, fastest in ``last`` first, regions without a latency last."""
    regions = [
        r for r in derp_map.sorted_regions() if not r.no_measure_no_home and (not r.avoid or r.region_id == preferred)
    ]
    lat = last.region_latency
    return sorted(regions, key=lambda r: (not lat.get(r.region_id), lat.get(r.region_id, 0.0), r.region_id))


# --- the home region ---------------------------------------------------------------------------------


def can_be_home(derp_map: DERPMap, region_id: int) -> bool:
    region = derp_map.regions.get(region_id)
    return region is not None and not region.avoid and not region.no_measure_no_home


def pick_preferred_derp(
    derp_map: DERPMap,
    report: Report,
    history: Sequence[Report],
    *,
    timing: Timing,
    now: float,
    started: float,
    previous_home: int,
    last_derp_activity: LastDERPActivity | None = None,
) -> int:
    """The home region for ``report`` (``addReportHistoryAndSetPreferredDERP``, protocols.md §5.2).

    ``history`` are earlier reports (``at`` on the same clock as ``now``); those older than
    full-report interval + report timeout are ignored. ``previous_home`` is the last report's home.
    ``last_derp_activity(region)`` is when a DERP frame last arrived from that region, or None.
    """
    recent = [r for r in history if now - r.at <= timing.netcheck_history_max_age] + [report]
    best_recent: dict[int, float] = {}
    for r in recent:
        for rid, d in r.region_latency.items():
            best_recent[rid] = min(d, best_recent.get(rid, d))

    def scaled(rid: int, d: float) -> float:
        score = derp_map.region_score.get(rid, 0.0)
        return d * score if score > 0 else d

    best_any, home = 0.0, 0
    old_latency = 0.0  # the old home's (scaled) latency in this report; 0 when it did not answer
    for rid in sorted(report.region_latency):
        if rid == previous_home:
            old_latency = scaled(rid, report.region_latency[rid])
        if not can_be_home(derp_map, rid):
            continue
        best = scaled(rid, best_recent[rid])
        if home == 0 or best < best_any:
            best_any, home = best, rid

    old_ok = previous_home != 0 and can_be_home(derp_map, previous_home)
    heard_at = last_derp_activity(previous_home) if (last_derp_activity and old_ok) else None
    if old_ok and home != previous_home:
        frame_time = timing.netcheck_preferred_derp_frame_time
        heard_recently = heard_at is not None and (heard_at > started or heard_at > now - frame_time)
        if old_latency > 0 or heard_recently:  # the old home still works
            # keep it when the new one is not much better: < 10 ms faster, or faster by less than a third
            close = old_latency - best_any < timing.netcheck_preferred_derp_absolute_diff
            if close or best_any > old_latency / 3 * 2:
                home = previous_home
    if home == 0 and heard_at is not None and heard_at > now - timing.preferred_derp_keepalive_timeout:
        home = previous_home  # no latency at all, but the DERP connection is alive (PreferredDERPKeepAliveTimeout)
    return home


__all__ = [
    "INCREMENTAL_REGIONS",
    "INITIAL_TRIES",
    "LastDERPActivity",
    "Probe",
    "can_be_home",
    "hosts_to_resolve",
    "make_probe_plan",
    "pick_preferred_derp",
    "plan_key",
    "stun_endpoint",
]
