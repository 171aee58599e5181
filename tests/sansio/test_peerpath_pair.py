"""Two PeerPath cores exchanging real disco packets in memory (protocols.md §4.4-§4.9, seed flowchart
"DERP relay -> probing -> direct"): each node sits behind its own NAT (port preserving, address-and-port-
dependent filtering, like a home router), the peer's LAN address is unreachable, DERP always delivers,
and the direct path loses packets by script (the first N) and at random (seeded). Every message is sealed
with the sender's disco key and opened by the receiver, so the cores' output is real wire traffic.

The first ping into the peer's NAT is filtered; the CallMeMaybe over DERP makes the peer ping back, which
opens its NAT (the simultaneous-open hole punch); both sides end on the direct path."""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from toolkit.codec.disco import CallMeMaybe, Ping
from toolkit.crypto.disco import open_message, seal_message
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.peerpath import PeerPath
from toolkit.sansio.peerpath_types import SendPlan, State
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Endpoint

UDP_DELAY, DERP_DELAY = 0.010, 0.040  # one way
DERP = derp_magic_endpoint(1)


@dataclass
class Host:
    name: str
    priv: DiscoPrivateKey
    pub: DiscoPublicKey
    lan: Endpoint
    public: Endpoint
    starts_sending: float
    core: PeerPath | None = None
    sessions: set[Endpoint] = field(default_factory=set)  # remotes this NAT has sent to (APDF filter)
    direct_at: float | None = None


@dataclass
class Net:
    rng: random.Random
    loss: float
    drop_first: int
    udp_blocked: bool = False
    until_healed: float = 1e9  # no random loss from then on
    udp_sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    queue: list[tuple[float, int, Host, Endpoint, bytes]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def note(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def udp(self, frm: Host, to: Endpoint, data: bytes, hosts: list[Host], now: float) -> None:
        frm.sessions.add(to)  # the sender's NAT opens for replies from `to`
        self.udp_sent += 1
        if self.udp_blocked or self.udp_sent <= self.drop_first:
            return self.note("scripted loss")
        if now < self.until_healed and self.rng.random() < self.loss:
            return self.note("random loss")
        dst = next((h for h in hosts if h.public == to), None)
        if dst is None:
            return self.note("unroutable")  # the peer's LAN address
        if frm.public not in dst.sessions:
            return self.note("filtered")  # the receiver's NAT has no session with the sender
        heapq.heappush(self.queue, (now + UDP_DELAY, next(self.seq), dst, frm.public, data))

    def derp(self, to: Host, data: bytes, now: float) -> None:
        heapq.heappush(self.queue, (now + DERP_DELAY, next(self.seq), to, DERP, data))


def counter_rng(start: int) -> Callable[[int], bytes]:
    """Distinct, reproducible TxIDs."""
    counter = itertools.count(start)
    return lambda k: next(counter).to_bytes(k, "big")


def hosts() -> tuple[Host, Host]:
    a_priv, a_pub = disco_key_pair(b"pair-a")
    b_priv, b_pub = disco_key_pair(b"pair-b")
    a = Host("a", a_priv, a_pub, Endpoint.parse("192.168.1.2:41641"), Endpoint.parse("198.51.100.1:41641"), 0.0)
    b = Host("b", b_priv, b_pub, Endpoint.parse("10.0.0.2:41641"), Endpoint.parse("203.0.113.1:41641"), 2.0)
    for me, peer, seed in ((a, b, 1), (b, a, 2)):
        me.core = PeerPath(
            peer.pub,
            counter_rng(seed << 32),
            node_key=node_key_pair(me.name.encode())[1],
            derp_region=1,
            node=me.name,
        )
        me.core.set_endpoints([peer.public, peer.lan], 0.0)  # what control says about the peer (from its STUN)
        me.core.set_my_endpoints([me.public, me.lan], 0.0)
    return a, b


def simulate(net: Net, until: float) -> tuple[Host, Host]:
    """Both nodes send a WireGuard packet every second (b from t=2 s) and refresh their endpoints every 20 s."""
    a, b = hosts()
    pair = [a, b]
    ticks = {a.name: a.starts_sending, b.name: b.starts_sending}
    restun = 20.0
    while True:
        due = [h.core.get_timer() for h in pair if h.core is not None]
        now = min([t for t in due if t is not None] + list(ticks.values()) + [restun] + [q[0] for q in net.queue[:1]])
        if now > until:
            return a, b
        if net.queue and net.queue[0][0] == now:
            _, _, dst, src, data = heapq.heappop(net.queue)
            sender, message = open_message(data, dst.priv)
            peer = b if dst is a else a
            assert sender == peer.pub and dst.core is not None
            dst.core.receive_message(message, src, now)
        elif now == restun:
            for h in pair:
                assert h.core is not None
                h.core.set_my_endpoints([h.public, h.lan], now)
            restun += 20.0
        elif now in ticks.values():
            h = a if ticks[a.name] == now else b
            assert h.core is not None
            h.core.note_send(now)
            ticks[h.name] += 1.0
        else:
            for h in pair:
                assert h.core is not None
                h.core.handle_timer(now)
        for h in pair:
            assert h.core is not None
            peer = b if h is a else a
            for o in h.core.messages_to_send():
                assert isinstance(o.message, Ping | CallMeMaybe) or o.message.src in (peer.public, DERP)
                data = seal_message(o.message, h.priv, peer.pub)
                if o.via_derp:
                    net.derp(peer, data, now)
                else:
                    net.udp(h, o.to, data, pair, now)
            if h.direct_at is None and h.core.state is State.DIRECT:
                h.direct_at = now


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("loss", "drop_first"), [(0.0, 0), (0.2, 4), (0.4, 10)])
def test_two_cores_converge_to_the_direct_path(seed: int, loss: float, drop_first: int) -> None:
    net = Net(random.Random(seed), loss, drop_first, until_healed=60.0)
    a, b = simulate(net, 75.0)
    assert net.counts.get("unroutable", 0) >= 2  # the LAN candidates were tried and never answered
    for me, peer in ((a, b), (b, a)):
        assert me.core is not None and me.direct_at is not None and me.direct_at < 60.0
        assert me.core.state is State.DIRECT  # 15 s after the network healed
        assert me.core.best is not None and me.core.best.endpoint == peer.public
        assert me.core.send_plan(75.0) == SendPlan(peer.public, None)
        assert me.core.candidates[peer.public].pongs[-1].pong_src == me.public  # the peer saw our NAT's address
        assert not me.core.drops
    if loss == 0.0:
        assert net.counts.get("filtered", 0) >= 1  # a's first ping hit b's closed NAT: hole punching was needed
        assert b.direct_at is not None and b.direct_at < 2.1  # b answered a's CallMeMaybe and got a pong
        assert a.direct_at is not None and a.direct_at <= 6.1  # a's next round (5 s rate limit, 3 s heartbeat)


def test_without_a_direct_path_both_stay_on_derp() -> None:
    net = Net(random.Random(0), 0.0, 0, udp_blocked=True)
    a, b = simulate(net, 40.0)
    for me in (a, b):
        assert me.core is not None and me.direct_at is None and me.core.best is None
        assert me.core.send_plan(40.0) == SendPlan(None, DERP)
        assert me.core.counters["ping-timed-out"] >= 10
    # a keeps calling; b answers every CallMeMaybe with pings at once, so its own rounds find nothing due
    assert a.core is not None and b.core is not None
    sent, received = a.core.counters["call-me-maybe-sent"], b.core.counters["call-me-maybe-received"]
    assert received >= 7 and sent - received in (0, 1)  # one may still be on its way over DERP
