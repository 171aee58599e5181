"""Two PeerFlows exchanging sealed disco packets over an in-memory internet (test harness, no sockets).

Hosts sit on the internet (``nat=None``) or behind a :class:`Nat`: ``hard=False`` is a home router
(endpoint-independent, port-preserving mapping), ``hard=True`` maps every destination to its own port
(a symmetric NAT); both filter address-and-port-dependently (APDF) at arrival time, and ``hairpin`` lets
two hosts behind one NAT reach each other's public mapping. Hosts behind one NAT share a LAN. DERP always
delivers (``derp_delay``), UDP takes ``udp_delay`` one way (``lan_delay`` on a LAN), a datagram larger
than ``wan_mtu``/``lan_mtu`` (IPv4 + UDP headers counted) is dropped, ``udp_cut`` drops all WAN UDP,
``drop(data)`` drops what it says. Each host advertises its STUN-seen endpoint (its mapping towards a
STUN server) and its LAN address; ``EndpointsRefreshWanted`` is answered at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.crypto.disco import open_message, seal_message
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.peerflow import PeerFlow
from toolkit.sansio.peerflow_types import FlowMoved
from toolkit.sansio.peergraph import TRANSITIONS, State, transition_of
from toolkit.sansio.peerpath_types import EndpointsRefreshWanted
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Endpoint

DERP = derp_magic_endpoint(1)
STUN_SERVER = Endpoint.parse("192.0.2.10:3478")
EDGES = {(t.src, t.label, t.dst) for t in TRANSITIONS}


@dataclass
class Nat:
    public_ip: str
    hard: bool = False
    hairpin: bool = False
    mappings: dict[tuple[Endpoint, Endpoint | None], Endpoint] = field(default_factory=dict)
    sessions: set[tuple[Endpoint, Endpoint]] = field(default_factory=set)  # (public, remote)
    inside: dict[Endpoint, Endpoint] = field(default_factory=dict)  # public -> LAN
    next_port: int = 40000

    def out(self, lan: Endpoint, dst: Endpoint) -> Endpoint:
        key = (lan, dst if self.hard else None)
        if key not in self.mappings:
            port = (
                lan.port if not self.hard and Endpoint.parse(f"{self.public_ip}:{lan.port}") not in self.inside else 0
            )
            if port == 0:
                self.next_port += 1
                port = self.next_port
            pub = Endpoint.parse(f"{self.public_ip}:{port}")
            self.mappings[key], self.inside[pub] = pub, lan
        pub = self.mappings[key]
        self.sessions.add((pub, dst))
        return pub


@dataclass
class Host:
    name: str
    lan: Endpoint
    nat: Nat | None = None
    sending: bool = True  # note_send every second (WireGuard traffic)
    have_info: bool = True
    derp_at: float = 0.0
    start_at: float = 0.0
    advertise: bool = True  # False: control gives the peer no endpoints of this host
    priv: DiscoPrivateKey = field(init=False)
    pub: DiscoPublicKey = field(init=False)
    flow: PeerFlow = field(init=False)
    log: TraceLog = field(default_factory=TraceLog)
    events: list[object] = field(default_factory=list)

    def endpoints(self) -> list[Endpoint]:
        if self.nat is None:
            return [self.lan]
        return [self.nat.out(self.lan, STUN_SERVER), self.lan]

    def moves(self) -> list[FlowMoved]:
        return [e for e in self.events if isinstance(e, FlowMoved)]


@dataclass
class FlowNet:
    a: Host
    b: Host
    timing: Timing = DEFAULT
    udp_delay: float = 0.010
    lan_delay: float = 0.001
    derp_delay: float = 0.040
    wan_mtu: int = 1500
    lan_mtu: int = 1500
    udp_cut: bool = False
    drop: Callable[[bytes], bool] | None = None
    now: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    queue: list[tuple[float, int, Callable[[], None]]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        for h in (self.a, self.b):
            h.priv, h.pub = disco_key_pair(f"flow-{h.name}".encode())
        for i, (me, peer) in enumerate(((self.a, self.b), (self.b, self.a))):
            counter = itertools.count((i + 1) << 40)
            me.flow = PeerFlow(
                peer.pub, lambda k, c=counter: next(c).to_bytes(k, "big"),
                node_key=node_key_pair(me.name.encode())[1], peer_node=node_key_pair(peer.name.encode())[1],
                derp_region=1, timing=self.timing, tracer=me.log, node=me.name,
            )  # fmt: skip
            me.flow.set_my_endpoints(me.endpoints(), 0.0)
            self.at(me.start_at, lambda me=me, peer=peer: self._start(me, peer))
            self.at(me.derp_at, lambda me=me: me.flow.derp_ready(self.now))
            if me.sending:
                self.at(me.start_at, lambda me=me: self._tick(me))

    # --- scheduling ---
    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), fn))

    def peer(self, h: Host) -> Host:
        return self.b if h is self.a else self.a

    def _start(self, me: Host, peer: Host) -> None:
        eps = peer.endpoints() if peer.advertise else []
        if me.have_info:
            me.flow.set_endpoints(eps, self.now)
            me.flow.start(self.now, have_info=True)
        else:
            me.flow.start(self.now, have_info=False)
            self.at(self.now + 0.05, lambda: me.flow.info_received(eps, 1, self.now))

    def _tick(self, me: Host) -> None:
        me.flow.note_send(self.now)
        if me.sending:
            self.at(self.now + 1.0, lambda: self._tick(me))

    def run(self, until: float) -> None:
        while True:
            timers = [(h.flow.get_timer(), h) for h in (self.a, self.b)]
            due = min([t for t, _ in timers if t is not None] + [self.queue[0][0] if self.queue else 1e18])
            if due > until:
                self.now = until
                return
            self.now = max(self.now, due)
            if self.queue and self.queue[0][0] <= due:
                heapq.heappop(self.queue)[2]()
            else:
                for t, h in timers:
                    if t is not None and t <= due:
                        h.flow.handle_timer(self.now)
            self._drain()

    # --- the network ---
    def _note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def _drain(self) -> None:
        busy = True
        while busy:
            busy = False
            for h in (self.a, self.b):
                peer = self.peer(h)
                while (e := h.flow.next_event()) is not None:
                    h.events.append(e)
                    if isinstance(e, EndpointsRefreshWanted):
                        h.flow.set_my_endpoints(h.endpoints(), self.now)
                        busy = True
                for o in h.flow.messages_to_send():
                    busy = True
                    data = seal_message(o.message, h.priv, peer.pub)
                    if o.via_derp:
                        self.at(self.now + self.derp_delay, lambda p=peer, d=data: self._deliver(p, DERP, d))
                    else:
                        self._udp(h, o.to, data)

    def _deliver(self, h: Host, src: Endpoint, data: bytes) -> None:
        sender, message = open_message(data, h.priv)
        assert sender == self.peer(h).pub
        h.flow.receive_message(message, src, self.now)

    def _udp(self, frm: Host, to: Endpoint, data: bytes) -> None:
        size = 20 + 8 + len(data)
        if self.drop is not None and self.drop(data):
            return self._note("dropped")
        lan_peer = next((h for h in (self.a, self.b) if h.lan == to and h is not frm), None)
        if lan_peer is not None and frm.nat is not None and frm.nat is lan_peer.nat:
            if size > self.lan_mtu:
                return self._note("too big")
            return self.at(self.now + self.lan_delay, lambda: self._deliver(lan_peer, frm.lan, data))
        src = frm.nat.out(frm.lan, to) if frm.nat is not None else frm.lan
        if self.udp_cut:
            return self._note("cut")
        if size > self.wan_mtu:
            return self._note("too big")
        self.at(self.now + self.udp_delay, lambda: self._arrive(frm, src, to, data))

    def _arrive(self, frm: Host, src: Endpoint, to: Endpoint, data: bytes) -> None:
        if self.udp_cut:
            return self._note("cut")
        for h in (self.a, self.b):
            if h.nat is None and h.lan == to:
                return self._deliver(h, src, data)
            if h.nat is not None and str(to.ip) == h.nat.public_ip and h.nat.inside.get(to) == h.lan:
                if h.nat is frm.nat and not h.nat.hairpin:
                    return self._note("no hairpin")
                if (to, src) not in h.nat.sessions:
                    return self._note("filtered")
                return self._deliver(h, src, data)
        return self._note("unroutable")


def walked_edges_ok(h: Host) -> None:
    """Every step of ``walked`` is a TRANSITIONS edge and matches the trace records and FlowMoved events."""
    records = [transition_of(r) for r in h.log.of_kind("transition")]
    assert [(t.src, t.label, t.dst) for t in records] == [(m.src, m.label, m.dst) for m in h.moves()]
    assert all((t.src, t.label, t.dst) in EDGES for t in records)
    assert [State.Start, *(t.dst for t in records)] == h.flow.walked
