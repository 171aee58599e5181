"""An in-memory NAT and RFC 5780 STUN server that drive :class:`NatBehaviorDiscovery` in simulated time.

The NAT follows RFC 4787: mappings keyed by the internal endpoint (endpoint-independent), plus the
destination IP (address-dependent) or the destination IP and port (address-and-port-dependent);
the filter admits an inbound datagram when the mapping has a session with any remote (EIF), with
the remote's IP (ADF) or with the remote exactly (APDF), like Tailscale's natlab ``SNAT44`` and
``Firewall`` (protocols.md §6.1). Traffic either way refreshes a mapping; one idle for longer than
``lifetime`` is gone. The server has two IPs and two ports and honours CHANGE-REQUEST and
RESPONSE-PORT (RFC 5780 §6); a ``hook`` can make it drop, fail or ignore CHANGE-REQUEST per request.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.codec import stun
from toolkit.sansio.natbehavior import NatBehaviorDiscovery
from toolkit.sansio.natreport import Behavior, NatReport
from toolkit.types import Endpoint

CLIENT_IP = "192.168.1.2"
NAT_IP = "203.0.113.1"
IP1, IP2, P1, P2 = "198.51.100.1", "198.51.100.2", 3478, 3479
PRIMARY = Endpoint.parse(f"{IP1}:{P1}")

#: (request, the server address it reached, its source as the server sees it) -> None (answer
#: normally), "drop", "error" (420), "ignore-change" (answer from where it came in) or "ignore-rport"
#: (answer to the request's source, not to RESPONSE-PORT)
Hook = Callable[[stun.Message, Endpoint, Endpoint], str | None]


@dataclass
class _Mapping:
    local: Endpoint
    public: Endpoint
    last: float
    sessions: set[Endpoint] = field(default_factory=set)


@dataclass
class SimNet:
    mapping: Behavior | None = Behavior.ENDPOINT_INDEPENDENT  # None: no NAT, the client is public
    filtering: Behavior | None = Behavior.ADDRESS_AND_PORT_DEPENDENT  # None: no filter at all
    hairpin: bool = False
    lifetime: float = 1e9
    rfc5780: bool = True
    hook: Hook | None = None
    latency: float = 0.005
    _maps: dict[tuple[object, ...], _Mapping] = field(default_factory=dict)
    _ports: itertools.count[int] = field(default_factory=lambda: itertools.count(40000))

    # --- the NAT ----------------------------------------------------------------------------------

    def _key(self, local: Endpoint, dst: Endpoint) -> tuple[object, ...]:
        if self.mapping is Behavior.ADDRESS_DEPENDENT:
            return (local, dst.ip)
        if self.mapping is Behavior.ADDRESS_AND_PORT_DEPENDENT:
            return (local, dst)
        return (local,)

    def outbound(self, local: Endpoint, dst: Endpoint, now: float) -> Endpoint:
        key = self._key(local, dst)
        m = self._maps.get(key)
        if m is not None and now - m.last > self.lifetime:
            del self._maps[key]
            m = None
        if m is None:
            public = local if self.mapping is None else Endpoint.parse(f"{NAT_IP}:{next(self._ports)}")
            m = self._maps[key] = _Mapping(local, public, now)
        m.last = now
        m.sessions.add(dst)
        return m.public

    def inbound(self, public: Endpoint, src: Endpoint, now: float, *, hairpin: bool = False) -> Endpoint | None:
        for key, m in list(self._maps.items()):
            if m.public != public:
                continue
            if now - m.last > self.lifetime:
                del self._maps[key]
                return None
            f = self.filtering
            allowed = (
                hairpin
                or f is None
                or f is Behavior.ENDPOINT_INDEPENDENT
                or (f is Behavior.ADDRESS_DEPENDENT and any(s.ip == src.ip for s in m.sessions))
                or src in m.sessions
            )
            if not allowed:
                return None
            m.last = now
            return m.local
        return None

    # --- the path: client -> NAT -> server -> NAT -> client ------------------------------------------

    def send(
        self, local: Endpoint, data: bytes, dst: Endpoint, now: float
    ) -> list[tuple[float, Endpoint, bytes, Endpoint]]:
        """Deliveries caused by ``local`` sending ``data`` to ``dst``: (time, to local, data, from)."""
        src = self.outbound(local, dst, now)
        if str(dst.ip) == NAT_IP or (self.mapping is None and str(dst.ip) == CLIENT_IP):  # hairpinning
            if not self.hairpin and self.mapping is not None:
                return []
            to = self.inbound(dst, src, now, hairpin=True) if self.mapping is not None else dst
            return [] if to is None else [(now + self.latency, to, data, src)]
        out = []
        for at, origin, to, answer in self.server(data, dst, src, now + self.latency):
            local_to = self.inbound(to, origin, at)
            if local_to is not None:
                out.append((at, local_to, answer, origin))
        return out

    def server(
        self, data: bytes, dst: Endpoint, src: Endpoint, now: float
    ) -> list[tuple[float, Endpoint, Endpoint, bytes]]:
        if str(dst.ip) not in (IP1, IP2) or dst.port not in (P1, P2):
            return []
        msg = stun.decode(data)
        if msg.msg_class is not stun.Class.REQUEST or msg.method != stun.Method.BINDING:
            return []
        what = self.hook(msg, dst, src) if self.hook is not None else None
        change, rport = msg.get(stun.ChangeRequest), msg.get(stun.ResponsePort)
        if what == "drop":
            return []
        if what == "error" or (not self.rfc5780 and (change is not None or rport is not None)):
            err = stun.error_response(msg.txid, stun.Method.BINDING, 420, "Unknown Attribute", unknown=(0x0003,))
            return [(now + self.latency, dst, src, err)]
        origin = dst
        if change is not None and what != "ignore-change":
            ip = (IP2 if str(dst.ip) == IP1 else IP1) if change.change_ip else str(dst.ip)
            port = (P2 if dst.port == P1 else P1) if change.change_port else dst.port
            origin = Endpoint.parse(f"{ip}:{port}")
        to = src if rport is None or what == "ignore-rport" else Endpoint(src.ip, rport.port)
        other = Endpoint.parse(f"{IP2 if str(dst.ip) == IP1 else IP1}:{P2 if dst.port == P1 else P1}")
        answer = stun.binding_response(
            msg.txid, src, response_origin=origin, other_address=other if self.rfc5780 else None, software="natsim"
        )
        return [(now + self.latency, origin, to, answer)]


def discover(net: SimNet, *, max_steps: int = 100_000, **kw: object) -> tuple[NatReport, NatBehaviorDiscovery]:
    """Run a whole discovery over ``net`` in simulated time; every socket binds CLIENT_IP:(50000+)."""
    rng = random.Random(7)
    machine = NatBehaviorDiscovery(PRIMARY, rng=rng.randbytes, **kw)  # type: ignore[arg-type]
    ports = itertools.count(50000)
    names: dict[Endpoint, str] = {}
    by_name: dict[str, Endpoint] = {}
    events: list[tuple[float, int, str, bytes, Endpoint]] = []
    seq = itertools.count()
    now = 0.0
    machine.start(now)
    for _ in range(max_steps):
        for out in machine.datagrams_to_send():
            if out.socket not in by_name:
                local = Endpoint.parse(f"{CLIENT_IP}:{next(ports)}")
                by_name[out.socket], names[local] = local, out.socket
                machine.socket_bound(out.socket, local)
            for at, to, data, src in net.send(by_name[out.socket], out.data, out.dest, now):
                if to in names:
                    heapq.heappush(events, (at, next(seq), names[to], data, src))
        if machine.done:
            assert machine.report is not None
            return machine.report, machine
        timer = machine.get_timer()
        if events and (timer is None or events[0][0] <= timer):
            now, _, name, data, src = heapq.heappop(events)
            machine.receive_datagram(name, data, src, now)
        elif timer is not None:
            now = timer
            machine.handle_timer(now)
        else:
            raise AssertionError(f"discovery stuck in {machine.state} with no timer and nothing in flight")
    raise AssertionError("discovery did not finish")
