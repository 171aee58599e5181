"""The DERP map: regions, their relay nodes and STUN ports (Tailscale ``tailcfg.DERPMap``).

JSON field names follow Tailscale's ``tailcfg`` structs, so a map written for ``tailscale`` loads
here and the map natkit's coordination server serves is the shape Tailscale clients read::

    {"Regions": {"1": {"RegionID": 1, "RegionCode": "lab", "RegionName": "Lab relay",
                       "Nodes": [{"Name": "1a", "RegionID": 1, "HostName": "derp1.lab",
                                  "IPv4": "10.0.0.2", "STUNPort": 3478, "DERPPort": 8080,
                                  "Scheme": "http"}]}},
     "HomeParams": {"RegionScore": {"1": 1.0}}}

Port conventions (``tailcfg.DERPNode``): ``STUNPort`` 0 means 3478 and -1 means no STUN;
``IPv4``/``IPv6`` empty means "look ``HostName`` up in DNS" and ``"none"`` means "do not use this family";
``DERPPort`` 0 means 443 (80 with ``Scheme: http``). ``STUNOnly`` nodes run no relay. A region with ``Avoid`` is not picked as
home, and ``NoMeasureNoHome`` regions are neither measured nor picked (netcheck, protocols.md §5).

natkit extension (ignored by Tailscale's decoder, which skips unknown fields): ``Scheme`` is
``"https"`` (the default, as in Tailscale) or ``"http"``, the plain-HTTP relays labs use (Tailscale
gets the same with ``TS_DEBUG_USE_DERP_HTTP``, protocols.md §2.1).

Decoding raises :class:`~toolkit.errors.BadValueError` naming the field that is wrong.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import BadValueError
from toolkit.types import Endpoint

DEFAULT_STUN_PORT = 3478
DEFAULT_DERP_PORT = 443
NO_ADDRESS = "none"  # tailcfg.DERPNode.IPv4/IPv6: the conventional value that disables a family (and its DNS lookup)
MAX_REGION_ID = 2**53 - 1  # tailcfg.DERPRegionID.IsValid: positive and fits a JavaScript number
_REGION_KEY = re.compile(r"-?[0-9]+")  # strconv.ParseInt(s, 10, 64): ASCII digits, no spaces, no "_"


def _field(obj: dict[str, Any], where: str, key: str, kind: type, default: Any) -> Any:
    value = obj.get(key, default)
    if value is None:
        value = default
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise BadValueError(f"DERP map {where}: {key!r} must be a {kind.__name__}, not {value!r}")
    return value


def _ip(where: str, key: str, text: str, version: int) -> str:
    if not text or text == NO_ADDRESS:
        return text
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise BadValueError(f"DERP map {where}: {key!r} {text!r} is not an IP address") from None
    if ip.version != version:
        raise BadValueError(f"DERP map {where}: {key!r} {text!r} is not an IPv{version} address")
    return str(ip)


@dataclass(frozen=True, slots=True)
class DERPNode:
    """One relay (and/or STUN server) of a region."""

    name: str
    region_id: int
    host_name: str
    ipv4: str = ""
    ipv6: str = ""
    stun_port: int = 0
    stun_only: bool = False
    derp_port: int = 0
    insecure_for_tests: bool = False
    scheme: str = "https"

    def __post_init__(self) -> None:
        if self.scheme not in ("http", "https"):
            raise BadValueError(f"DERP map node {self.name!r}: 'Scheme' must be http or https, not {self.scheme!r}")
        if not -1 <= self.stun_port <= 0xFFFF:
            raise BadValueError(f"DERP map node {self.name!r}: 'STUNPort' {self.stun_port} is not in -1..65535")
        if not 0 <= self.derp_port <= 0xFFFF:
            raise BadValueError(f"DERP map node {self.name!r}: 'DERPPort' {self.derp_port} is not in 0..65535")
        if not self.host_name and not (self.address(4) or self.address(6)):
            raise BadValueError(f"DERP map node {self.name!r}: needs a 'HostName' or an 'IPv4'/'IPv6' address")

    @property
    def stun_enabled(self) -> bool:
        return self.stun_port >= 0

    def address(self, version: int) -> str:
        """The literal IPv4 (``version`` 4) or IPv6 address, or "" (none given, or ``"none"``)."""
        text = self.ipv4 if version == 4 else self.ipv6
        return "" if text == NO_ADDRESS else text

    def family_disabled(self, version: int) -> bool:
        """``IPv4``/``IPv6`` is ``"none"``: do not use that family, not even through DNS (tailcfg)."""
        return (self.ipv4 if version == 4 else self.ipv6) == NO_ADDRESS

    def stun_endpoints(self) -> list[Endpoint]:
        """Where to send STUN: the node's literal v4 and v6 addresses (netcheck, protocols.md §5.2)."""
        if not self.stun_enabled:
            return []
        port = self.stun_port or DEFAULT_STUN_PORT
        out = [Endpoint(ipaddress.ip_address(ip), port) for ip in (self.address(4), self.address(6)) if ip]
        if not out:
            try:
                out.append(Endpoint(ipaddress.ip_address(self.host_name), port))
            except ValueError:
                pass  # a DNS name: the caller resolves it
        return out

    @property
    def url(self) -> str:
        """The relay's URL, ``https://host[:port]/derp`` (protocols.md §2.1)."""
        host = self.host_name or self.address(4) or f"[{self.address(6)}]"
        default = DEFAULT_DERP_PORT if self.scheme == "https" else 80
        suffix = "" if self.dial_port == default else f":{self.dial_port}"
        return f"{self.scheme}://{host}{suffix}/derp"

    def dial_host(self) -> str:
        """The address to connect to: the literal IPv4, else IPv6, else the host name."""
        return self.address(4) or self.address(6) or self.host_name

    @property
    def dial_port(self) -> int:
        """``DERPPort``, or the scheme's default: 443, or 80 for plain HTTP (protocols.md §2.1)."""
        return self.derp_port or (DEFAULT_DERP_PORT if self.scheme == "https" else 80)

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"Name": self.name, "RegionID": self.region_id, "HostName": self.host_name}
        for key, value in (
            ("IPv4", self.ipv4),
            ("IPv6", self.ipv6),
            ("STUNPort", self.stun_port),
            ("STUNOnly", self.stun_only),
            ("DERPPort", self.derp_port),
            ("InsecureForTests", self.insecure_for_tests),
        ):
            if value:
                obj[key] = value
        if self.scheme != "https":
            obj["Scheme"] = self.scheme
        return obj

    @classmethod
    def from_obj(cls, obj: Any, where: str) -> DERPNode:
        if not isinstance(obj, dict):
            raise BadValueError(f"DERP map {where}: a node must be an object")
        name = _field(obj, where, "Name", str, "")
        w = f"{where} node {name!r}"
        return cls(
            name=name,
            region_id=_field(obj, w, "RegionID", int, 0),
            host_name=_field(obj, w, "HostName", str, ""),
            ipv4=_ip(w, "IPv4", _field(obj, w, "IPv4", str, ""), 4),
            ipv6=_ip(w, "IPv6", _field(obj, w, "IPv6", str, ""), 6),
            stun_port=_field(obj, w, "STUNPort", int, 0),
            stun_only=_field(obj, w, "STUNOnly", bool, False),
            derp_port=_field(obj, w, "DERPPort", int, 0),
            insecure_for_tests=_field(obj, w, "InsecureForTests", bool, False),
            scheme=_field(obj, w, "Scheme", str, "https"),
        )


@dataclass(frozen=True, slots=True)
class DERPRegion:
    region_id: int
    region_code: str
    region_name: str
    nodes: tuple[DERPNode, ...] = ()
    avoid: bool = False
    no_measure_no_home: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.region_id <= MAX_REGION_ID:
            raise BadValueError(
                f"DERP map region {self.region_code!r}: 'RegionID' must be a positive integer below 2**53"
            )
        for node in self.nodes:
            if node.region_id not in (0, self.region_id):
                raise BadValueError(
                    f"DERP map node {node.name!r} says RegionID {node.region_id} but sits in region {self.region_id}"
                )

    def relay_nodes(self) -> list[DERPNode]:
        return [n for n in self.nodes if not n.stun_only]

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "RegionID": self.region_id,
            "RegionCode": self.region_code,
            "RegionName": self.region_name,
        }
        if self.avoid:
            obj["Avoid"] = True
        if self.no_measure_no_home:
            obj["NoMeasureNoHome"] = True
        obj["Nodes"] = [n.to_obj() for n in self.nodes]
        return obj

    @classmethod
    def from_obj(cls, obj: Any, where: str) -> DERPRegion:
        if not isinstance(obj, dict):
            raise BadValueError(f"DERP map {where}: a region must be an object")
        nodes = _field(obj, where, "Nodes", list, [])
        return cls(
            region_id=_field(obj, where, "RegionID", int, 0),
            region_code=_field(obj, where, "RegionCode", str, ""),
            region_name=_field(obj, where, "RegionName", str, ""),
            nodes=tuple(DERPNode.from_obj(n, where) for n in nodes),
            avoid=_field(obj, where, "Avoid", bool, False),
            no_measure_no_home=_field(obj, where, "NoMeasureNoHome", bool, False),
        )


@dataclass(frozen=True, slots=True)
class DERPMap:
    """Regions by id, plus the optional per-region score netcheck multiplies latencies by."""

    regions: dict[int, DERPRegion] = field(default_factory=dict)
    region_score: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rid, region in self.regions.items():
            if rid != region.region_id:
                raise BadValueError(f"DERP map: region under key {rid} says RegionID {region.region_id}")

    def region(self, region_id: int) -> DERPRegion:
        try:
            return self.regions[region_id]
        except KeyError:
            known = ", ".join(str(r) for r in sorted(self.regions)) or "none"
            raise BadValueError(f"DERP map has no region {region_id} (regions: {known})") from None

    def sorted_regions(self) -> list[DERPRegion]:
        return [self.regions[r] for r in sorted(self.regions)]

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"Regions": {str(r): self.regions[r].to_obj() for r in sorted(self.regions)}}
        if self.region_score:
            obj["HomeParams"] = {"RegionScore": {str(r): s for r, s in sorted(self.region_score.items())}}
        return obj

    def to_json(self, *, indent: int | None = None) -> bytes:
        return json.dumps(self.to_obj(), indent=indent).encode("utf-8")

    @classmethod
    def from_obj(cls, obj: Any) -> DERPMap:
        if not isinstance(obj, dict):
            raise BadValueError("DERP map: the top level must be an object with 'Regions'")
        raw_regions = _field(obj, "top level", "Regions", dict, {})
        regions: dict[int, DERPRegion] = {}
        keys: dict[int, str] = {}
        for key, value in raw_regions.items():
            if not _REGION_KEY.fullmatch(key):
                raise BadValueError(f"DERP map: 'Regions' key {key!r} is not an integer")
            rid = int(key)
            if rid in regions:
                raise BadValueError(f"DERP map: 'Regions' keys {keys[rid]!r} and {key!r} are the same region {rid}")
            keys[rid] = key
            regions[rid] = DERPRegion.from_obj(value, f"region {key}")
        home = _field(obj, "top level", "HomeParams", dict, {})
        scores_raw = _field(home, "HomeParams", "RegionScore", dict, {})
        scores: dict[int, float] = {}
        for key, value in scores_raw.items():
            if not _REGION_KEY.fullmatch(key):
                raise BadValueError(f"DERP map HomeParams: 'RegionScore' key {key!r} is not a region id")
            try:
                score = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
            except OverflowError:
                score = math.nan
            if not math.isfinite(score):
                raise BadValueError(f"DERP map HomeParams: 'RegionScore'[{key!r}] = {value!r} is not a number")
            scores[int(key)] = score  # 0 and negative scores are ignored by their users (tailcfg)
        return cls(regions=regions, region_score=scores)

    @classmethod
    def from_json(cls, data: bytes | str) -> DERPMap:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise BadValueError(f"DERP map is not JSON: {exc}") from None
        return cls.from_obj(obj)


__all__ = ["DEFAULT_DERP_PORT", "DEFAULT_STUN_PORT", "MAX_REGION_ID", "NO_ADDRESS", "DERPMap", "DERPNode", "DERPRegion"]
