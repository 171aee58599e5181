"""The coordination API's JSON model: nodes and netmaps, both ways, and the field parsers.

Shared by the server core (:mod:`toolkit.sansio.control`) and the client
(:mod:`toolkit.services.controlclient`), so both read and write exactly one format. Field names are
CamelCase as in Tailscale's ``tailcfg`` (``NodeKey``, ``DiscoKey``, ``HomeDERP``, ``LastSeen``); keys
travel as ``nodekey:<64 hex>`` / ``discokey:<64 hex>`` (protocols.md §1.1), times as RFC 3339 UTC
(RFC 3339 §5.6). Every parser raises :class:`FieldError` (a :class:`~toolkit.errors.BadValueError`)
whose message names the field: ``field 'NodeKey': not a nodekey:<64 hex> key``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from toolkit.codec.derpmap import DERPMap
from toolkit.errors import BadValueError, DecodeError, UsageError
from toolkit.types import DiscoPublicKey, Endpoint, Key32, NodePublicKey

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
MAX_ENDPOINTS = 32  # endpoints a node may announce (Tailscale sends a handful: LAN, STUN, port-mapped)
MAX_HOSTNAME = 63  # one DNS label (RFC 1035 §2.3.4)
MAX_HOME_DERP = 1 << 31  # region ids are Go ints; we keep them in int32
MAX_AUTHKEY = 1024
_KEY_TEXT = re.compile(r"([a-z]+):([0-9a-fA-F]{64})")
_K = TypeVar("_K", bound=Key32)


class FieldError(BadValueError):
    """A request or response field of the wrong type or value; the message names the field."""

    reason = "bad-field"

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"field {name!r}: {problem}")
        self.field = name


# --- field parsers ---------------------------------------------------------------------------------


def rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(name: str, value: object) -> float:
    if not isinstance(value, str):
        raise FieldError(name, "not an RFC 3339 time string")
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise FieldError(name, f"{value!r} is not an RFC 3339 time") from None


def parse_key(name: str, value: object, kind: type[_K]) -> _K:
    """``nodekey:<64 hex>`` / ``discokey:<64 hex>``: the prefix must match ``kind``."""
    want = kind.prefix
    match = _KEY_TEXT.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(1) + ":" != want:
        raise FieldError(name, f"not a {want}<64 hex> key")
    return kind(bytes.fromhex(match.group(2)))


def parse_int(name: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(name, f"not an integer (got {type(value).__name__})")
    if not low <= value <= high:
        raise FieldError(name, f"{value} is not in {low}..{high}")
    return value


def parse_text(name: str, value: object, max_len: int) -> str:
    if not isinstance(value, str):
        raise FieldError(name, f"not a string (got {type(value).__name__})")
    if len(value) > max_len:
        raise FieldError(name, f"longer than {max_len} characters")
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):
        raise FieldError(name, "contains control characters")
    return value


def parse_endpoints(name: str, value: object) -> tuple[Endpoint, ...]:
    """A list of ``"1.2.3.4:41641"`` / ``"[2001:db8::1]:41641"`` strings; duplicates are dropped."""
    if not isinstance(value, list):
        raise FieldError(name, f'not a list of "IP:port" strings (got {type(value).__name__})')
    if len(value) > MAX_ENDPOINTS:
        raise FieldError(name, f"more than {MAX_ENDPOINTS} endpoints")
    out: list[Endpoint] = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldError(name, f"item {i} is not a string")
        try:
            ep = Endpoint.parse(item)
        except (UsageError, DecodeError):
            raise FieldError(
                name, f"item {i} {item[:60]!r} is not IP:port (1.2.3.4:41641 or [2001:db8::1]:41641)"
            ) from None
        if ep.port == 0:
            raise FieldError(name, f"item {i} {item!r} has port 0")
        if ep not in out:
            out.append(ep)
    return tuple(out)


def parse_addresses(name: str, value: object) -> tuple[IPInterface, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FieldError(name, "not a list of prefix strings")
    try:
        return tuple(ipaddress.ip_interface(v) for v in value)
    except ValueError:
        raise FieldError(name, f"{value!r} holds something that is not an IP prefix") from None


class BodyError(BadValueError):
    """A request body that is not a JSON object."""

    reason = "bad-json"


def json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object (UTF-8, RFC 8259); raises :class:`BodyError`."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise BodyError(f"body is not JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise BodyError("body must be a JSON object ({...})")
    return obj


# --- request bodies --------------------------------------------------------------------------------


def _req(obj: Mapping[str, Any], name: str) -> Any:
    if obj.get(name) is None:
        raise FieldError(name, "missing")
    return obj[name]


@dataclass(frozen=True, slots=True)
class RegisterBody:
    """``POST /machine/register``: the pre-auth key, the node's keys and what it knows about itself."""

    auth_key: str
    node_key: NodePublicKey
    disco_key: DiscoPublicKey
    endpoints: tuple[Endpoint, ...] = ()
    home_derp: int = 0
    hostname: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {
            "AuthKey": self.auth_key,
            "NodeKey": str(self.node_key),
            "DiscoKey": str(self.disco_key),
            "Endpoints": [str(e) for e in self.endpoints],
            "HomeDERP": self.home_derp,
            "Hostname": self.hostname,
        }

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> RegisterBody:
        """Parse a request object; raises :class:`FieldError` for the first bad field."""
        auth_key = parse_text("AuthKey", _req(obj, "AuthKey"), MAX_AUTHKEY)
        node_key = parse_key("NodeKey", _req(obj, "NodeKey"), NodePublicKey)
        disco_key = parse_key("DiscoKey", _req(obj, "DiscoKey"), DiscoPublicKey)
        rest = UpdateBody.from_obj(obj)  # the optional fields parse the same way
        return cls(auth_key, node_key, disco_key, rest.endpoints or (), rest.home_derp or 0, rest.hostname or "")


@dataclass(frozen=True, slots=True)
class UpdateBody:
    """``POST /machine/update``: the fields that changed (None: unchanged)."""

    endpoints: tuple[Endpoint, ...] | None = None
    home_derp: int | None = None
    disco_key: DiscoPublicKey | None = None
    hostname: str | None = None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        if self.endpoints is not None:
            obj["Endpoints"] = [str(e) for e in self.endpoints]
        if self.home_derp is not None:
            obj["HomeDERP"] = self.home_derp
        if self.disco_key is not None:
            obj["DiscoKey"] = str(self.disco_key)
        if self.hostname is not None:
            obj["Hostname"] = self.hostname
        return obj

    @classmethod
    def from_obj(cls, obj: Mapping[str, Any]) -> UpdateBody:
        # a missing field and null are both "unchanged"
        endpoints, home, disco, host = (obj.get(n) for n in ("Endpoints", "HomeDERP", "DiscoKey", "Hostname"))
        return cls(
            endpoints=parse_endpoints("Endpoints", endpoints) if endpoints is not None else None,
            home_derp=parse_int("HomeDERP", home, 0, MAX_HOME_DERP) if home is not None else None,
            disco_key=parse_key("DiscoKey", disco, DiscoPublicKey) if disco is not None else None,
            hostname=parse_text("Hostname", host, MAX_HOSTNAME) if host is not None else None,
        )


# --- nodes and netmaps -----------------------------------------------------------------------------


def _get(obj: Mapping[str, Any], name: str) -> Any:
    if name not in obj:
        raise FieldError(name, "missing")
    return obj[name]


@dataclass(frozen=True, slots=True)
class ControlNode:
    """A node as the API shows it: to itself (``Self``) and to its peers (``Peers``)."""

    id: int
    name: str
    hostname: str
    node_key: NodePublicKey
    disco_key: DiscoPublicKey
    addresses: tuple[IPInterface, ...]
    endpoints: tuple[Endpoint, ...]
    home_derp: int
    online: bool
    last_seen: float
    created: float

    @property
    def ipv4(self) -> ipaddress.IPv4Address | None:
        return next((a.ip for a in self.addresses if isinstance(a, ipaddress.IPv4Interface)), None)

    @property
    def ipv6(self) -> ipaddress.IPv6Address | None:
        return next((a.ip for a in self.addresses if isinstance(a, ipaddress.IPv6Interface)), None)

    def to_obj(self) -> dict[str, Any]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Hostname": self.hostname,
            "NodeKey": str(self.node_key),
            "DiscoKey": str(self.disco_key),
            "Addresses": [str(a) for a in self.addresses],
            "Endpoints": [str(e) for e in self.endpoints],
            "HomeDERP": self.home_derp,
            "Online": self.online,
            "LastSeen": rfc3339(self.last_seen),
            "Created": rfc3339(self.created),
        }

    @classmethod
    def from_obj(cls, obj: object) -> ControlNode:
        """Parse a node object; raises :class:`FieldError`."""
        if not isinstance(obj, dict):
            raise FieldError("Node", "not an object")
        online = _get(obj, "Online")
        if not isinstance(online, bool):
            raise FieldError("Online", "not true or false")
        return cls(
            id=parse_int("ID", _get(obj, "ID"), 1, 1 << 62),
            name=parse_text("Name", _get(obj, "Name"), MAX_HOSTNAME),
            hostname=parse_text("Hostname", obj.get("Hostname", ""), MAX_HOSTNAME),
            node_key=parse_key("NodeKey", _get(obj, "NodeKey"), NodePublicKey),
            disco_key=parse_key("DiscoKey", _get(obj, "DiscoKey"), DiscoPublicKey),
            addresses=parse_addresses("Addresses", _get(obj, "Addresses")),
            endpoints=parse_endpoints("Endpoints", _get(obj, "Endpoints")),
            home_derp=parse_int("HomeDERP", _get(obj, "HomeDERP"), 0, MAX_HOME_DERP),
            online=online,
            last_seen=parse_time("LastSeen", _get(obj, "LastSeen")),
            created=parse_time("Created", obj.get("Created", "1970-01-01T00:00:00Z")),
        )


@dataclass(frozen=True, slots=True)
class NetMap:
    """What one node is told: its own entry, every other node, the DERP map, and the map's version."""

    version: int
    self_node: ControlNode
    peers: tuple[ControlNode, ...]
    derp_map: DERPMap | None

    def peer(self, key: NodePublicKey) -> ControlNode | None:
        return next((p for p in self.peers if p.node_key == key), None)

    def to_obj(self) -> dict[str, Any]:
        return {
            "Version": self.version,
            "Self": self.self_node.to_obj(),
            "Peers": [p.to_obj() for p in self.peers],
            "DERPMap": self.derp_map.to_obj() if self.derp_map is not None else None,
        }

    @classmethod
    def from_obj(cls, obj: object) -> NetMap:
        """Parse a netmap object; raises :class:`~toolkit.errors.BadValueError` naming the field."""
        if not isinstance(obj, dict):
            raise FieldError("NetMap", "not an object")
        peers = _get(obj, "Peers")
        if not isinstance(peers, list):
            raise FieldError("Peers", "not a list")
        raw_map = obj.get("DERPMap")
        return cls(
            version=parse_int("Version", _get(obj, "Version"), 0, 1 << 62),
            self_node=ControlNode.from_obj(_get(obj, "Self")),
            peers=tuple(ControlNode.from_obj(p) for p in peers),
            derp_map=DERPMap.from_obj(raw_map) if raw_map is not None else None,
        )


__all__ = [
    "BodyError",
    "json_object",
    "ControlNode",
    "FieldError",
    "IPInterface",
    "MAX_ENDPOINTS",
    "MAX_HOME_DERP",
    "MAX_HOSTNAME",
    "NetMap",
    "RegisterBody",
    "UpdateBody",
    "parse_addresses",
    "parse_endpoints",
    "parse_int",
    "parse_key",
    "parse_text",
    "parse_time",
    "rfc3339",
]
