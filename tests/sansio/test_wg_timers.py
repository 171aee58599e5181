"""WireGuard timers (whitepaper §6, protocols.md §8.5): rekeying by time and by messages, reject limits,
handshake retransmission and giving up, keepalives, the new-handshake timer and key zeroing; two
devices in memory on a fake clock, and :class:`PeerTimers` on its own."""

from __future__ import annotations

import itertools
import struct

import pytest

from tests.sansio.wgharness import A_EP, Pair, events, make_pair, of_type
from toolkit.crypto import noise
from toolkit.sansio.wgevents import HandshakeCompleted, HandshakeGaveUp, HandshakeInitiated, KeysZeroed
from toolkit.sansio.wgtimers import PeerTimers, TimerName
from toolkit.timing import Timing

INIT, RESP, DATA = 1, 2, 4


def handshaken(timing: Timing | None = None, **kwargs: object) -> Pair:
    """A pair at t=0 after A's packet started a handshake and B answered with data."""
    p = make_pair(timing, **kwargs)  # type: ignore[arg-type]
    p.net.send(p.a, p.a_to_b(b"start"))
    p.net.send(p.b, p.b_to_a(b"reply"))
    assert p.net.received(p.b) == [p.a_to_b(b"start")] and p.net.received(p.a) == [p.b_to_a(b"reply")]
    events(p.a), events(p.b)
    return p


def receiver_index(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 4)[0])


# --- rekeying -------------------------------------------------------------------------------------


def test_rekey_after_time_keeps_packets_in_flight() -> None:
    """The initiator rekeys when sending with a key older than REKEY_AFTER_TIME; packets sealed with
    the old keys and still in flight decrypt with the `previous` keypair on both sides."""
    p = handshaken(Timing().replace(rekey_after_time=2.0))
    old_a = p.a.peers[p.b_key].keypairs.current
    assert old_a is not None
    p.net.advance(6.0)  # older than 2 s, and past the 5 s initiation rate limit
    p.net.send(p.a, p.a_to_b(b"old a"), deliver=False)
    assert [d.type for d in p.net.in_flight] == [DATA, INIT]  # sent with the old key, then a rekey
    p.net.send(p.b, p.b_to_a(b"old b"), deliver=False)  # B is the responder: it does not rekey by time
    assert [d.type for d in p.net.in_flight] == [DATA, INIT, DATA]
    p.net.deliver(1)  # initiation -> B answers
    p.net.deliver(2)  # response -> A: new keys current, old ones previous; A sends a keepalive
    new_a = p.a.peers[p.b_key].keypairs.current
    assert new_a is not old_a and p.a.peers[p.b_key].keypairs.previous is old_a
    p.net.settle()  # the old packets, then A's keepalive (key confirmation at B)
    assert p.net.received(p.b) == [p.a_to_b(b"old a")]
    assert p.net.received(p.a) == [p.b_to_a(b"old b")]
    assert not p.a.counters and not p.b.counters
    p.net.send(p.b, p.b_to_a(b"new b"), deliver=False)
    assert new_a is not None and receiver_index(p.net.in_flight[0].data) == new_a.local_index
    p.net.settle()
    assert p.net.received(p.a) == [p.b_to_a(b"new b")]


def test_responder_does_not_rekey_by_time() -> None:
    p = handshaken(Timing().replace(rekey_after_time=2.0))
    p.net.advance(6.0)
    p.net.send(p.b, p.b_to_a(b"late"))
    assert p.net.sent_by(p.b, INIT) == []
    assert p.net.received(p.a) == [p.b_to_a(b"late")]


def test_rekey_after_messages() -> None:
    p = handshaken(Timing().replace(rekey_after_messages=5))
    p.net.advance(6.0)  # past the initiation rate limit
    kp = p.a.peers[p.b_key].keypairs.current
    assert kp is not None and kp.send_counter == 1
    for i in range(4):
        p.net.send(p.a, p.a_to_b(b"%d" % i), deliver=False)
    assert p.net.sent_by(p.a, INIT)[-1].at == 0.0  # counter 5 is the last one that does not rekey
    p.net.send(p.a, p.a_to_b(b"4"), deliver=False)
    assert kp.send_counter == 6 and p.net.sent_by(p.a, INIT)[-1].at == 6.0
    p.net.settle()
    assert p.net.received(p.b) == [p.a_to_b(b"%d" % i) for i in range(5)]
    assert p.a.peers[p.b_key].keypairs.current is not kp


def test_reject_after_messages_stages_until_new_keys() -> None:
    p = handshaken(Timing().replace(reject_after_messages=4))
    p.net.advance(6.0)
    for i in range(5):
        p.net.send(p.a, p.a_to_b(b"%d" % i), deliver=False)
    types = [d.type for d in p.net.in_flight]
    assert types == [DATA, DATA, DATA, INIT]  # counters 1..3; the 4th and 5th packets wait
    assert len(p.a.peers[p.b_key].staged) == 2
    p.net.settle()
    assert p.net.received(p.b) == [p.a_to_b(b"%d" % i) for i in range(5)]


def test_reject_after_time_stops_old_keys() -> None:
    p = handshaken(Timing().replace(reject_after_time=30.0))
    held = None
    p.net.send(p.a, p.a_to_b(b"slow"), deliver=False)
    [held] = p.net.drop_all()
    p.net.muted = {A_EP, p.net.endpoint_of(p.b)}  # a silent network from now on
    p.net.advance(30.5)
    p.b.receive_datagram(held.data, A_EP, p.net.now)
    assert p.b.counters["expired-keypair"] == 1 and p.b.packets_received() == []
    p.net.muted.clear()
    p.net.drop_all()
    before = len(p.net.sent_by(p.a, DATA))
    p.net.send(p.a, p.a_to_b(b"fresh"), deliver=False)
    assert len(p.net.sent_by(p.a, DATA)) == before  # the 30 s old keypair does not encrypt any more
    assert list(p.a.peers[p.b_key].staged) == [p.a_to_b(b"fresh")]
    p.net.advance(6.0)
    assert p.net.received(p.b) == [p.a_to_b(b"fresh")]


def test_receive_side_last_minute_rekey() -> None:
    """The initiator rekeys once when it receives with a keypair older than REJECT - KEEPALIVE - REKEY_TIMEOUT."""
    p = handshaken(Timing().replace(rekey_after_time=1000.0))  # the send-side time rule never fires
    for t in range(10, 171, 10):
        p.net.advance(t - p.net.now)
        p.net.send(p.b, p.b_to_a(b"t=%d" % t))
    inits = p.net.sent_by(p.a, INIT)
    assert [d.at for d in inits] == [0.0, 170.0]  # 160 s is not past the 165 s limit, 170 s is
    assert of_type(events(p.a), HandshakeCompleted)[-1].at == 170.0
    assert not p.a.peers[p.b_key].timers.sent_last_minute_handshake  # reset by the completed handshake


# --- handshake retransmission ---------------------------------------------------------------------


def test_retransmit_with_jitter_then_give_up_and_zero() -> None:
    t = Timing()
    p = make_pair(t)
    p.net.muted.add(p.net.endpoint_of(p.b))
    p.net.devices.pop(p.net.endpoint_of(p.b))  # B is gone
    p.net.send(p.a, p.a_to_b(b"lost"))
    p.net.advance(200.0)
    inits = p.net.sent_by(p.a, INIT)
    assert len(inits) == t.max_timer_handshakes + 2 == 20  # the first try and 19 retries (wireguard-go)
    gaps = [b.at - a.at for a, b in itertools.pairwise(inits)]
    assert all(t.rekey_timeout <= g < t.rekey_timeout + t.rekey_timeout_jitter_max for g in gaps)
    assert len(set(gaps)) > 1  # jittered
    evs = events(p.a)
    [gave_up] = of_type(evs, HandshakeGaveUp)
    assert (gave_up.attempts, gave_up.dropped) == (20, 1)
    assert gave_up.at == pytest.approx(inits[-1].at, abs=t.rekey_timeout + t.rekey_timeout_jitter_max)
    assert [e.attempt for e in of_type(evs, HandshakeInitiated)] == list(range(1, 21))
    assert p.a.counters == {"gave-up": 1}
    assert p.a.get_timer() == pytest.approx(gave_up.at + t.zero_keys_after)
    p.net.advance(t.zero_keys_after)
    assert [e.at for e in of_type(events(p.a), KeysZeroed)] == [pytest.approx(gave_up.at + t.zero_keys_after)]
    assert p.a.peers[p.b_key].handshake_index is None and p.a.get_timer() is None


def test_sending_again_after_giving_up_starts_over() -> None:
    p = make_pair()
    p.net.muted.add(p.net.endpoint_of(p.b))
    p.net.send(p.a, p.a_to_b(b"lost"))
    p.net.advance(120.0)
    assert of_type(events(p.a), HandshakeGaveUp)
    p.net.muted.clear()
    p.net.drop_all()
    p.net.send(p.a, p.a_to_b(b"again"))
    assert p.net.received(p.b) == [p.a_to_b(b"again")]


# --- keepalives and the new-handshake timer -------------------------------------------------------


def test_passive_keepalive_after_receiving_data() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(b"one way"))  # B gets data and has nothing to send back
    assert p.b.get_timer() == 10.0
    p.net.advance(20.0)
    [keepalive] = p.net.sent_by(p.b, DATA)
    assert (keepalive.at, len(keepalive.data)) == (10.0, 32)
    assert p.net.sent_by(p.a, INIT)[-1].at == 0.0  # the keepalive told A that B is alive: no new handshake
    assert p.net.received(p.a) == []


def test_no_keepalive_when_data_flows_back() -> None:
    p = handshaken()  # B answered with data, which counts as the acknowledgement
    p.net.advance(30.0)
    b_data = p.net.sent_by(p.b, DATA)
    a_data = p.net.sent_by(p.a, DATA)
    assert [d.at for d in b_data] == [0.0]  # B owes nothing
    assert [(d.at, len(d.data)) for d in a_data[1:]] == [(10.0, 32)]  # A received data: one keepalive


def test_new_handshake_when_peer_goes_quiet() -> None:
    t = Timing()
    p = handshaken(t)
    p.net.muted.add(p.net.endpoint_of(p.b))
    p.net.advance(2.0)
    p.net.send(p.a, p.a_to_b(b"anyone?"))
    p.net.advance(20.0)
    inits = p.net.sent_by(p.a, INIT)
    assert len(inits) == 2
    assert 2.0 + t.new_handshake_timeout <= inits[1].at < 2.0 + t.new_handshake_timeout + t.rekey_timeout_jitter_max


def test_persistent_keepalive_every_interval() -> None:
    p = make_pair(keepalive_a=25)
    p.net.advance(100.0)
    keepalives = [(d.at, len(d.data)) for d in p.net.sent_by(p.a, DATA)]
    assert keepalives == [(0.0, 32), (25.0, 32), (50.0, 32), (75.0, 32), (100.0, 32)]
    assert p.net.received(p.b) == []


def test_persistent_keepalive_restarts_on_traffic() -> None:
    p = make_pair(keepalive_a=25)
    p.net.advance(10.0)
    p.net.send(p.b, p.b_to_a(b"traffic"))  # received by A at t=10: the interval restarts
    p.net.advance(40.0)
    a_times = [d.at for d in p.net.sent_by(p.a, DATA)]
    assert a_times == [0.0, 20.0, 45.0]  # 20: A owed a keepalive 10 s after receiving data; then 25 s later


def test_key_material_zeroed_after_three_reject_times() -> None:
    t = Timing()
    p = handshaken(t)
    old = p.a.session_keys()[0]
    p.net.muted = {p.net.endpoint_of(p.a), p.net.endpoint_of(p.b)}
    p.net.advance(t.zero_keys_after - 1)
    assert p.a.session_keys() and p.b.session_keys()
    p.net.advance(1.0)
    assert [e.at for e in of_type(events(p.a), KeysZeroed)] == [t.zero_keys_after]
    assert [e.at for e in of_type(events(p.b), KeysZeroed)] == [t.zero_keys_after]
    assert p.a.session_keys() == [] and p.b.session_keys() == []
    assert p.a.get_timer() is None and p.b.get_timer() is None
    p.net.muted.clear()
    p.net.drop_all()
    forged = noise.seal_transport(noise.SessionKeys(old.recv_key, old.send_key, old.remote_index, old.local_index,
                                                    False, 0.0, p.a_key), 999, p.b_to_a())  # fmt: skip
    p.a.receive_datagram(forged, p.net.endpoint_of(p.b), p.net.now)
    assert p.a.counters == {"unknown-index": 1}


# --- PeerTimers on its own ------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def send_keepalive(self, now: float) -> None:
        self.calls.append(f"keepalive@{now}")

    def send_initiation(self, now: float, *, retry: bool) -> None:
        self.calls.append(f"{'retry' if retry else 'initiate'}@{now}")

    def give_up(self, now: float) -> None:
        self.calls.append(f"give-up@{now}")

    def zero_key_material(self, now: float) -> None:
        self.calls.append(f"zero@{now}")


def test_peer_timers_rules() -> None:
    t = Timing()
    timers = PeerTimers(t, lambda: 0.25)
    assert timers.earliest() is None
    timers.data_received(1.0)
    timers.data_received(2.0)  # already armed: one more keepalive is owed instead
    assert timers.deadline(TimerName.SEND_KEEPALIVE) == 11.0 and timers.need_another_keepalive
    rec = Recorder()
    timers.expire(TimerName.SEND_KEEPALIVE, 11.0, rec)
    assert rec.calls == ["keepalive@11.0"] and timers.deadline(TimerName.SEND_KEEPALIVE) == 21.0
    timers.data_sent(3.0)
    timers.data_sent(4.0)  # not re-armed
    assert timers.deadline(TimerName.NEW_HANDSHAKE) == 3.0 + 15.0 + 0.25
    timers.any_authenticated_received()
    assert not timers.pending(TimerName.NEW_HANDSHAKE)
    timers.authenticated_traversal(5.0, None)
    assert not timers.pending(TimerName.PERSISTENT_KEEPALIVE)
    timers.authenticated_traversal(5.0, 25)
    timers.session_derived(5.0)
    timers.handshake_initiated(5.0)
    assert timers.earliest() == (10.25, TimerName.RETRANSMIT_HANDSHAKE)
    assert timers.deadlines()[TimerName.ZERO_KEY_MATERIAL] == 545.0


def test_peer_timers_give_up_after_max_attempts() -> None:
    t = Timing()
    timers = PeerTimers(t, lambda: 0.0)
    rec = Recorder()
    for _ in range(t.max_timer_handshakes + 1):
        timers.expire(TimerName.RETRANSMIT_HANDSHAKE, 1.0, rec)
    assert rec.calls == ["retry@1.0"] * 19 and timers.handshake_attempts == 19
    timers.data_received(1.0)
    timers.expire(TimerName.RETRANSMIT_HANDSHAKE, 2.0, rec)
    assert rec.calls[-1] == "give-up@2.0"
    assert not timers.pending(TimerName.SEND_KEEPALIVE)
    assert timers.deadline(TimerName.ZERO_KEY_MATERIAL) == 2.0 + 540.0
    timers.handshake_complete()
    assert timers.handshake_attempts == 0 and not timers.pending(TimerName.RETRANSMIT_HANDSHAKE)


def test_peer_timers_ties_fire_in_declared_order() -> None:
    timers = PeerTimers(Timing(), lambda: 0.0)
    timers.mod(TimerName.ZERO_KEY_MATERIAL, 5.0)
    timers.mod(TimerName.SEND_KEEPALIVE, 5.0)
    assert timers.earliest() == (5.0, TimerName.SEND_KEEPALIVE)
    timers.stop()
    assert timers.earliest() is None
