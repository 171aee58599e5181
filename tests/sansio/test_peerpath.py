"""PeerPath, magicsock's per-peer path selection (protocols.md §4.3-§4.9), on a fake clock: the discovery
round and its 5 s rate limit, pongs adopting and replacing the best address (only when betterAddr says
so), trust expiry falling back to UDP+DERP and a timed-out ping to DERP only, the heartbeat cadence and
its end when idle, the re-upgrade interval, CallMeMaybe, received pings, and the trace."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import pytest

from toolkit.codec.disco import CallMeMaybe, Ping, Pong
from toolkit.sansio.betteraddr import AddrQuality, better_addr
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.peerpath import PeerPath
from toolkit.sansio.peerpath_types import (
    TRANSITIONS,
    CandidateAdded,
    CandidateRemoved,
    EndpointsRefreshWanted,
    Event,
    HeartbeatStopped,
    Outgoing,
    PathLost,
    PathTrustExpired,
    PathUpgraded,
    PingTimedOut,
    PongReceived,
    Purpose,
    SendPlan,
    State,
)
from toolkit.sansio.trace import TraceLog
from toolkit.timing import Timing
from toolkit.types import DiscoPublicKey, Endpoint, TxID

PEER = DiscoPublicKey(bytes(range(32)))
E1, E2 = Endpoint.parse("203.0.113.5:41641"), Endpoint.parse("198.51.100.7:41641")
E3, E4 = Endpoint.parse("203.0.113.9:1000"), Endpoint.parse("[2001:db8::4]:41641")
LAN = Endpoint.parse("192.168.1.5:41641")
LINK6 = Endpoint.parse("[fe80::1]:41641")
ME = Endpoint.parse("192.0.2.1:41641")  # how the peer sees us; also our advertised endpoint
DERP = derp_magic_endpoint(1)
T = Timing()


def counter_rng() -> Callable[[int], bytes]:
    n = itertools.count(1)
    return lambda k: next(n).to_bytes(k, "big")


def make(endpoints: tuple[Endpoint, ...] = (E1, E2), *, derp: int | None = 1, **kw: object) -> PeerPath:
    p = PeerPath(PEER, counter_rng(), derp_region=derp, **kw)  # type: ignore[arg-type]
    p.set_endpoints(endpoints, 0.0)
    p.set_my_endpoints([ME], 0.0)
    events(p)
    return p


def events(p: PeerPath) -> list[Event]:
    out = []
    while (e := p.next_event()) is not None:
        out.append(e)
    return out


def ping_to(out: list[Outgoing], ep: Endpoint) -> TxID:
    (txid,) = [o.message.txid for o in out if isinstance(o.message, Ping) and o.to == ep]
    return txid


def pong(p: PeerPath, txid: TxID, src: Endpoint, now: float) -> bool:
    return p.pong_received(Pong(txid, ME), src, now)


def run(
    p: PeerPath, until: float, rtt: dict[Endpoint, float], *, send_every: float = 1.0, send_until: float = 1e9
) -> list[tuple[float, Outgoing]]:
    """Drive ``p`` to ``until``: WireGuard sends every ``send_every`` s up to ``send_until``, timers when due,
    pings to endpoints in ``rtt`` answered after that round trip. Returns every message sent, with its time."""
    pongs: list[tuple[float, int, TxID, Endpoint]] = []
    sent: list[tuple[float, Outgoing]] = []
    seq, next_send, now = itertools.count(), 0.0, 0.0
    while True:
        due = [t for t in (p.get_timer(), pongs[0][0] if pongs else None) if t is not None]
        if next_send <= send_until:
            due.append(next_send)
        now = min(due, default=until + 1)
        if now > until:
            return sent
        if pongs and pongs[0][0] == now:
            _, _, txid, src = heapq.heappop(pongs)
            pong(p, txid, src, now)
        elif next_send == now and next_send <= send_until:
            p.note_send(now)
            next_send += send_every
        else:
            p.handle_timer(now)
        for o in p.messages_to_send():
            sent.append((now, o))
            if isinstance(o.message, Ping) and o.to in rtt:
                heapq.heappush(pongs, (now + rtt[o.to], next(seq), o.message.txid, o.to))


# --- discovery round (§4.4) --------------------------------------------------------------------------


def test_first_send_goes_over_derp_and_pings_every_candidate_with_a_call_me_maybe() -> None:
    p = make()
    assert p.note_send(0.0) == SendPlan(None, DERP)
    out = p.messages_to_send()
    assert [(type(o.message), o.to, o.purpose) for o in out] == [
        (Ping, E1, Purpose.DISCOVERY),
        (Ping, E2, Purpose.DISCOVERY),
        (CallMeMaybe, DERP, None),
    ]
    assert out[2].message == CallMeMaybe((ME,)) and out[2].via_derp and not out[0].via_derp
    assert all(o.message.node_key is None for o in out[:2] if isinstance(o.message, Ping))


def test_each_candidate_is_pinged_at_most_every_disco_ping_interval() -> None:
    p = make()
    p.note_send(0.0)
    p.messages_to_send()
    for t in (1.0, 3.0, 4.99):
        assert p.ping_targets(t) == ()
        p.note_send(t)
        assert p.messages_to_send() == []  # no ping, so no CallMeMaybe either
    assert p.ping_targets(T.disco_ping_interval) == (E1, E2)
    p.note_send(5.0)
    assert [o.to for o in p.messages_to_send()] == [E1, E2, DERP]
    p.set_endpoints([E1, E2, E3], 6.0)
    assert p.ping_targets(6.0) == (E3,)  # the new candidate is due at once, the others at 10 s


def test_no_call_me_maybe_without_a_derp_region() -> None:
    p = make(derp=None)
    assert p.note_send(0.0) == SendPlan(None, None)
    assert [o.to for o in p.messages_to_send()] == [E1, E2]


def test_stale_own_endpoints_hold_the_call_me_maybe_until_refreshed() -> None:
    p = make()
    p.note_send(T.endpoints_fresh_enough)  # our endpoints are 27 s old: re-STUN first (§4.4)
    assert [o.to for o in p.messages_to_send()] == [E1, E2]
    assert events(p) == [EndpointsRefreshWanted()]
    p.set_my_endpoints([ME, E3], 27.2)
    assert [(o.message, o.to) for o in p.messages_to_send()] == [(CallMeMaybe((ME, E3)), DERP)]


# --- pongs (§4.7) ------------------------------------------------------------------------------------


def test_a_pong_adopts_the_address_and_trusts_it() -> None:
    log = TraceLog()
    p = make(tracer=log)
    p.note_send(0.0)
    txid = ping_to(p.messages_to_send(), E1)
    assert pong(p, txid, E1, 0.02)
    assert events(p) == [
        PongReceived(txid, E1, E1, 0.02, ME, Purpose.DISCOVERY),
        PathUpgraded(None, AddrQuality(E1, 0.02, 1280), "no path on one side"),
    ]
    assert p.state is State.DIRECT and p.send_addr(0.03) == E1
    assert p.note_send(0.03) == SendPlan(E1, None) and p.messages_to_send() == []  # trusted: no discovery
    assert p.candidates[E1].latency == 0.02 and p.trust_until == pytest.approx(0.02 + T.trust_udp_addr_duration)
    assert [(r.detail, r.reason) for r in log.of_kind("transition")] == [("DERP -> DIRECT", "pong")]
    assert not pong(p, txid, E1, 0.04)  # the ping is answered already
    assert p.drops == {"pong-unknown-txid": 1} and log.reasons() == ["pong-unknown-txid"]


@pytest.mark.parametrize(
    ("other", "latency", "replaces"),
    [
        (LAN, 0.055, True),  # private +20 beats public 9% faster
        (E2, 0.0498, False),  # 0.4% faster: hysteresis
        (E2, 0.0495, False),  # 1% faster: 1 point, still hysteresis
        (E2, 0.049, True),  # 2% faster: 2 points
        (E2, 0.040, True),  # 20% faster
        (E2, 0.060, False),  # slower
        (E4, 0.052, True),  # IPv6 +10 beats IPv4 4% faster
    ],
)
def test_a_second_pong_replaces_the_best_only_when_better_addr_says_so(
    other: Endpoint, latency: float, replaces: bool
) -> None:
    p = make((E1,))
    p.discover(0.0, call_me_maybe=False)
    pong(p, ping_to(p.messages_to_send(), E1), E1, 0.05)
    best = p.best
    p.set_endpoints([E1, other], 1.0)
    assert p.discover(1.0, call_me_maybe=False) == 1  # E1 was pinged 1 s ago
    pong(p, ping_to(p.messages_to_send(), other), other, 1.0 + latency)
    assert better_addr(AddrQuality(other, latency, 1280), best) is replaces
    assert p.best is not None and p.best.endpoint == (other if replaces else E1)
    upgrades = [e for e in events(p) if isinstance(e, PathUpgraded)]
    assert len(upgrades) == (2 if replaces else 1)


def test_any_pong_replaces_an_untrusted_best() -> None:
    p = make()
    p.discover(0.0, call_me_maybe=False)
    out = p.messages_to_send()
    pong(p, ping_to(out, E1), E1, 0.01)
    p.discover(7.0, call_me_maybe=False)  # E1's trust ended at 6.51
    pong(p, ping_to(p.messages_to_send(), E2), E2, 7.2)  # 20x slower, but E1 is not trusted
    assert p.best is not None and p.best.endpoint == E2 and p.best.latency == pytest.approx(0.2)
    assert p.send_addr(7.2) == E2


# --- trust expiry and ping timeouts (§4.3, §4.8) -------------------------------------------------------


def test_trust_expires_to_udp_and_derp_then_a_timed_out_ping_drops_udp() -> None:
    p = make()
    p.discover(0.0, call_me_maybe=False)
    out = p.messages_to_send()
    pong(p, ping_to(out, E1), E1, 0.05)
    until = p.trust_until
    assert p.get_timer() == T.ping_timeout  # E2's ping
    events(p)
    p.handle_timer(4.99)
    assert events(p) == [] and p.get_timer() == T.ping_timeout
    p.handle_timer(5.0)
    assert [e for e in events(p) if isinstance(e, PingTimedOut)] == [
        PingTimedOut(ping_to(out, E2), E2, Purpose.DISCOVERY)
    ]
    assert p.get_timer() == until and p.send_addr(until - 1e-9) == E1
    assert p.send_addr(until) is None and p.send_plan(until) == SendPlan(E1, DERP)  # "both" while validating
    p.handle_timer(until)
    assert events(p) == [PathTrustExpired(p.best)] and p.state is State.VALIDATING  # type: ignore[arg-type]
    assert p.get_timer() is None
    p.discover(8.0, call_me_maybe=False)  # nobody answers any more
    assert p.get_timer() == 8.0 + T.ping_timeout
    p.handle_timer(12.99)
    assert [p.state] == [State.VALIDATING]
    p.handle_timer(13.0)
    assert PathLost(AddrQuality(E1, 0.05, 1280), "ping to best timed out") in events(p)
    assert [p.state] == [State.DERP] and p.send_plan(13.0) == SendPlan(None, DERP)


def test_a_timeout_while_the_best_is_still_trusted_keeps_it() -> None:
    p = make((E1,))
    p.discover(0.0, call_me_maybe=False)
    pong(p, ping_to(p.messages_to_send(), E1), E1, 0.05)
    (cli,) = p.cli_ping(0.1)  # to the trusted best only
    assert [o.to for o in p.messages_to_send()] == [E1]
    p.handle_timer(5.1)
    assert PingTimedOut(cli, E1, Purpose.CLI) in events(p)
    assert p.state is State.DIRECT and p.send_addr(5.1) == E1


# --- heartbeat and re-upgrade (§4.5) ------------------------------------------------------------------


def test_heartbeat_every_3_s_while_active_then_stops_when_idle() -> None:
    p = make()
    sent = run(p, 80.0, {E1: 0.02}, send_until=10.0)
    beats = [t for t, o in sent if o.purpose is Purpose.HEARTBEAT]
    assert beats == [3.0 * k for k in range(1, 19)]  # 3 .. 54; at 57 the last send is 47 s > 45 s old
    assert all(o.to == E1 for _, o in sent if o.purpose is Purpose.HEARTBEAT)
    assert p.heartbeat_at is None and HeartbeatStopped(47.0) in events(p)
    assert p.state is State.VALIDATING  # nothing keeps the idle path trusted


@pytest.mark.parametrize(("rtt", "rounds"), [(0.020, [0.0, 60.0, 120.0]), (0.004, [0.0])])
def test_full_rounds_repeat_every_minute_unless_latency_is_good_enough(rtt: float, rounds: list[float]) -> None:
    p = make()
    sent = run(p, 150.0, {E1: rtt})  # E2 never answers
    assert sorted({t for t, o in sent if o.purpose is Purpose.DISCOVERY}) == rounds
    assert [t for t, o in sent if isinstance(o.message, CallMeMaybe)] == [0.0]  # later our endpoints are stale:
    assert sum(isinstance(e, EndpointsRefreshWanted) for e in events(p)) == len(rounds) - 1  # the driver re-STUNs
    assert p.state is State.DIRECT and p.best is not None and p.best.endpoint == E1


# --- CallMeMaybe (§4.9) and received pings (§4.6) --------------------------------------------------------


def test_call_me_maybe_adds_candidates_and_pings_at_once() -> None:
    p = make((E1,))
    p.discover(0.0, call_me_maybe=False)
    p.messages_to_send()
    assert p.receive_message(CallMeMaybe((E3, E4, LINK6)), DERP, 1.0)
    assert [o.to for o in p.messages_to_send()] == [E1, E3, E4]  # E1 despite the 5 s limit; no CallMeMaybe back
    assert events(p) == [CandidateAdded(E3, "call-me-maybe"), CandidateAdded(E4, "call-me-maybe")]
    p.call_me_maybe([E4], 2.0)
    assert events(p) == [CandidateRemoved(E3, "not re-advertised")]
    assert list(p.candidates) == [E1, E4] and [o.to for o in p.messages_to_send()] == [E1, E4]
    assert not p.receive_message(CallMeMaybe((E2,)), E1, 3.0)  # over UDP: dropped
    assert p.drops == {"call-me-maybe-over-udp": 1} and E2 not in p.candidates


def test_a_ping_teaches_a_candidate_and_is_answered_on_its_path() -> None:
    p = make((E1,))
    tx = TxID(b"\x07" * 12)
    assert p.ping_received(Ping(tx), E3, 1.0)
    assert [(o.message, o.to) for o in p.messages_to_send()] == [(Pong(tx, E3), E3)]
    assert not p.ping_received(Ping(tx), E3, 1.1)  # the same ping again (raw socket and UDP socket)
    assert p.drops == {"duplicate-ping": 1} and p.messages_to_send() == []
    assert p.ping_received(Ping(TxID(b"\x08" * 12)), DERP, 2.0)
    assert [(o.message, o.to) for o in p.messages_to_send()] == [(Pong(TxID(b"\x08" * 12), DERP), DERP)]
    assert list(p.candidates) == [E1, E3]  # DERP is never a candidate
    p.discover(45.0, call_me_maybe=False)
    assert E3 in p.candidates
    p.discover(46.01, call_me_maybe=False)  # 45 s after its last ping
    assert E3 not in p.candidates and CandidateRemoved(E3, "expired") in events(p)


def test_losing_the_best_candidate_or_the_link_goes_back_to_derp() -> None:
    log = TraceLog()
    p = make(tracer=log)
    p.discover(0.0, call_me_maybe=False)
    out = p.messages_to_send()
    pong(p, ping_to(out, E1), E1, 0.05)
    p.set_endpoints([E2], 1.0)
    assert p.state is State.DERP and p.best is None
    pong(p, ping_to(out, E2), E2, 1.1)
    p.note_connectivity_change(2.0)
    assert p.send_plan(2.0) == SendPlan(None, DERP) and p.candidates[E2].pongs == type(p.candidates[E2].pongs)()
    labels = [(r.detail, r.reason) for r in log.of_kind("transition")]
    assert labels == [
        ("DERP -> DIRECT", "pong"),
        ("DIRECT -> DERP", "candidate removed"),
        ("DERP -> DIRECT", "pong"),
        ("DIRECT -> DERP", "connectivity changed"),
    ]
    edges = {(f.name, label, t.name) for f, label, t in TRANSITIONS}
    assert all(
        (r.detail.split(" -> ")[0], r.reason, r.detail.split(" -> ")[1]) in edges for r in log.of_kind("transition")
    )
