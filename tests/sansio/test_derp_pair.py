"""Two sans-IO cores against each other in memory (design.md §6): natkit's DERP client core
(:mod:`toolkit.sansio.derpclient`) and relay core (:mod:`toolkit.sansio.derpserver`) on a fake clock,
with no socket: handshake, relaying, NotePreferred, Ping/Pong, PeerGone, KeepAlive and the
read timeout, Restarting on shutdown, and a rate limit the client enforces itself."""

from __future__ import annotations

import hashlib
import itertools

from toolkit.codec import derp
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.derpclient import DerpClientConn, State
from toolkit.sansio.derpevents import (
    Closed,
    Connected,
    DerpEvent,
    KeepAliveReceived,
    PacketReceived,
    PeerGoneReceived,
    PongReceived,
    RestartingReceived,
)
from toolkit.sansio.derpserver import DerpServerCore
from toolkit.sansio.derpserver_conn import DerpLimits
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

SERVER_PRIV, SERVER_PUB = node_key_pair(b"pair-server")


def rng_from(seed: bytes) -> object:
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


class Net:
    """A relay core and client cores joined by in-memory byte pipes, on one fake clock."""

    def __init__(self, limits: DerpLimits | None = None) -> None:
        self.now = 0.0
        self.server = DerpServerCore(SERVER_PRIV, rng=rng_from(b"server"), timing=DEFAULT, limits=limits)  # type: ignore[arg-type]
        self.clients: dict[int, DerpClientConn] = {}
        self.events: dict[int, list[DerpEvent]] = {}

    def add(self, cid: int, **kw: object) -> tuple[DerpClientConn, NodePublicKey]:
        priv: NodePrivateKey = node_key_pair(f"pair-client-{cid}".encode())[0]
        client = DerpClientConn(priv, rng=rng_from(b"c%d" % cid), host="derp.test", **kw)  # type: ignore[arg-type]
        self.server.connection_made(cid, Endpoint.parse(f"192.0.2.{cid}:{40000 + cid}"), self.now)
        client.start(self.now)
        self.clients[cid] = client
        self.events[cid] = []
        self.pump()
        return client, client.public_key

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for cid, client in self.clients.items():
                out = client.data_to_send()
                if out:
                    self.server.data_received(cid, out, self.now)
                    moved = True
            for cid, data in self.server.pending_writes():
                if cid in self.clients:
                    self.clients[cid].receive_data(data, self.now)
                    moved = True
            for close in self.server.connections_to_close():
                if close.conn_id in self.clients:
                    self.clients[close.conn_id].receive_eof(self.now)
                    self.server.connection_lost(close.conn_id, self.now)
            for cid, client in self.clients.items():
                self.events[cid] += client.take_events()

    def advance(self, seconds: float) -> None:
        """Run both sides' timers up to now + seconds, in order."""
        end = self.now + seconds
        while True:
            due = [t for t in [self.server.get_timer(), *(c.get_timer() for c in self.clients.values())] if t]
            nxt = min(due, default=end + 1)
            if nxt > end:
                break
            self.now = max(self.now, nxt)
            self.server.handle_timer(self.now)
            for client in self.clients.values():
                client.handle_timer(self.now)
            self.pump()
        self.now = end

    def take(self, cid: int) -> list[DerpEvent]:
        events, self.events[cid] = self.events[cid], []
        return events


def test_handshake_and_relay_between_two_client_cores() -> None:
    net = Net()
    a, a_key = net.add(1, preferred=True)
    b, b_key = net.add(2)
    assert a.state is State.CONNECTED and b.state is State.CONNECTED
    assert net.take(1) == [Connected(SERVER_PUB, derp.ServerInfoJSON())]
    views = {v.key: v for v in net.server.clients()}
    assert views[a_key].preferred and not views[b_key].preferred
    assert a.send_packet(b_key, b"hello b")
    assert b.send_packet(a_key, b"hello a")
    net.pump()
    assert [e for e in net.take(2) if isinstance(e, PacketReceived)] == [PacketReceived(a_key, b"hello b")]
    assert net.take(1) == [PacketReceived(b_key, b"hello a")]
    b.note_preferred(True)
    net.pump()
    assert {v.key: v.preferred for v in net.server.clients()}[b_key]


def test_ping_rtt_and_peer_gone() -> None:
    net = Net()
    a, a_key = net.add(1)
    b, b_key = net.add(2)
    net.take(1)
    a.send_ping(b"rtt-ping", net.now)
    net.pump()
    assert net.take(1) == [PongReceived(b"rtt-ping", 0.0)]
    b.send_packet(a_key, b"x")  # the relay tells a when b, who sent to it, goes away
    net.pump()
    assert net.take(1) == [PacketReceived(b_key, b"x")]
    b.close(net.now)
    net.server.connection_lost(2, net.now)
    del net.clients[2]
    net.pump()
    assert net.take(1) == [PeerGoneReceived(b_key, derp.PeerGoneReason.DISCONNECTED)]
    stranger = node_key_pair(b"stranger")[1]
    a.send_packet(stranger, b"?")
    net.pump()
    assert net.take(1) == [PeerGoneReceived(stranger, derp.PeerGoneReason.NOT_HERE)]


def test_keepalives_keep_the_read_timeout_away_until_the_server_goes_silent() -> None:
    net = Net()
    a, _ = net.add(1)
    net.take(1)
    net.advance(600.0)  # 10 minutes: KeepAlive every 60-65 s, far inside the 120 s read timeout
    events = net.take(1)
    assert 9 <= sum(isinstance(e, KeepAliveReceived) for e in events) <= 10
    assert a.state is State.CONNECTED
    net.server.connection_lost(1, net.now)  # the relay forgets the client without a FIN: silence
    net.advance(130.0)
    assert net.take(1) == [Closed("read-timeout", "nothing received for 120 s")]


def test_shutdown_sends_restarting_then_closes() -> None:
    net = Net()
    net.add(1)
    net.take(1)
    net.server.shutdown(net.now, reconnect_in=0.5, try_for=10.0)
    net.pump()
    assert net.take(1) == [RestartingReceived(0.5, 10.0), Closed("eof", "the server closed the connection")]


def test_rate_limit_announced_by_the_relay_is_enforced_by_the_client() -> None:
    net = Net(DerpLimits(rate_bytes_per_s=100_000, burst_bytes=200_000))
    a, _ = net.add(1)
    _, b_key = net.add(2)
    assert a.bucket is not None and a.bucket.burst == net.server.limits.effective_burst
    sent = sum(a.send_packet(b_key, b"z" * 1000, net.now) for _ in range(300))
    net.pump()
    assert sent == a.bucket.burst // 1037 and a.counters["rate-limited"] == 300 - sent
    assert sum(isinstance(e, PacketReceived) for e in net.take(2)) == sent
    assert net.server.dropped["rate_limited"] == 0  # the client kept within the limit
