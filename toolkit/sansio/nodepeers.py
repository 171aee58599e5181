"""The node's state and its peer table, sans-IO: netmap peers, their flows, and what the flows produce.

:class:`NodePeers` is the base of :class:`~toolkit.sansio.nodecore.NodeCore` (issue 6; design.md §2-§3):
it holds every piece of the node's state (built once in ``__init__``) and keeps one :class:`Peer` per netmap
peer: a WireGuard device peer at a placeholder endpoint (:mod:`.nodewg`) and one
:class:`~toolkit.sansio.peerflow.PeerFlow` (the seed flowchart for that peer, protocols.md §4). After every
input :meth:`NodePeers._drain_flow` seals the flow's disco messages (protocols.md §1.1) and routes them
(DERP for a magic destination ``127.3.3.40:<region>``, else UDP), turns a flow's wish for fresh endpoints
into a re-STUN, and reports ``natkit ping`` answers and state changes as node events (:mod:`.nodestatus`).

Decisions: a peer's allowed IPs are its addresses as host prefixes (/32, /128) whatever prefix control
writes; a peer with neither endpoints (netmap or cache) nor a home region enters the flowchart without
info (``QueryControl``) and is given its info by the next netmap that has some; cached endpoints (from
:meth:`~NodePeers.import_cache`) are tried together with the netmap's; a peer whose disco key changed
restarted: it gets a fresh flow and a fresh WireGuard peer (its sessions died with it; the next packet
starts a handshake, as Tailscale's engine does when it removes such a peer from wireguard-go).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from toolkit.codec.derpmap import DERPMap
from toolkit.crypto.disco import seal_message
from toolkit.crypto.keys import public_key
from toolkit.sansio.control_netmap import ControlNode
from toolkit.sansio.derphome import region_of
from toolkit.sansio.nodeendpoints import OwnEndpoints, cache_from_json, cache_to_json
from toolkit.sansio.nodestatus import (
    NodeEvent,
    PathKind,
    PeerStateChanged,
    PingResult,
    PingUnanswered,
    find_node,
    via_text,
)
from toolkit.sansio.nodewg import WireGuardGlue
from toolkit.sansio.peerflow import PeerFlow
from toolkit.sansio.peergraph import State
from toolkit.sansio.peerpath_types import EndpointsRefreshWanted, PingTimedOut, PongReceived, Purpose
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Endpoint, NodePrivateKey, NodePublicKey


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """``epoch`` is the wall time at ``now == 0`` (WireGuard's TAI64N timestamps and ``wg show`` times)."""

    name: str
    node_key: NodePrivateKey
    disco_key: DiscoPrivateKey
    timing: Timing = DEFAULT
    epoch: float = 0.0


@dataclass(slots=True)
class Peer:
    """One netmap peer: its control entry, its flow, and the (state, path kind) last reported."""

    node: ControlNode
    flow: PeerFlow
    shown: tuple[str, PathKind] | None = None  # the (state, path kind) last reported

    @property
    def key(self) -> NodePublicKey:
        return self.node.node_key

    @property
    def region(self) -> int | None:
        return self.node.home_derp or None


class NodePeers:
    """The node's state and peer table; :class:`~toolkit.sansio.nodecore.NodeCore` adds inputs and outputs."""

    def __init__(self, config: NodeConfig, rng: Callable[[int], bytes], tracer: Tracer | None = None) -> None:
        self.config, self.name, self.timing = config, config.name, config.timing
        self.tracer, self._rng = tracer, rng
        self.node_public: NodePublicKey = public_key(config.node_key)
        self.disco_public: DiscoPublicKey = public_key(config.disco_key)
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.derp_map: DERPMap | None = None
        self.home_region: int | None = None
        self.derp_connected: set[int] = set()
        self.self_node: ControlNode | None = None
        self._wg = WireGuardGlue(
            config.node_key, rng, epoch=config.epoch, timing=self.timing, tracer=tracer, node=self.name
        )
        self._eps = OwnEndpoints(rng, timing=self.timing, tracer=tracer, node=self.name)
        self._eps_at: float | None = None  # when the endpoints were last confirmed (None: not yet)
        self._eps_version = 0
        self._peers: dict[NodePublicKey, Peer] = {}
        self._by_disco: dict[DiscoPublicKey, NodePublicKey] = {}
        self._cache: dict[NodePublicKey, tuple[Endpoint, ...]] = {}
        self._regions: tuple[int, ...] = ()
        self._udp_out: list[tuple[bytes, Endpoint]] = []
        self._derp_out: list[tuple[int, NodePublicKey, bytes]] = []
        self._ip_out: list[bytes] = []
        self._events: deque[NodeEvent] = deque()
        self._now = 0.0

    # --- the endpoint cache ------------------------------------------------------------------------

    def import_cache(self, obj: dict[str, Any]) -> None:
        """Last-known endpoints per peer (from :meth:`export_cache`); bad entries are skipped and counted."""
        cache, bad = cache_from_json(obj)
        self.drops["cache-bad-entry"] += bad
        self._cache.update(cache)

    def export_cache(self) -> dict[str, Any]:
        """Last-known endpoints per peer: the netmap's, the cached ones and the direct address in use."""
        cache = dict(self._cache)
        for key, peer in self._peers.items():
            best = peer.flow.send_plan(self._now).udp
            known = (*((best,) if best is not None else ()), *peer.node.endpoints, *cache.get(key, ()))
            cache[key] = tuple(dict.fromkeys(known))
        return cache_to_json(cache)

    def flow(self, peer: str | NodePublicKey) -> PeerFlow:
        """The flow of a peer (by name, tunnel IP or key), for drivers, tests and widgets."""
        return self._find(peer).flow

    # --- peers -------------------------------------------------------------------------------------

    def _find(self, peer: str | NodePublicKey) -> Peer:
        return self._peers[find_node([p.node for p in self._peers.values()], peer).node_key]

    def _ip_of(self, p: Peer) -> str:
        return str(p.node.addresses[0].ip) if p.node.addresses else "-"

    def _endpoints_of(self, node: ControlNode) -> tuple[Endpoint, ...]:
        return tuple(dict.fromkeys((*node.endpoints, *self._cache.get(node.node_key, ()))))

    def _sync_peers(self, nodes: Iterable[ControlNode], now: float) -> None:
        """The netmap's peers: new ones added, changed ones updated, missing ones removed."""
        seen: set[NodePublicKey] = set()
        for node in nodes:
            if node.node_key == self.node_public or node.node_key in seen:
                continue
            seen.add(node.node_key)
            peer = self._peers.get(node.node_key)
            if peer is None:
                self._add_peer(node, now)
            else:
                self._update_peer(peer, node, now)
        for key in [k for k in self._peers if k not in seen]:
            self._remove_peer(key)

    def _add_peer(self, node: ControlNode, now: float) -> None:
        self._wg.upsert_peer(node.node_key, _host_prefixes(node))
        region = node.home_derp or None
        flow = PeerFlow(
            node.disco_key,
            self._rng,
            peer_node=node.node_key,
            node_key=self.node_public,
            derp_region=region,
            timing=self.timing,
            tracer=self.tracer,
            node=self.name,
        )
        p = self._peers[node.node_key] = Peer(node, flow)
        self._by_disco[node.disco_key] = node.node_key
        endpoints = self._endpoints_of(node)
        flow.set_endpoints(endpoints, now)
        if self._eps_at is not None:
            flow.set_my_endpoints(self._eps.endpoints, self._eps_at)
        flow.start(now, have_info=bool(endpoints) or region is not None)
        self.counters["peers-added"] += 1
        self._drain_flow(p, now)

    def _update_peer(self, p: Peer, node: ControlNode, now: float) -> None:
        old = p.node
        if node.disco_key != old.disco_key:
            # the peer restarted: a fresh flow, and a fresh WireGuard peer (Tailscale's wgengine removes a
            # peer whose disco key changed): its old sessions died with it, so our next packet must start a
            # handshake rather than ride a session the peer no longer has until the rekey timers give up
            self._by_disco.pop(old.disco_key, None)
            del self._peers[node.node_key]
            self._wg.remove_peer(node.node_key)
            self.counters["peer-restarted"] += 1
            self._add_peer(node, now)
            return
        p.node = node
        if node.addresses != old.addresses:
            self._wg.upsert_peer(node.node_key, _host_prefixes(node))
        if node.endpoints != old.endpoints or node.home_derp != old.home_derp:
            p.flow.info_received(self._endpoints_of(node), node.home_derp or None, now)

    def _remove_peer(self, key: NodePublicKey) -> None:
        p = self._peers.pop(key)
        self._by_disco.pop(p.node.disco_key, None)
        self._wg.remove_peer(key)
        self.counters["peers-removed"] += 1

    # --- what the flows produce --------------------------------------------------------------------

    def _drain_flow(self, p: Peer, now: float) -> bool:
        """Seal and route the flow's disco messages, act on its events; True if anything happened."""
        busy = False
        if p.flow.state is State.StartDERP and self._derp_up(p):
            p.flow.derp_ready(now)
        for out in p.flow.messages_to_send():
            busy = True
            data = seal_message(out.message, self.config.disco_key, p.node.disco_key, self._rng(24))
            region = region_of(out.to)
            if region is not None:
                self._derp_out.append((region, p.key, data))
            else:
                self._udp_out.append((data, out.to))
            self.counters["disco-sent"] += 1
        while (event := p.flow.next_event()) is not None:
            if isinstance(event, EndpointsRefreshWanted):
                busy = True
                self._eps.restun(now, "a peer wants fresh endpoints")
            elif isinstance(event, PongReceived) and event.purpose is Purpose.CLI:
                region = region_of(event.src)
                via = via_text(region, event.src)
                self._events.append(PingResult(p.node.name, self._ip_of(p), via, event.latency, region is None))
            elif isinstance(event, PingTimedOut) and event.purpose is Purpose.CLI:
                self._events.append(
                    PingUnanswered(p.node.name, self._ip_of(p), via_text(region_of(event.to), event.to))
                )
        shown = (p.flow.state.value, p.flow.path_kind(now))
        if shown != p.shown:
            p.shown = shown
            self._events.append(PeerStateChanged(p.node.name, *shown))
        return busy

    def _derp_up(self, p: Peer) -> bool:
        region = p.region or self.home_region
        return region is not None and region in self.derp_connected

    def _drop(self, reason: str, now: float, src: Endpoint, data: bytes, peer: NodePublicKey | None = None) -> None:
        self.drops[reason] += 1
        if self.tracer is not None:
            self.tracer(TraceRecord(now, self.name, peer, "dropped", f"{len(data)} bytes", reason, data, src))


def _host_prefixes(node: ControlNode) -> list[str]:
    return [f"{a.ip}/{a.max_prefixlen}" for a in node.addresses]


__all__ = ["NodeConfig", "NodePeers", "Peer"]
