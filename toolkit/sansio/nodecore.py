"""The whole node, sans-IO: one socket's demux, disco, WireGuard, DERP, STUN, the netmap and one PeerFlow per peer.

:class:`NodeCore` is what ``natkit node`` and the sim's nodes run (issue 6; design.md §2-§3). It owns no
socket, clock or random source: drivers feed it (``receive_udp``, ``receive_derp``, ``send_ip_packet``,
``handle_timer`` ...) and pull what it produces (``udp_to_send``, ``derp_to_send``, ``ip_packets_received``,
``get_timer``, ``next_event``). Behaviour follows magicsock (protocols.md §4):

* One UDP socket, demultiplexed by content (§4.11, :func:`toolkit.codec.demux.classify`): STUN answers go
  to endpoint discovery (:mod:`.nodeendpoints`), disco packets are opened with our disco key and handed to
  the sender's flow (found by its disco key), everything else to WireGuard. DERP packet bodies go through
  the same demux; a disco message over DERP has the source ``127.3.3.40:<region>``.
* WireGuard: one device peer per netmap peer at a placeholder endpoint (:mod:`.nodewg`); each datagram
  WireGuard sends to a placeholder goes where the peer's flow says (``note_send``: the trusted UDP address
  and/or DERP to the peer's home region, protocols.md §4.3).
* Disco messages a flow wants sent are sealed (protocols.md §1.1) and go over DERP for a magic
  destination, else over UDP. A flow that wants fresh endpoints for a CallMeMaybe gets a re-STUN.
* Bad input (garbage datagrams, boxes that do not open, unknown disco senders, WireGuard from an unknown
  DERP key) is dropped, counted in :attr:`NodeCore.drops` and traced; nothing raises on network input.

The node's state, its peer table and what the flows produce are :mod:`.nodepeers` (the base class
:class:`~toolkit.sansio.nodepeers.NodePeers`, with the decisions about peers and the endpoint cache).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from toolkit.codec.demux import Kind, classify
from toolkit.codec.derpmap import DERPMap
from toolkit.crypto.disco import open_message
from toolkit.errors import CryptoError, DecodeError
from toolkit.sansio.control_netmap import NetMap
from toolkit.sansio.derphome import derp_magic_endpoint, region_of
from toolkit.sansio.nodepeers import NodeConfig, NodePeers
from toolkit.sansio.nodestatus import (
    DerpRegionsWanted,
    EndpointsChanged,
    NodeEvent,
    NodeStatus,
    PingUnanswered,
    peer_status,
)
from toolkit.sansio.nodewg import is_placeholder
from toolkit.sansio.wgevents import SessionKeyRecord
from toolkit.types import Endpoint, NodePublicKey


class NodeCore(NodePeers):
    """The node; see the module docstring. Inputs take ``now`` (monotonic seconds); outputs are pulled."""

    # --- configuration inputs ----------------------------------------------------------------------

    def set_derp_map(self, derp_map: DERPMap, now: float) -> None:
        """The DERP map: its STUN endpoints become the STUN servers (a new set starts a STUN round)."""
        self.derp_map = derp_map
        servers = [ep for r in derp_map.sorted_regions() for n in r.nodes for ep in n.stun_endpoints()]
        self._eps.set_servers(servers, now)
        self._pump(now)

    def set_home_region(self, region: int, now: float) -> None:
        self.home_region = region or None
        self._pump(now)

    def set_local_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        self._eps.set_local(endpoints, now)
        self._pump(now)

    def set_netmap(self, netmap: NetMap, now: float) -> None:
        """Own entry and peers: new peers get a WireGuard peer and a flow, changed ones are updated,
        missing ones are removed (WireGuard peer and flow dropped)."""
        self.self_node = netmap.self_node
        if netmap.derp_map is not None and netmap.derp_map != self.derp_map:
            self.set_derp_map(netmap.derp_map, now)
        self._sync_peers(netmap.peers, now)
        self._pump(now)

    def derp_state(self, region: int, connected: bool, now: float) -> None:
        """The driver's DERP connection to ``region`` came up or went down."""
        if connected:
            self.derp_connected.add(region)
        else:
            self.derp_connected.discard(region)
        self._pump(now)

    # --- network inputs ----------------------------------------------------------------------------

    def receive_udp(self, data: bytes, src: Endpoint, now: float) -> None:
        """A datagram on the node's socket: STUN answer, disco, or WireGuard (protocols.md §4.11)."""
        data = bytes(data)
        kind = classify(data)
        if kind is Kind.STUN:
            if not self._eps.receive_stun(data, src, now):
                self._drop("stun-unexpected", now, src, data)
        elif kind is Kind.DISCO:
            self._receive_disco(data, src, None, now)
        elif kind is Kind.WIREGUARD:
            key = self._wg.learnt.get(src)
            if key is None:
                self.counters["wg-unknown-source"] += 1
            self.counters["wg-received-udp"] += 1
            self._wg.receive(data, src, key, now)
        else:
            self._drop("unknown-datagram" if kind is Kind.UNKNOWN else f"unsupported-{kind.value}", now, src, data)
        self._pump(now)

    def receive_derp(self, region: int, src: NodePublicKey, data: bytes, now: float) -> None:
        """A packet relayed by DERP region ``region`` from node ``src``: disco or WireGuard."""
        data = bytes(data)
        magic = derp_magic_endpoint(region)
        kind = classify(data)
        if kind is Kind.DISCO:
            self._receive_disco(data, magic, src, now)
        elif kind is Kind.WIREGUARD and src in self._peers:
            self.counters["wg-received-derp"] += 1
            self._wg.receive(data, magic, src, now)
        elif kind is Kind.WIREGUARD:
            self._drop("derp-unknown-peer", now, magic, data, src)
        else:
            self._drop(f"derp-{kind.value}", now, magic, data, src)
        self._pump(now)

    def send_ip_packet(self, packet: bytes, now: float) -> None:
        """An IP packet from the TUN / virtual interface: WireGuard routes it to a peer by destination."""
        self._wg.send_packet(packet, now)
        self._pump(now)

    def ping(self, peer: str | NodePublicKey, now: float) -> None:
        """``natkit ping``: disco pings where packets would go; answers come as :class:`PingResult` events.
        Raises :class:`UsageError` for a name, tunnel IP or key that is no peer."""
        p = self._find(peer)
        if not p.flow.cli_ping(now):
            self._events.append(PingUnanswered(p.node.name, self._ip_of(p), "no path"))
        self._pump(now)

    def handle_timer(self, now: float) -> None:
        self._eps.handle_timer(now)
        self._wg.handle_timer(now)
        for p in list(self._peers.values()):
            p.flow.handle_timer(now)
        self._pump(now)

    # --- outputs -----------------------------------------------------------------------------------

    def udp_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._udp_out = self._udp_out, []
        return out

    def derp_to_send(self) -> list[tuple[int, NodePublicKey, bytes]]:
        """``(region, destination node key, payload)`` for the DERP client of that region."""
        out, self._derp_out = self._derp_out, []
        return out

    def ip_packets_received(self) -> list[bytes]:
        out, self._ip_out = self._ip_out, []
        return out

    def get_timer(self) -> float | None:
        due = [self._wg.device.get_timer(), self._eps.get_timer(), *(p.flow.get_timer() for p in self._peers.values())]
        return min((t for t in due if t is not None), default=None)

    def next_event(self) -> NodeEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return self._eps.endpoints

    def session_keys(self) -> list[SessionKeyRecord]:
        """Every live WireGuard session of this node, both directions (for a lab's keyring: the sniffer and
        the packet inspector decrypt transport data with them; ``natkit wg --keys-out`` exports the same)."""
        return self._wg.device.session_keys()

    def status(self, now: float) -> NodeStatus:
        wg = self._wg.status()
        peers = []
        for key, p in self._peers.items():
            f = p.flow
            path = f.path_kind(now)
            udp = f.send_plan(now).udp if path != "derp" else None
            peers.append(peer_status(p.node, f.state, path, udp, f.latency, f.mtu, wg.get(key)))
        own = self.self_node
        return NodeStatus(
            at=now,
            name=self.name,
            node_key=self.node_public,
            tunnel_ips=tuple(str(a.ip) for a in own.addresses) if own is not None else (),
            endpoints=self._eps.endpoints,
            home_region=self.home_region,
            derp_connected=tuple(sorted(self.derp_connected)),
            peers=tuple(peers),
            counters=dict(self.counters),
            drops=dict(self.drops + self._wg.device.counters),
        )

    # --- disco -------------------------------------------------------------------------------------

    def _receive_disco(self, data: bytes, src: Endpoint, derp_src: NodePublicKey | None, now: float) -> None:
        try:
            sender, message = open_message(data, self.config.disco_key)
        except DecodeError:
            return self._drop("disco-undecodable", now, src, data, derp_src)
        except CryptoError:
            return self._drop("disco-open-failed", now, src, data, derp_src)
        key = self._by_disco.get(sender)
        if key is None:
            return self._drop("disco-unknown-sender", now, src, data, derp_src)
        if derp_src is not None and derp_src != key:
            return self._drop("disco-derp-key-mismatch", now, src, data, derp_src)
        if derp_src is None:
            self._wg.learn(src, key)
        self.counters["disco-received"] += 1
        self._peers[key].flow.receive_message(message, src, now)

    # --- the pump ----------------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        """Move everything the sub-cores produced to where it goes, until nothing moves."""
        self._now = now
        for _ in range(16):
            busy = False
            for data, ep in self._wg.datagrams():
                busy = True
                self._route_wireguard(data, ep, now)
            self._ip_out += self._wg.device.packets_received()
            for p in list(self._peers.values()):
                busy |= self._drain_flow(p, now)
            self._udp_out += self._eps.datagrams_to_send()
            if self._eps.take_refresh():
                busy = True
                self._endpoints_confirmed(now)
            self._want_regions()
            if not busy:
                return

    def _endpoints_confirmed(self, now: float) -> None:
        self._eps_at = now
        if self._eps.version != self._eps_version:
            self._eps_version = self._eps.version
            self._events.append(EndpointsChanged(self._eps.endpoints))
        for p in self._peers.values():
            p.flow.set_my_endpoints(self._eps.endpoints, now)

    def _want_regions(self) -> None:
        wanted = {p.region for p in self._peers.values()} | {self.home_region}
        regions = tuple(sorted(r for r in wanted if r is not None))
        if regions != self._regions:
            self._regions = regions
            self._events.append(DerpRegionsWanted(regions))

    def _route_wireguard(self, data: bytes, to: Endpoint, now: float) -> None:
        """A WireGuard datagram for a placeholder: UDP and/or DERP as the peer's flow says (§4.3)."""
        records = self._wg.sent_records(data)
        key = self._wg.peer_at(to)
        p = self._peers.get(key) if key is not None else None
        if p is None:
            return self._drop("wg-no-peer", now, to, data)
        dests: list[Endpoint] = []
        if not is_placeholder(to):  # an answer to a source WireGuard learnt before disco did
            dests.append(to)
        else:
            plan = p.flow.note_send(now)
            dests += [ep for ep in (plan.udp, plan.derp) if ep is not None]
        if not dests:
            return self._drop("wg-no-path", now, to, data, p.key)
        for ep in dests:
            region = region_of(ep)
            if region is not None:
                self._derp_out.append((region, p.key, data))
                self.counters["wg-sent-derp"] += 1
            else:
                self._udp_out.append((data, ep))
                self._wg.learn(ep, p.key)
                self.counters["wg-sent-udp"] += 1
            for rec in records:
                self._wg.emit(replace(rec, endpoint=ep))


__all__ = ["NodeConfig", "NodeCore"]
