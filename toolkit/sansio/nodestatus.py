"""What :class:`~toolkit.sansio.nodecore.NodeCore` reports: its events and its status (issue 6, ``natkit status``).

Events are past-tense facts or result nouns (design.md §6), pulled with ``NodeCore.next_event``:

* :class:`EndpointsChanged` - our own endpoints (local + STUN-discovered) changed; the driver tells control.
* :class:`DerpRegionsWanted` - the DERP regions the node needs a connection to (home + the peers' homes).
* :class:`PingResult` / :class:`PingUnanswered` - one answer (or timeout) of a ``natkit ping`` disco ping,
  ``via`` ``"DERP(r1)"`` or ``"203.0.113.7:41641"`` as ``tailscale ping`` prints it.
* :class:`PeerStateChanged` - a peer's flowchart state (a seed id) or path kind changed.

:class:`NodeStatus` is a snapshot: ``to_json()`` is a JSON-able dict (the local API and ``--json``), and
``format()`` is the text ``natkit status`` prints, one line for the node then one line per peer, in the
spirit of ``tailscale status`` (``IP  name  state; path endpoint, latency, tx N rx M``). The line format
is kept stable: the CLI and tests read it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from toolkit.errors import UsageError
from toolkit.sansio.control_netmap import ControlNode
from toolkit.sansio.peergraph import State, coarse
from toolkit.sansio.wgevents import PeerStatus as WgPeerStatus
from toolkit.types import Endpoint, NodePublicKey

PathKind: TypeAlias = Literal["direct", "local", "derp"]


# --- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EndpointsChanged:
    """Our own endpoints changed (STUN-discovered first, then local); tell control (``UpdateBody``)."""

    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class DerpRegionsWanted:
    """The DERP regions the node needs a connection to, sorted (home first is not implied)."""

    regions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class PingResult:
    """A ``natkit ping`` answer: ``pong from b (100.64.0.2) via DERP(r1) in 14ms``."""

    peer_name: str
    peer_ip: str
    via: str
    latency_s: float
    is_direct: bool

    def format(self) -> str:
        return f"pong from {self.peer_name} ({self.peer_ip}) via {self.via} in {self.latency_s * 1000:.0f}ms"


@dataclass(frozen=True, slots=True)
class PingUnanswered:
    """A ``natkit ping`` disco ping that got no pong within the ping timeout."""

    peer_name: str
    peer_ip: str
    via: str

    def format(self) -> str:
        return f"timeout waiting for pong from {self.peer_name} ({self.peer_ip}) via {self.via}"


@dataclass(frozen=True, slots=True)
class PeerStateChanged:
    """A peer's flowchart state (``state_id``, a seed id) or its path kind changed."""

    peer_name: str
    state_id: str
    path_kind: PathKind


NodeEvent: TypeAlias = EndpointsChanged | DerpRegionsWanted | PingResult | PingUnanswered | PeerStateChanged


def via_text(region: int | None, endpoint: Endpoint | None) -> str:
    """``DERP(r1)`` for a DERP path, else the endpoint (``203.0.113.7:41641``)."""
    if region is not None:
        return f"DERP(r{region})"
    return str(endpoint) if endpoint is not None else "-"


# --- status ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as ``natkit status`` shows it."""

    name: str
    node_key: NodePublicKey
    tunnel_ips: tuple[str, ...]
    state: str  # the seed id (peergraph.State value)
    coarse: str  # the seed's coarse connection state ("DERP Relay", "Direct P2P", ...)
    path: PathKind
    endpoint: Endpoint | None  # the direct endpoint in use, if any
    derp_region: int | None  # the peer's home region
    latency_s: float | None
    mtu: int | None
    tx_bytes: int
    rx_bytes: int
    last_handshake: float | None  # wall seconds of the last WireGuard handshake

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "node_key": str(self.node_key),
            "tunnel_ips": list(self.tunnel_ips),
            "state": self.state,
            "coarse": self.coarse,
            "path": self.path,
            "endpoint": str(self.endpoint) if self.endpoint is not None else None,
            "derp_region": self.derp_region,
            "latency_s": self.latency_s,
            "mtu": self.mtu,
            "tx_bytes": self.tx_bytes,
            "rx_bytes": self.rx_bytes,
            "last_handshake": self.last_handshake,
        }

    def format(self) -> str:
        ip = self.tunnel_ips[0] if self.tunnel_ips else "-"
        if self.path == "derp":
            where = f'relay "r{self.derp_region}"' if self.derp_region is not None else "no relay"
        else:
            where = f"{self.path} {self.endpoint}"
        latency = f"{self.latency_s * 1000:.1f}ms" if self.latency_s is not None else "-"
        return (
            f"{ip:<15} {self.name:<12} {self.state} ({self.coarse}); {where}, {latency}, "
            f"tx {self.tx_bytes} rx {self.rx_bytes}"
        )


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The node and its peers at ``at``."""

    at: float
    name: str
    node_key: NodePublicKey
    tunnel_ips: tuple[str, ...]
    endpoints: tuple[Endpoint, ...]
    home_region: int | None
    derp_connected: tuple[int, ...]
    peers: tuple[PeerStatus, ...]
    counters: dict[str, int] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)

    def peer(self, name: str) -> PeerStatus | None:
        return next((p for p in self.peers if p.name == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "self": {
                "name": self.name,
                "node_key": str(self.node_key),
                "tunnel_ips": list(self.tunnel_ips),
                "endpoints": [str(e) for e in self.endpoints],
                "home_region": self.home_region,
                "derp_connected": list(self.derp_connected),
            },
            "peers": [p.to_json() for p in self.peers],
            "counters": dict(sorted(self.counters.items())),
            "drops": dict(sorted(self.drops.items())),
        }

    def format(self) -> str:
        """``natkit status``: the node's line, then one line per peer (stable format)."""
        ip = self.tunnel_ips[0] if self.tunnel_ips else "-"
        home = f"r{self.home_region}" if self.home_region is not None else "none"
        eps = ",".join(str(e) for e in self.endpoints) or "-"
        lines = [f"{ip:<15} {self.name:<12} self; home {home}, endpoints {eps}"]
        lines += [p.format() for p in self.peers]
        return "\n".join(lines)


def peer_status(
    node: ControlNode,
    state: State,
    path: PathKind,
    endpoint: Endpoint | None,
    latency: float | None,
    mtu: int | None,
    wg: WgPeerStatus | None,
) -> PeerStatus:
    """A peer's status line from its netmap entry, its flow's answers and its WireGuard peer."""
    return PeerStatus(
        name=node.name,
        node_key=node.node_key,
        tunnel_ips=tuple(str(a.ip) for a in node.addresses),
        state=state.value,
        coarse=coarse(state).value,
        path=path,
        endpoint=endpoint,
        derp_region=node.home_derp or None,
        latency_s=latency,
        mtu=mtu,
        tx_bytes=wg.tx_bytes if wg is not None else 0,
        rx_bytes=wg.rx_bytes if wg is not None else 0,
        last_handshake=wg.last_handshake if wg is not None else None,
    )


def find_node(nodes: Iterable[ControlNode], query: str | NodePublicKey) -> ControlNode:
    """The peer ``natkit ping`` / ``status`` means: a name, host name, tunnel IP, node key (or its short form).
    Raises :class:`UsageError` naming the known peers."""
    nodes = list(nodes)
    text = query.strip() if isinstance(query, str) else None
    for node in nodes:
        if text is None:
            if node.node_key == query:
                return node
        elif text in (node.name, node.hostname, str(node.node_key), node.node_key.short()) or any(
            text == str(a.ip) for a in node.addresses
        ):
            return node
    known = ", ".join(sorted(n.name for n in nodes)) or "none"
    raise UsageError(f"no peer {query!s}: give a peer's name, tunnel IP or node key (peers: {known})")


__all__ = [
    "DerpRegionsWanted",
    "EndpointsChanged",
    "NodeEvent",
    "NodeStatus",
    "PathKind",
    "PeerStateChanged",
    "PeerStatus",
    "PingResult",
    "PingUnanswered",
    "find_node",
    "peer_status",
    "via_text",
]
