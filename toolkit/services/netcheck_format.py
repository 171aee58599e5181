"""Printing a netcheck :class:`~toolkit.sansio.netcheck_report.Report` as ``tailscale netcheck`` does.

Text mode follows ``cmd/tailscale/cli/netcheck.go`` (protocols.md §5.3) line for line (indented
with one and two tabs)::

    <empty line>
    Report:
        * Time: 2024-05-01 12:34:56.123456+02:00
        * UDP: true
        * IPv4: yes, 203.0.113.7:41641
        * IPv6: no, but OS has support
        * MappingVariesByDestIP: false
        * PortMapping: not checked
        * Nearest DERP: Lab relay
        * DERP latency:
                - lab: 400µs   (Lab relay)
                - far: 12.3ms  (Far relay)
                - off:         (Offline relay)

Latencies are rounded to 0.1 ms and written as Go's ``time.Duration.String`` (``400µs``, ``12.3ms``,
``1.5s``), regions sorted by latency with the unmeasured ones last (``RegionLatency.Compare``).
``MappingVariesByDestIP`` is empty when undecided, as Go prints an unset ``opt.Bool``. The JSON modes
(``json``, ``json-line``) are :meth:`Report.to_json` with a tab indent or none, plus a newline.
"""

from __future__ import annotations

from datetime import datetime

from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.netcheck_report import NS, Report

FORMATS = ("text", "json", "json-line")


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String`` for a number of nanoseconds: ``0s``, ``400µs``, ``12.3ms``, ``1m2.5s``."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return sign + _decimal(ns, 3) + "µs"
    if ns < NS:
        return sign + _decimal(ns, 6) + "ms"
    hours, rest = divmod(ns, 3600 * NS)
    minutes, rest = divmod(rest, 60 * NS)
    text = _decimal(rest, 9) + "s"
    if hours or minutes:
        text = f"{minutes}m" + text
    if hours:
        text = f"{hours}h" + text
    return sign + text


def _decimal(value: int, digits: int) -> str:
    whole, frac = divmod(value, 10**digits)
    tail = f"{frac:0{digits}d}".rstrip("0")
    return f"{whole}.{tail}" if tail else str(whole)


def round_duration(ns: int, unit: int) -> int:
    """Go's ``Duration.Round``: to the nearest multiple of ``unit``, halves away from zero."""
    q, r = divmod(abs(ns), unit)
    rounded = (q + (1 if 2 * r >= unit else 0)) * unit
    return rounded if ns >= 0 else -rounded


def format_latency(seconds: float) -> str:
    """A region latency as ``tailscale netcheck`` prints it: rounded to 0.1 ms."""
    return go_duration(round_duration(round(seconds * NS), 100_000))


def go_time(t: datetime) -> str:
    """Go's ``2006-01-02 15:04:05.999999999Z07:00`` layout (tstime.DateSpTimeNanoZ) of a local time."""
    t = t.astimezone()
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    offset = t.utcoffset()
    if not offset:
        zone = "Z"
    else:
        minutes = int(offset.total_seconds()) // 60
        sign = "+" if minutes >= 0 else "-"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return t.strftime("%Y-%m-%d %H:%M:%S") + frac + zone


def _opt(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


def port_mapping(report: Report) -> str:
    if not report.any_port_mapping_checked():
        return "not checked"
    names = [name for name, v in (("UPnP", report.upnp), ("NAT-PMP", report.pmp), ("PCP", report.pcp)) if v]
    return ", ".join(names)


def format_text(report: Report, derp_map: DERPMap, *, verbose: bool = False) -> str:
    """The text report (protocols.md §5.3), ending in a newline."""
    lines = ["", "Report:"]
    if report.now is not None:
        lines.append(f"\t* Time: {go_time(report.now)}")
    lines.append(f"\t* UDP: {_opt(report.udp)}")
    lines.append(f"\t* IPv4: yes, {report.global_v4}" if report.global_v4 else "\t* IPv4: (no addr found)")
    if report.global_v6 is not None:
        lines.append(f"\t* IPv6: yes, {report.global_v6}")
    elif report.ipv6:
        lines.append("\t* IPv6: (no addr found)")
    elif report.os_has_ipv6:
        lines.append("\t* IPv6: no, but OS has support")
    else:
        lines.append("\t* IPv6: no, unavailable in OS")
    lines.append(f"\t* MappingVariesByDestIP: {_opt(report.mapping_varies_by_dest_ip)}")
    lines.append(f"\t* PortMapping: {port_mapping(report)}")
    if report.captive_portal is not None:
        lines.append(f"\t* CaptivePortal: {_opt(report.captive_portal)}")
    if not report.region_latency:
        lines.append("\t* Nearest DERP: unknown (no response to latency probes)")
        return "\n".join(lines) + "\n"
    if report.preferred_derp == 0:
        lines.append("\t* Nearest DERP: [none]")
    elif report.preferred_derp in derp_map.regions:
        lines.append(f"\t* Nearest DERP: {derp_map.regions[report.preferred_derp].region_name}")
    else:
        lines.append(f"\t* Nearest DERP: {report.preferred_derp} (region not found in map)")
    lines.append("\t* DERP latency:")
    for rid in report.sorted_region_ids(list(derp_map.regions)):
        region = derp_map.regions[rid]
        d = report.region_latency.get(rid)
        latency = format_latency(d) if d is not None else ""
        num = f"derp{rid}, " if verbose else ""
        lines.append(f"\t\t- {region.region_code:>3}: {latency:<7} ({num}{region.region_name})")
    return "\n".join(lines) + "\n"


def format_report(report: Report, derp_map: DERPMap, fmt: str = "text", *, verbose: bool = False) -> str:
    """``fmt`` is one of :data:`FORMATS`; the result ends in a newline."""
    if fmt == "json":
        return report.to_json(indent="\t") + "\n"
    if fmt == "json-line":
        return report.to_json() + "\n"
    if fmt == "text":
        return format_text(report, derp_map, verbose=verbose)
    raise ValueError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "format_latency", "format_report", "format_text", "go_duration", "go_time", "round_duration"]
