"""The sans-IO STUN transaction: RFC 8489 §6.2.1 schedule, answer matching, drops, TRANSITIONS."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support import VECTORS
from toolkit.codec import stun
from toolkit.sansio.stunclient import TRANSITIONS, State, StunTransaction, retransmit_schedule
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID

SERVER = Endpoint.parse("198.51.100.1:3478")
MAPPED = Endpoint.parse("203.0.113.7:40001")
TXID = TxID(bytes(range(1, 13)))


def txn(timing: Timing = DEFAULT, now: float = 0.0, **kw: object) -> StunTransaction:
    return StunTransaction(SERVER, TXID, stun.binding_request(TXID), timing, now, **kw)  # type: ignore[arg-type]


def run_to_end(t: StunTransaction) -> list[float]:
    """Fire every timer exactly when due; the times requests went out (the first at construction)."""
    sends = [t.started] * len(t.datagrams_to_send())
    while (due := t.get_timer()) is not None:
        t.handle_timer(due)
        sends += [due] * len(t.datagrams_to_send())
    return sends


def test_rfc8489_schedule_with_defaults() -> None:
    # RFC 8489 §6.2.1: "requests would be sent at times 0 ms, 500 ms, 1500 ms, 3500 ms, 7500 ms,
    # 15500 ms, and 31500 ms. If the client has not received a response after 39500 ms, [...] timed out"
    t = txn()
    assert run_to_end(t) == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert t.state is State.TIMED_OUT
    assert t.failed is not None and t.failed.kind == "timeout" and t.failed.at == 39.5 and t.failed.sends == 7
    assert t.result is None and t.get_timer() is None


def test_schedule_counts_from_the_first_send() -> None:
    t = txn(now=100.0)
    assert run_to_end(t) == [100.0, 100.5, 101.5, 103.5, 107.5, 115.5, 131.5]
    assert t.failed is not None and t.failed.at == 139.5


@pytest.mark.parametrize(
    ("rto", "rc", "rm", "sends", "give_up"),
    [
        (0.1, 7, 16, [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3], 7.9),
        (0.05, 3, 4, [0.0, 0.05, 0.15], 0.35),
        (1.0, 1, 2, [0.0], 2.0),
    ],
)
def test_schedule_follows_timing(rto: float, rc: int, rm: int, sends: list[float], give_up: float) -> None:
    timing = Timing(stun_rto=rto, stun_rc=rc, stun_rm=rm)
    offsets, end = retransmit_schedule(timing)
    assert offsets == pytest.approx(sends) and end == pytest.approx(give_up)
    t = txn(timing)
    assert run_to_end(t) == pytest.approx(sends)
    assert t.failed is not None and t.failed.at == pytest.approx(give_up)


def test_early_timer_does_nothing_and_late_timer_sends_once() -> None:
    t = txn()
    t.datagrams_to_send()
    t.handle_timer(0.49)
    assert t.datagrams_to_send() == [] and t.sends == 1
    t.handle_timer(2.0)  # the 0.5 s and 1.5 s sends are both overdue: one request, not two
    assert len(t.datagrams_to_send()) == 1 and t.sends == 2
    assert t.get_timer() == 3.5
    t.handle_timer(1000.0)  # past the give-up time: no request, a timeout
    assert t.datagrams_to_send() == [] and t.state is State.TIMED_OUT


def test_answer_gives_mapped_rtt_and_source() -> None:
    t = txn()
    [(data, dest)] = t.datagrams_to_send()
    assert dest == SERVER and stun.decode(data).txid == TXID
    assert t.receive_datagram(stun.binding_response(TXID, MAPPED, software="srv"), SERVER, 0.012) is True
    assert t.state is State.ANSWERED and t.done and t.get_timer() is None
    r = t.result
    assert r is not None and r.mapped == MAPPED and r.source == SERVER and r.sends == 1
    assert r.rtt == pytest.approx(0.012) and r.karn_rtt == pytest.approx(0.012) and not r.retransmitted
    assert r.message.software == "srv"


def test_rtt_after_retransmission_is_from_the_last_send() -> None:
    t = txn()
    t.handle_timer(0.5)
    t.handle_timer(1.5)
    assert t.receive_datagram(stun.binding_response(TXID, MAPPED), SERVER, 1.6)
    r = t.result
    assert r is not None and r.sends == 3 and r.retransmitted
    assert r.rtt == pytest.approx(0.1) and r.karn_rtt is None


def test_duplicate_answer_is_dropped_as_late() -> None:
    t = txn()
    answer = stun.binding_response(TXID, MAPPED)
    assert t.receive_datagram(answer, SERVER, 0.1)
    assert t.receive_datagram(answer, SERVER, 0.2) is False
    assert t.drops == {"late": 1}
    assert t.result is not None and t.result.at == 0.1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"hello, not STUN at all", "not-stun"),
        (stun.binding_response(TxID(bytes(12)), MAPPED), "wrong-txid"),
        (stun.Message(stun.Class.SUCCESS, stun.Method.ALLOCATE, TXID, ()).encode(), "wrong-method"),
        (stun.binding_request(TXID), "not-a-response"),
        (stun.binding_response(TXID, MAPPED)[:-2], "undecodable-truncated"),
    ],
    ids=["not-stun", "wrong-txid", "wrong-method", "request", "truncated"],
)
def test_non_answers_are_dropped_and_counted(data: bytes, reason: str) -> None:
    log = TraceLog()
    t = txn(tracer=log)
    assert t.receive_datagram(data, SERVER, 0.1) is False
    assert t.drops == {reason: 1} and t.state is State.WAITING
    assert log.reasons() == [reason]
    assert t.receive_datagram(stun.binding_response(TXID, MAPPED), SERVER, 0.2)  # the real answer still counts


def test_bad_fingerprint_is_dropped() -> None:
    good = bytearray(stun.binding_response(TXID, MAPPED, fingerprint=True))
    good[-1] ^= 0xFF
    t = txn()
    assert t.receive_datagram(bytes(good), SERVER, 0.1) is False
    assert t.drops == {"bad-fingerprint": 1}


def test_error_response_fails_with_code_and_unknown_attributes() -> None:
    t = txn()
    err = stun.error_response(TXID, stun.Method.BINDING, 420, "Unknown Attribute", unknown=(0x0003,))
    assert t.receive_datagram(err, SERVER, 0.05)
    assert t.state is State.FAILED and t.result is None
    f = t.failed
    assert f is not None and f.kind == "error" and f.code == 420 and f.unknown == (0x0003,)
    assert f.describe() == "error response 420 Unknown Attribute" and f.source == SERVER


def test_success_without_mapped_address_is_a_bad_response() -> None:
    t = txn()
    bare = stun.Message(stun.Class.SUCCESS, stun.Method.BINDING, TXID, (stun.Software("x"),)).encode()
    assert t.receive_datagram(bare, SERVER, 0.05)
    assert t.failed is not None and t.failed.kind == "bad-response"


def test_request_mode_waits_for_the_request_itself() -> None:
    t = txn(answer="request")
    request, _ = t.datagrams_to_send()[0]
    assert t.receive_datagram(stun.binding_response(TXID, MAPPED), SERVER, 0.01) is False
    assert t.drops == {"not-a-request": 1}
    assert t.receive_datagram(request, MAPPED, 0.02)
    assert t.result is not None and t.result.mapped is None and t.result.source == MAPPED


@pytest.mark.parametrize(
    "vector", json.loads((VECTORS / "stun.json").read_text())["responses"], ids=lambda v: v["name"]
)
def test_tailscale_response_vectors(vector: dict[str, str]) -> None:
    # protocols.md §3.4: real answers of public servers, matched by transaction id
    txid = TxID.parse(vector["txid"])
    t = StunTransaction(SERVER, txid, stun.binding_request(txid), DEFAULT, 0.0)
    assert t.receive_datagram(bytes.fromhex(vector["hex"]), SERVER, 0.03)
    assert t.result is not None and str(t.result.mapped) == vector["mapped"]


def test_every_transition_is_walked() -> None:
    seen: set[tuple[State, str, State]] = set()

    def walk(feed: bytes | None, **kw: object) -> None:
        log = TraceLog()
        t = txn(tracer=log, **kw)
        if feed is None:
            run_to_end(t)
        else:
            t.receive_datagram(feed, SERVER, 0.1)
        [record] = log.of_kind("transition")
        frm, to = record.detail.split(" -> ")
        seen.add((State(frm), str(record.reason), State(to)))

    walk(stun.binding_response(TXID, MAPPED))
    walk(stun.binding_request(TXID), answer="request")
    walk(stun.error_response(TXID, stun.Method.BINDING, 400, "Bad Request"))
    walk(stun.Message(stun.Class.SUCCESS, stun.Method.BINDING, TXID, ()).encode())
    walk(None)
    assert seen == set(TRANSITIONS)


@given(st.binary(max_size=200))
def test_garbage_never_raises(data: bytes) -> None:
    t = txn()
    t.receive_datagram(data, SERVER, 0.1)
    assert t.state in (State.WAITING, State.ANSWERED, State.FAILED)
    assert sum(t.drops.values()) + (1 if t.done else 0) == 1
