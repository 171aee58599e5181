"""The netcheck Report: what one netcheck run measured (Tailscale ``netcheck.Report``, protocols.md §5.1).

A :class:`Report` is a frozen value. Latencies are seconds (floats) keyed by DERP region id; endpoints
are :class:`~toolkit.types.Endpoint`. :meth:`Report.to_json` writes exactly the JSON Tailscale's
``tailscale netcheck --format=json`` prints (Go's ``encoding/json`` of ``netcheck.Report``):

* field names and order of the Go struct: ``Now``, ``UDP``, ``IPv6``, ``IPv4``, ``IPv6CanSend``, ...;
* ``time.Duration`` latencies as integer nanoseconds, map keys as decimal strings in Go's (string) order;
* ``opt.Bool`` fields (``MappingVariesByDestIP``, ``UPnP``, ``PMP``, ``PCP``, ``CaptivePortal``) as
  ``true`` / ``false`` / ``null`` (not checked);
* ``netip.AddrPort`` as ``"1.2.3.4:5"`` / ``"[2001:db8::1]:5"``, the zero value as ``""``;
* ``Now`` as RFC 3339 with nanoseconds, UTC (Go's zero time when the report has no wall-clock time).

natkit measures the STUN fields only: ``ICMPv4`` stays false and the port-mapper fields (UPnP, NAT-PMP,
PCP) and ``CaptivePortal`` stay ``None`` ("not checked"). :meth:`Report.from_json` reads the same JSON
back (a history saved between runs); it raises only :class:`~toolkit.errors.DecodeError`.

``at`` (the core's monotonic clock when the report finished) and ``full`` (a full or an incremental
plan) are natkit's bookkeeping for the report history (protocols.md §5.2) and are not in the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from toolkit.errors import BadValueError, DecodeError, UsageError
from toolkit.types import Endpoint

_GO_ZERO_TIME = "0001-01-01T00:00:00Z"
NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Report:
    """One netcheck result (protocols.md §5.1); see the module docstring for the JSON form."""

    udp: bool = False
    ipv6: bool = False
    ipv4: bool = False
    ipv6_can_send: bool = False
    ipv4_can_send: bool = False
    os_has_ipv6: bool = False
    icmpv4: bool = False
    mapping_varies_by_dest_ip: bool | None = None
    upnp: bool | None = None
    pmp: bool | None = None
    pcp: bool | None = None
    preferred_derp: int = 0
    region_latency: dict[int, float] = field(default_factory=dict)
    region_v4_latency: dict[int, float] = field(default_factory=dict)
    region_v6_latency: dict[int, float] = field(default_factory=dict)
    global_v4_counters: dict[Endpoint, int] = field(default_factory=dict)
    global_v6_counters: dict[Endpoint, int] = field(default_factory=dict)
    global_v4: Endpoint | None = None
    global_v6: Endpoint | None = None
    captive_portal: bool | None = None
    now: datetime | None = None
    at: float = 0.0
    full: bool = True

    def any_port_mapping_checked(self) -> bool:
        return self.upnp is not None or self.pmp is not None or self.pcp is not None

    def global_addrs(self) -> tuple[list[Endpoint], list[Endpoint]]:
        """Our v4 and v6 endpoints to advertise: the reported one first, then any seen more than once
        (``Report.GetGlobalAddrs``: NATs that hand out new mappings mid-way, protocols.md §5.1)."""
        out: list[list[Endpoint]] = []
        for best, counters in ((self.global_v4, self.global_v4_counters), (self.global_v6, self.global_v6_counters)):
            eps = [best] if best is not None else []
            eps += [ep for ep, n in sorted(counters.items()) if ep != best and n > 1]
            out.append(eps)
        return out[0], out[1]

    def sorted_region_ids(self, region_ids: list[int]) -> list[int]:
        """``RegionLatency.Compare`` order: regions with a latency first, fastest first, ties by id."""
        lat = self.region_latency
        return sorted(region_ids, key=lambda r: (r not in lat, lat.get(r, 0.0), r))

    # --- JSON --------------------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        return {
            "Now": _go_time(self.now),
            "UDP": self.udp,
            "IPv6": self.ipv6,
            "IPv4": self.ipv4,
            "IPv6CanSend": self.ipv6_can_send,
            "IPv4CanSend": self.ipv4_can_send,
            "OSHasIPv6": self.os_has_ipv6,
            "ICMPv4": self.icmpv4,
            "MappingVariesByDestIP": self.mapping_varies_by_dest_ip,
            "UPnP": self.upnp,
            "PMP": self.pmp,
            "PCP": self.pcp,
            "PreferredDERP": self.preferred_derp,
            "RegionLatency": _latencies(self.region_latency),
            "RegionV4Latency": _latencies(self.region_v4_latency),
            "RegionV6Latency": _latencies(self.region_v6_latency),
            "GlobalV4Counters": _counters(self.global_v4_counters),
            "GlobalV6Counters": _counters(self.global_v6_counters),
            "GlobalV4": "" if self.global_v4 is None else str(self.global_v4),
            "GlobalV6": "" if self.global_v6 is None else str(self.global_v6),
            "CaptivePortal": self.captive_portal,
        }

    def to_json(self, *, indent: str | None = None) -> str:
        """Go's ``json.Marshal`` (``indent=None``) or ``json.MarshalIndent(r, "", indent)``."""
        if indent is None:
            return json.dumps(self.to_obj(), separators=(",", ":"))
        return json.dumps(self.to_obj(), indent=indent)

    @classmethod
    def from_obj(cls, obj: Any) -> Report:
        if not isinstance(obj, dict):
            raise BadValueError("netcheck report: the top level must be an object")
        try:
            return cls(
                udp=_get(obj, "UDP", bool, False),
                ipv6=_get(obj, "IPv6", bool, False),
                ipv4=_get(obj, "IPv4", bool, False),
                ipv6_can_send=_get(obj, "IPv6CanSend", bool, False),
                ipv4_can_send=_get(obj, "IPv4CanSend", bool, False),
                os_has_ipv6=_get(obj, "OSHasIPv6", bool, False),
                icmpv4=_get(obj, "ICMPv4", bool, False),
                mapping_varies_by_dest_ip=_get(obj, "MappingVariesByDestIP", bool, None),
                upnp=_get(obj, "UPnP", bool, None),
                pmp=_get(obj, "PMP", bool, None),
                pcp=_get(obj, "PCP", bool, None),
                preferred_derp=_get(obj, "PreferredDERP", int, 0),
                region_latency=_parse_latencies(obj, "RegionLatency"),
                region_v4_latency=_parse_latencies(obj, "RegionV4Latency"),
                region_v6_latency=_parse_latencies(obj, "RegionV6Latency"),
                global_v4_counters=_parse_counters(obj, "GlobalV4Counters"),
                global_v6_counters=_parse_counters(obj, "GlobalV6Counters"),
                global_v4=_parse_endpoint(obj, "GlobalV4"),
                global_v6=_parse_endpoint(obj, "GlobalV6"),
                captive_portal=_get(obj, "CaptivePortal", bool, None),
                now=_parse_time(_get(obj, "Now", str, _GO_ZERO_TIME)),
            )
        except (UsageError, ValueError, OverflowError) as exc:
            if isinstance(exc, DecodeError):
                raise
            raise BadValueError(f"netcheck report: {exc}") from None

    @classmethod
    def from_json(cls, data: str | bytes) -> Report:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BadValueError(f"netcheck report is not JSON: {exc}") from None
        return cls.from_obj(obj)


def _go_time(t: datetime | None) -> str:
    """RFC 3339 with trailing-zero-trimmed fractional seconds, as Go's ``time.Time.MarshalJSON`` (UTC)."""
    if t is None:
        return _GO_ZERO_TIME
    t = t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)
    frac = f".{t.microsecond:06d}".rstrip("0").rstrip(".")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def _latencies(m: dict[int, float]) -> dict[str, int]:
    # Go sorts map keys as strings when it marshals: "10" before "2"
    return {str(k): round(m[k] * NS) for k in sorted(m, key=str)}


def _counters(m: dict[Endpoint, int]) -> dict[str, int] | None:
    if not m:
        return None  # a nil map in Go: nothing observed
    return {k: v for k, v in sorted((str(ep), n) for ep, n in m.items())}


def _get(obj: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadValueError(f"netcheck report: {key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _parse_latencies(obj: dict[str, Any], key: str) -> dict[int, float]:
    raw = _get(obj, key, dict, {})
    out: dict[int, float] = {}
    for k, v in raw.items():
        if not k.isascii() or not k.isdigit() or isinstance(v, bool) or not isinstance(v, int):
            raise BadValueError(f"netcheck report: {key}[{k!r}] = {v!r} is not region id -> nanoseconds")
        out[int(k)] = v / NS
    return out


def _parse_counters(obj: dict[str, Any], key: str) -> dict[Endpoint, int]:
    raw = _get(obj, key, dict, {})
    out: dict[Endpoint, int] = {}
    for k, v in raw.items():
        if isinstance(v, bool) or not isinstance(v, int):
            raise BadValueError(f"netcheck report: {key}[{k!r}] = {v!r} is not a count")
        out[Endpoint.parse(k)] = v
    return out


def _parse_endpoint(obj: dict[str, Any], key: str) -> Endpoint | None:
    text = _get(obj, key, str, "")
    return Endpoint.parse(text) if text else None


def _parse_time(text: str) -> datetime | None:
    if text == _GO_ZERO_TIME:
        return None
    head, dot, rest = text.partition(".")
    if dot:  # Python's fromisoformat takes at most 6 fractional digits; Go writes up to 9
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:digits][:6]}{rest[digits:]}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


__all__ = ["NS", "Report"]
