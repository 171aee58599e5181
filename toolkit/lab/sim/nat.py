"""The simulator's NAT engine: a :class:`~toolkit.lab.nat.NatBehavior` made exact (RFC 4787).

One :class:`NatEngine` sits on a router's WAN interface and translates IPv4 UDP and TCP between its
LAN side and its one public address (IPv6 is routed, not translated, as in Tailscale's vnet,
protocols.md §6.2). The model, after Tailscale's natlab ``SNAT44`` + ``Firewall`` (protocols.md
§6.1) but with every RFC 4787 knob:

* **Mapping** (§4.1): a mapping is found by its key: (proto, private endpoint) when
  endpoint-independent, plus the remote IP when address-dependent, plus the remote port when
  address-and-port-dependent. Each mapping owns one public port; no two live mappings share one.
* **Port allocation** (§4.2.1) for a new mapping: ``preserve`` keeps the private port when it is
  free; ``sequential`` takes the next free port after the last one allocated (the first one is
  drawn from the NAT's random stream); ``random`` draws uniformly from 1024..65535. When the
  preferred port is taken, ``preserve`` falls back to a random draw. "Free" means: no live mapping
  holds it, the router has no socket on it, and (broken router, below) it does not collide.
* **Timeout** (§4.3): a mapping lives ``mapping_timeout`` seconds after its last *outbound* packet;
  inbound packets never refresh it (REQ-6 allows either; the brief asks for outbound only). Expired
  mappings disappear lazily (a lookup or an allocation that meets one removes it), exactly on time.
* **Filtering** (§5), per mapping: every outbound packet opens (or refreshes) a session with its
  remote endpoint for ``mapping_timeout`` seconds. An inbound packet to a live mapping gets in when
  filtering is endpoint-independent, when some live session has its IP (address-dependent), or when
  a live session has its IP and port (address-and-port-dependent). Sessions expire on their own:
  a peer not spoken to for a while is filtered even if traffic to others keeps the mapping alive.
* **Hairpinning** (§6): with ``hairpinning``, a LAN packet to the public address of a live mapping
  is translated twice, source first (REQ-9: the receiver sees the sender's *public* endpoint) and
  then destination, and goes back to the LAN. Hairpinned packets are not filtered: the NAT knows
  they come from inside (what Linux's hairpin DNAT rules and most "NAT loopback" routers do, and
  what RFC 5780 §4.5's test presumes). Without it the packet is the router's own (and dropped).
* **WAN input** (design.md §5): an inbound packet no mapping lets in is dropped with ``drop``. With
  ``accept`` (the broken Linux router) it is delivered to the router itself, as Linux's INPUT chain
  does, and conntrack remembers that flow: a *local session* (remote endpoint -> public port) that
  lives :data:`LOCAL_SESSION_TIMEOUT` seconds after its last packet (``nf_conntrack_udp_timeout``).
  What this models is the observable effect Linux shows: when a LAN host later sends to that remote
  from a mapping whose public port collides with the local session (the reply tuple is taken),
  the flow is given a *different* public port (a flow-specific mapping, allocated by the usual
  rule), and the remote's packets to the old port keep going to the router itself. The remote sees
  a source port it did not expect and its answers never reach the host: hole punching fails.
* ``block_udp``: outbound UDP is dropped (TCP still goes through the NAT). ``one_to_one``: the LAN
  host (``host``, else the first LAN address that sends) is the public address: ports are kept,
  nothing is filtered, unsolicited input is forwarded to it (Tailscale's vnet ``one2one``).

IPv6 is routed, not translated, but a NAT router filters it like v4 (as the ``netns`` backend's
nftables rules do): a LAN packet leaving the WAN side opens a session (private endpoint -> remote)
for ``mapping_timeout`` seconds (:meth:`NatEngine.allow_out6`); a WAN packet to a LAN address gets
in by the same filtering rule (:meth:`NatEngine.allow_in6`). ``block_udp`` drops v6 UDP too; with
``wan_input`` ``accept`` (the broken router, and ``one2one``) inbound v6 is not filtered at all.

TCP goes through the same table (keyed by protocol too) with the same timeout: no SYN/FIN/RST
state is tracked yet. That is the seam for the virtual stream transport of issue 6 (DERP over TCP).

The engine only decides; the machine (:mod:`toolkit.lab.sim.net`) moves packets. Counters count
every decision by reason; :meth:`NatEngine.table` lists the live mappings.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from toolkit.lab.nat import Filtering, Mapping, NatBehavior, PortAllocation, WanInput
from toolkit.lab.sim.packet import UDP, Packet
from toolkit.types import Endpoint, IPAddress

PORT_MIN, PORT_MAX = 1024, 65535
LOCAL_SESSION_TIMEOUT = 30.0  # Linux nf_conntrack_udp_timeout: an unreplied UDP flow
PROTO_NAMES = {UDP: "udp", 6: "tcp"}
LOCAL: Literal["local"] = "local"  # inbound verdict: the packet is the router's own

Key = tuple[object, ...]


@dataclass(slots=True, eq=False)
class NatMapping:
    """One translation: ``private`` <-> ``public`` for ``remote`` (None: any remote; port 0: any port of that IP)."""

    proto: int
    private: Endpoint
    public: Endpoint
    remote: Endpoint | None
    key: Key
    created: float
    expires: float
    sessions: dict[Endpoint, float] = field(default_factory=dict)  # remote -> when its session expires

    def alive(self, now: float) -> bool:
        return now < self.expires


@dataclass(frozen=True, slots=True)
class NatEntry:
    """A live mapping as :meth:`NatEngine.table` reports it."""

    proto: str
    private: Endpoint
    public: Endpoint
    remote: Endpoint | None
    expires_in: float
    peers: tuple[Endpoint, ...] = ()


class NatEngine:
    """The translation table and policy of one NAT router (see the module docstring)."""

    def __init__(
        self,
        behavior: NatBehavior,
        public_ip: IPAddress,
        rng: random.Random,
        *,
        port_busy: Callable[[int, int], bool] | None = None,
        host: IPAddress | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self.behavior = behavior
        self.public_ip = public_ip
        self.rng = rng
        self.port_busy = port_busy or (lambda proto, port: False)
        self.one_to_one_host = host
        self.on_event = on_event
        self.counters: Counter[str] = Counter()
        self._maps: dict[Key, NatMapping] = {}
        self._by_port: dict[tuple[int, int], NatMapping] = {}
        self._local: dict[tuple[int, int, Endpoint], float] = {}  # (proto, public port, remote) -> expiry
        self._next_port: int | None = None
        self._collisions = False  # set once a flow got a port of its own (broken router)
        self._v6: dict[tuple[int, Endpoint], dict[Endpoint, float]] = {}  # (proto, private) -> remote -> expiry
        self._retired: set[tuple[int, int]] = set()  # (proto, public port) a renumbering flush took out of use

    # --- outbound ---------------------------------------------------------------------------------

    def outbound(self, pkt: Packet, now: float) -> Endpoint | None:
        """The public source for a LAN packet leaving the WAN side, or None to drop it (counted)."""
        b = self.behavior
        if b.block_udp and pkt.proto == UDP:
            self.counters["udp-blocked"] += 1
            return None
        if b.one_to_one:
            if self.one_to_one_host is None:
                self.one_to_one_host = pkt.src.ip
            if pkt.src.ip != self.one_to_one_host:
                self.counters["not-the-one-to-one-host"] += 1
                return None
            self.counters["translated-out"] += 1
            return Endpoint(self.public_ip, pkt.src.port)
        m = self._mapping_for(pkt.proto, pkt.src, pkt.dst, now)
        timeout = b.mapping_timeout
        m.expires = now + timeout
        m.sessions[pkt.dst] = now + timeout
        self.counters["translated-out"] += 1
        return m.public

    def _key(self, proto: int, private: Endpoint, remote: Endpoint) -> tuple[Key, Endpoint | None]:
        mapping = self.behavior.mapping
        if mapping is Mapping.ENDPOINT_INDEPENDENT:
            return (proto, private), None
        if mapping is Mapping.ADDRESS_DEPENDENT:
            return (proto, private, remote.ip), Endpoint(remote.ip, 0)
        return (proto, private, remote), remote

    def _mapping_for(self, proto: int, private: Endpoint, remote: Endpoint, now: float) -> NatMapping:
        key, for_remote = self._key(proto, private, remote)
        m = self._maps.get(key)
        if m is not None and not m.alive(now):
            self._remove(m, "expired")
            m = None
        if self._collisions:
            # a flow that once collided keeps its own mapping while it lives (its conntrack entry)
            own = self._maps.get((*key, "collision", remote))
            if own is not None and own.alive(now):
                return own
        if self._local and m is not None and self._collides(proto, m.public.port, remote, now):
            # design.md §5: the reply tuple (remote -> public:port) belongs to the router's own
            # conntrack entry, so this flow gets a port of its own
            key, for_remote = (*key, "collision", remote), remote
            m = self._maps.get(key)
            if m is not None:
                self._remove(m, "expired")  # not alive, or it would have been returned above
                m = None
            self.counters["port-collision"] += 1
            self._collisions = True
        if m is None:
            port = self._allocate(proto, private.port, remote, now)
            m = NatMapping(proto, private, Endpoint(self.public_ip, port), for_remote, key, now, now)
            self._maps[key] = m
            self._by_port[(proto, port)] = m
            self.counters["mapping-created"] += 1
            if self.on_event is not None:
                self.on_event("mapping-created", f"{_proto(proto)} {private} -> {m.public} for {for_remote or 'any'}")
        return m

    # --- port allocation (RFC 4787 §4.2.1) ---------------------------------------------------------

    def _free(self, proto: int, port: int, remote: Endpoint, now: float) -> bool:
        holder = self._by_port.get((proto, port))
        if holder is not None:
            if holder.alive(now):
                return False
            self._remove(holder, "expired")
        if self.port_busy(proto, port) or (proto, port) in self._retired:
            return False
        return not (self._local and self._collides(proto, port, remote, now))

    def _allocate(self, proto: int, private_port: int, remote: Endpoint, now: float) -> int:
        how = self.behavior.allocation
        if how is PortAllocation.PRESERVE and self._free(proto, private_port, remote, now):
            return private_port
        span = PORT_MAX - PORT_MIN + 1
        if how is PortAllocation.SEQUENTIAL:
            if self._next_port is None:
                self._next_port = self.rng.randint(PORT_MIN, PORT_MAX)
            for i in range(span):
                port = PORT_MIN + (self._next_port - PORT_MIN + i) % span
                if self._free(proto, port, remote, now):
                    self._next_port = PORT_MIN + (port - PORT_MIN + 1) % span
                    return port
        else:
            for _ in range(64):
                port = self.rng.randint(PORT_MIN, PORT_MAX)
                if self._free(proto, port, remote, now):
                    return port
            start = self.rng.randint(PORT_MIN, PORT_MAX)
            for i in range(span):
                port = PORT_MIN + (start - PORT_MIN + i) % span
                if self._free(proto, port, remote, now):
                    return port
        raise RuntimeError(f"NAT {self.behavior.name}: no free {_proto(proto)} port left on {self.public_ip}")

    # --- inbound ----------------------------------------------------------------------------------

    def inbound(self, pkt: Packet, now: float) -> Endpoint | Literal["local"] | None:
        """What to do with a WAN packet to the public address: the LAN endpoint to forward it to,
        :data:`LOCAL` (the router's own: its sockets, or the broken router's input), or None (drop)."""
        b = self.behavior
        if b.one_to_one:
            if self.port_busy(pkt.proto, pkt.dst.port) or self.one_to_one_host is None:
                return LOCAL
            self.counters["translated-in"] += 1
            return Endpoint(self.one_to_one_host, pkt.dst.port)
        m = self._by_port.get((pkt.proto, pkt.dst.port))
        if m is not None and not m.alive(now):
            self._remove(m, "expired")
            m = None
        if m is not None and self._admits(m, pkt.src, now):
            self.counters["translated-in"] += 1
            return m.private
        if self._local:
            lkey = (pkt.proto, pkt.dst.port, pkt.src)
            if self._local.get(lkey, 0.0) > now:
                self._local[lkey] = now + LOCAL_SESSION_TIMEOUT  # conntrack refreshes both ways
                self.counters["wan-input-local"] += 1
                return LOCAL
        if self.port_busy(pkt.proto, pkt.dst.port):
            return LOCAL
        if b.wan_input is WanInput.ACCEPT:
            self._local[(pkt.proto, pkt.dst.port, pkt.src)] = now + LOCAL_SESSION_TIMEOUT
            self.counters["wan-input-local"] += 1
            if self.on_event is not None:
                self.on_event("wan-input", f"{_proto(pkt.proto)} {pkt.src} -> {pkt.dst} accepted by the router itself")
            return LOCAL
        self.counters["filtered" if m is not None else "no-mapping"] += 1
        return None

    def _admits(self, m: NatMapping, src: Endpoint, now: float) -> bool:
        filtering = self.behavior.filtering
        if filtering is Filtering.ENDPOINT_INDEPENDENT:
            return True
        if filtering is Filtering.ADDRESS_AND_PORT_DEPENDENT:
            return m.sessions.get(src, 0.0) > now
        return any(r.ip == src.ip and until > now for r, until in m.sessions.items())

    def _collides(self, proto: int, port: int, remote: Endpoint, now: float) -> bool:
        return self._local.get((proto, port, remote), 0.0) > now

    # --- IPv6: routed, filtered like v4 ---------------------------------------------------------------

    def allow_out6(self, pkt: Packet, now: float) -> bool:
        """A LAN packet leaving the WAN side over IPv6: True to forward it (and open its session)."""
        if self.behavior.block_udp and pkt.proto == UDP:
            self.counters["udp-blocked"] += 1
            return False
        self._v6.setdefault((pkt.proto, pkt.src), {})[pkt.dst] = now + self.behavior.mapping_timeout
        return True

    def allow_in6(self, pkt: Packet, now: float) -> bool:
        """A WAN packet to a LAN address over IPv6: True if the filter lets it in."""
        b = self.behavior
        if b.wan_input is WanInput.ACCEPT:
            return True
        sessions = self._v6.get((pkt.proto, pkt.dst))
        if sessions:
            if b.filtering is Filtering.ENDPOINT_INDEPENDENT:
                ok = any(until > now for until in sessions.values())
            elif b.filtering is Filtering.ADDRESS_DEPENDENT:
                ok = any(r.ip == pkt.src.ip and until > now for r, until in sessions.items())
            else:
                ok = sessions.get(pkt.src, 0.0) > now
            if ok:
                return True
        self.counters["filtered6"] += 1
        return False

    # --- hairpinning (RFC 4787 §6) ----------------------------------------------------------------

    def hairpin(self, pkt: Packet, now: float) -> Packet | None:
        """A LAN packet to the public address: translated back into the LAN, or None (not hairpinned)."""
        b = self.behavior
        if not b.hairpinning or (b.block_udp and pkt.proto == UDP):
            return None
        if b.one_to_one:
            target: Endpoint | None = (
                None if self.one_to_one_host is None else Endpoint(self.one_to_one_host, pkt.dst.port)
            )
        else:
            m = self._by_port.get((pkt.proto, pkt.dst.port))
            target = m.private if m is not None and m.alive(now) else None
        if target is None:
            return None
        src = self.outbound(pkt, now)
        if src is None:
            return None
        self.counters["hairpinned"] += 1
        return pkt.rewrite(src=src, dst=target)

    # --- the table --------------------------------------------------------------------------------

    def _remove(self, m: NatMapping, why: str) -> None:
        if self._maps.get(m.key) is m:
            del self._maps[m.key]
        if self._by_port.get((m.proto, m.public.port)) is m:
            del self._by_port[(m.proto, m.public.port)]
        self.counters[f"mapping-{why}"] += 1
        if self.on_event is not None:
            when = f" at t={m.expires:.3f}" if why == "expired" else ""
            self.on_event(f"mapping-{why}", f"{_proto(m.proto)} {m.private} -> {m.public} {why}{when}")

    def flush(self, *, renumber: bool = False) -> int:
        """Forget every mapping (``conntrack -F``, a router reboot); returns how many went.

        With ``renumber`` the public ports they held are not handed out again, so every flow gets a new
        public port: what a NAT that does not preserve ports across a reboot does to a live flow.
        """
        gone = list(self._maps.values())
        for m in gone:
            if renumber:
                self._retired.add((m.proto, m.public.port))
            self._remove(m, "flushed")
        self._local.clear()
        self._v6.clear()
        return len(gone)

    def expire(self, now: float) -> None:
        """Remove every mapping and local session that has timed out."""
        for m in [m for m in self._maps.values() if not m.alive(now)]:
            self._remove(m, "expired")
        for m in self._maps.values():
            for remote in [r for r, until in m.sessions.items() if until <= now]:
                del m.sessions[remote]
        for lkey in [k for k, until in self._local.items() if until <= now]:
            del self._local[lkey]
        for v6key, sessions in list(self._v6.items()):
            if all(until <= now for until in sessions.values()):
                del self._v6[v6key]

    def mappings(self, now: float) -> list[NatMapping]:
        self.expire(now)
        return list(self._maps.values())

    def table(self, now: float) -> list[NatEntry]:
        """The live mappings, oldest first, with their remaining lifetime and live peers."""
        out = []
        if self.behavior.one_to_one and self.one_to_one_host is not None:  # one static entry: every port, for ever
            inf = float("inf")
            out.append(NatEntry("any", Endpoint(self.one_to_one_host, 0), Endpoint(self.public_ip, 0), None, inf))
        for m in self.mappings(now):
            peers = tuple(r for r, until in m.sessions.items() if until > now)
            out.append(NatEntry(_proto(m.proto), m.private, m.public, m.remote, m.expires - now, peers))
        return out

    def local_sessions(self, now: float) -> list[tuple[str, int, Endpoint, float]]:
        """The broken router's own flows: (proto, public port, remote, expires_in)."""
        self.expire(now)
        return [(_proto(p), port, r, until - now) for (p, port, r), until in self._local.items()]


def _proto(proto: int) -> str:
    return PROTO_NAMES.get(proto, str(proto))


__all__ = ["LOCAL", "LOCAL_SESSION_TIMEOUT", "PORT_MAX", "PORT_MIN", "NatEngine", "NatEntry", "NatMapping"]
