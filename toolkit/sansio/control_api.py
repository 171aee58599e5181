"""Values of natkit's coordination API: requests, replies, stored nodes, the store protocol.

The API itself (paths, fields, status codes) is described in :mod:`toolkit.sansio.control`; the
JSON model of nodes and netmaps is :mod:`toolkit.sansio.control_netmap`. This module holds:

* :class:`Request` and the three replies of the core: :class:`Response` (status + JSON object),
  :class:`StreamOpened` (a server-sent-events stream begins, WHATWG HTML §9.2) and
  :class:`PollPending` (a long poll waits for a change);
* :class:`NodeRecord`, what a store keeps about a node (the public fields plus the token hash), and
  :class:`ControlStore`, the small protocol a store implements (SQLite on disk or in memory:
  :mod:`toolkit.services.controlstore`);
* the address plan: node N gets the N-th address of 100.64.0.0/10 (RFC 6598, Tailscale's CGNAT
  range) and of fd7a:115c:a1e0::/48 (Tailscale's ULA); 100.100.100.100, Tailscale's service
  address, is never handed out.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol
from urllib.parse import parse_qsl

from toolkit.sansio.control_netmap import MAX_HOSTNAME, ControlNode, IPInterface
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey

V4_RANGE = ipaddress.IPv4Network("100.64.0.0/10")
V6_RANGE = ipaddress.IPv6Network("fd7a:115c:a1e0::/48")
QUAD_100 = ipaddress.IPv4Address("100.100.100.100")
MAX_ADDRESS_INDEX = V4_RANGE.num_addresses - 1


# Path -> (method, handler name): the core dispatches on it, GET / lists it.
ROUTES: Mapping[str, tuple[str, str]] = {
    "/": ("GET", "info"),
    "/health": ("GET", "health"),
    "/derpmap": ("GET", "derpmap"),
    "/machine/register": ("POST", "register"),
    "/machine/update": ("POST", "update"),
    "/machine/map": ("GET", "map"),
}

# Why a request was refused: the core counts and traces these tags.
REJECT_REASONS: Mapping[str, str] = {
    "bad-json": "the body is not a JSON object",
    "bad-field": "a field has the wrong type or value",
    "bad-query": "a query parameter is wrong",
    "bad-authkey": "unknown pre-auth key",
    "bad-token": "missing or unknown bearer token",
    "not-found": "no such path",
    "bad-method": "the path does not take this method",
    "no-derp-map": "the server has no DERP map",
    "exhausted": "no address left to hand out",
    "internal-error": "the store failed",
}


class NodeState(Enum):
    """A node as the server sees it; ``Online`` while it has at least one stream open."""

    UNKNOWN = "Unknown"
    OFFLINE = "Offline"
    ONLINE = "Online"


TRANSITIONS: Mapping[tuple[NodeState, str], NodeState] = {
    (NodeState.UNKNOWN, "registered"): NodeState.OFFLINE,
    (NodeState.OFFLINE, "stream opened"): NodeState.ONLINE,
    (NodeState.ONLINE, "last stream closed"): NodeState.OFFLINE,
}


def address_pair(index: int) -> tuple[ipaddress.IPv4Address, ipaddress.IPv6Address]:
    """The ``index``-th address of each range (index 1 is 100.64.0.1 and fd7a:115c:a1e0::1)."""
    return V4_RANGE.network_address + index, V6_RANGE.network_address + index


def dns_label(hostname: str) -> str:
    """``"Alice's Laptop"`` -> ``"alice-s-laptop"``: lower case, ``[a-z0-9-]``, at most 63 characters."""
    return re.sub(r"[^a-z0-9]+", "-", hostname.lower()).strip("-")[:MAX_HOSTNAME].strip("-")


def sha256_hex(text: str) -> str:
    """What is stored instead of a token or a pre-auth key."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --- requests and replies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request as the core sees it: method, target (path and query), lower-case headers, body."""

    method: str
    target: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    peer: Endpoint | None = None  # the client's address, for traces

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, percent-decoded; a repeated name keeps its last value."""
        try:
            pairs = parse_qsl(self.target.partition("?")[2], keep_blank_values=True, max_num_fields=64)
        except ValueError:
            return {}
        return dict(pairs)

    def bearer(self) -> str | None:
        """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
        scheme, _, token = self.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete answer: status, a JSON object body, extra headers (Content-Type is always JSON)."""

    status: int
    body: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()

    def body_bytes(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8") + b"\n"

    @property
    def error(self) -> str | None:
        value = self.body.get("error")
        return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """A ``text/event-stream`` answer begins; its bytes come from ``ControlCore.stream_writes()``."""

    stream_id: int
    node_id: int
    status: int = 200


@dataclass(frozen=True, slots=True)
class PollPending:
    """A long poll waits; its :class:`Response` comes later from ``ControlCore.poll_answers()``."""

    poll_id: int
    node_id: int


Reply = Response | StreamOpened | PollPending


def error_response(status: int, message: str, *headers: tuple[str, str]) -> Response:
    """A 4xx/5xx answer: ``{"error": message}``."""
    return Response(status, {"error": message}, tuple(headers))


def sse_event(event: str, data: str) -> bytes:
    """One server-sent event (WHATWG HTML §9.2.6): ``event:`` and one ``data:`` line per line of data."""
    lines = [f"event: {event}", *(f"data: {line}" for line in data.split("\n"))]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


SSE_KEEPALIVE = b": keepalive\n\n"  # a comment line: ignored by every SSE parser, keeps the stream warm


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a store keeps about a node. ``token_hash`` is the SHA-256 (hex) of its current token;
    ``authkey_hash`` that of the pre-auth key it registered with; times are seconds since the epoch."""

    id: int
    name: str
    hostname: str
    node_key: NodePublicKey
    disco_key: DiscoPublicKey
    endpoints: tuple[Endpoint, ...]
    home_derp: int
    addr_v4: ipaddress.IPv4Address
    addr_v6: ipaddress.IPv6Address
    created: float
    last_seen: float
    token_hash: str
    authkey_hash: str

    @property
    def addresses(self) -> tuple[IPInterface, ...]:
        return (ipaddress.IPv4Interface(f"{self.addr_v4}/32"), ipaddress.IPv6Interface(f"{self.addr_v6}/128"))

    def public(self, online: bool) -> ControlNode:
        return ControlNode(
            self.id,
            self.name,
            self.hostname,
            self.node_key,
            self.disco_key,
            self.addresses,
            self.endpoints,
            self.home_derp,
            online,
            self.last_seen,
            self.created,
        )


def unique_name(hostname: str, node_id: int, nodes: Iterable[NodeRecord]) -> str:
    """The hostname as a DNS label, ``-2``, ``-3``... appended while another node has that name."""
    base = dns_label(hostname) or f"node-{node_id}"
    taken = {n.name for n in nodes if n.id != node_id}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base[: MAX_HOSTNAME - len(str(n)) - 1]}-{n}"
    return name


class ControlStore(Protocol):
    """Where the core keeps nodes, pre-auth keys and counters. Every method commits before it returns.

    Counters start at 0; :meth:`bump` adds one and returns the new value. The core uses ``node-id``,
    ``address`` (the last address index handed out) and ``version`` (the netmap version).
    """

    def nodes(self) -> list[NodeRecord]: ...  # ordered by id

    def node(self, node_id: int) -> NodeRecord | None: ...

    def node_by_key(self, key: NodePublicKey) -> NodeRecord | None: ...

    def node_by_token(self, token_hash: str) -> NodeRecord | None: ...

    def put_node(self, node: NodeRecord) -> None: ...  # insert, or replace the node with the same id

    def counter(self, name: str) -> int: ...

    def bump(self, name: str) -> int: ...

    def add_authkey(self, key_hash: str, now: float) -> None: ...  # remember a key (no-op if known)

    def use_authkey(self, key_hash: str) -> None: ...  # count one registration with it


__all__ = [
    "NodeState",
    "REJECT_REASONS",
    "ROUTES",
    "TRANSITIONS",
    "unique_name",
    "ControlStore",
    "MAX_ADDRESS_INDEX",
    "NodeRecord",
    "PollPending",
    "QUAD_100",
    "Reply",
    "Request",
    "Response",
    "SSE_KEEPALIVE",
    "StreamOpened",
    "V4_RANGE",
    "V6_RANGE",
    "address_pair",
    "dns_label",
    "error_response",
    "sha256_hex",
    "sse_event",
]
