"""Home-region decisions of a node's DERP connections (magicsock's ``derp.go``; protocols.md §4, §5.2).

Pure functions, no I/O, ``now`` passed in (design.md §2):

* :func:`pick_home` - which region becomes home from measured latencies. It is the netcheck rule
  (protocols.md §5.2 "Preferred DERP": keep the old home while it still works and the new best is
  less than 10 ms faster or not faster by a third; ``Avoid`` and ``NoMeasureNoHome`` regions are never
  picked; ``RegionScore`` scales latencies; a home heard from over DERP within 8 s counts as working,
  and with no latency at all it is kept while DERP frames arrived within 2 x keepalive). It calls
  :func:`toolkit.sansio.netcheck_plan.pick_preferred_derp`, so netcheck and the DERP home tracker
  can never disagree.
* :func:`stale_regions` - which DERP connections to close: non-home regions not written to for
  ``derp_inactive_cleanup`` (60 s), checked every ``derp_clean_stale_interval`` (15 s), as magicsock's
  ``cleanStaleDerp`` does (it looks at the last write only; packets arriving from a region do not
  keep its connection open).
* :func:`derp_magic_endpoint` / :func:`region_of` - magicsock's fake UDP address of a DERP path,
  ``127.3.3.40:<region id>`` (``tailcfg.DerpMagicIP``, protocols.md §2.4, §4.2).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.netcheck_plan import LastDERPActivity, can_be_home, pick_preferred_derp
from toolkit.sansio.netcheck_report import Report
from toolkit.timing import Timing
from toolkit.types import Endpoint

DERP_MAGIC_IP = ipaddress.IPv4Address("127.3.3.40")  # tailcfg.DerpMagicIP


def pick_home(
    derp_map: DERPMap,
    latencies: Mapping[int, float],
    previous: int | None,
    *,
    timing: Timing,
    now: float,
    last_derp_activity: LastDERPActivity | None = None,
) -> int | None:
    """The home region for these latencies (seconds, the best per region), or None if none qualifies.

    ``previous`` is the current home (None: no home yet). ``last_derp_activity(region)`` is when a DERP
    frame last arrived from that region (same clock as ``now``), or None; it keeps a home that answered
    no latency probe but still relays.
    """
    report = Report(region_latency={r: d for r, d in latencies.items() if d > 0}, at=now)
    home = pick_preferred_derp(
        derp_map,
        report,
        [],
        timing=timing,
        now=now,
        started=now,
        previous_home=previous or 0,
        last_derp_activity=last_derp_activity,
    )
    return home or None


def stale_regions(last_write: Mapping[int, float], home: int | None, now: float, timing: Timing) -> list[int]:
    """The regions whose connection should close now: not home and not written to for derp_inactive_cleanup."""
    too_old = now - timing.derp_inactive_cleanup
    return sorted(r for r, at in last_write.items() if r != home and at < too_old)


def derp_magic_endpoint(region_id: int) -> Endpoint:
    """``127.3.3.40:<region>``: how magicsock names "region N's DERP" where a UDP address is expected."""
    return Endpoint(DERP_MAGIC_IP, region_id)


def region_of(endpoint: Endpoint) -> int | None:
    """The region of a DERP magic endpoint, or None for an ordinary UDP endpoint."""
    return endpoint.port if endpoint.ip == DERP_MAGIC_IP and endpoint.port > 0 else None


__all__ = ["DERP_MAGIC_IP", "can_be_home", "derp_magic_endpoint", "pick_home", "region_of", "stale_regions"]
