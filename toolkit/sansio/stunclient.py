"""One STUN Binding transaction, sans-IO: RFC 8489 §6.2.1 retransmissions and answer matching.

A :class:`StunTransaction` owns one request (the bytes and its transaction id) sent to one server.
The caller owns the socket and the clock: it sends what :meth:`~StunTransaction.datagrams_to_send`
returns, feeds every datagram that arrives to :meth:`~StunTransaction.receive_datagram` and calls
:meth:`~StunTransaction.handle_timer` when :meth:`~StunTransaction.get_timer` is due.

Retransmissions follow RFC 8489 §6.2.1 exactly: the first request goes out at once, the next ones
after RTO, 2 RTO, 4 RTO, ... until Rc requests are out, and the transaction fails Rm x RTO after the
last one. With the defaults (RTO 0.5 s, Rc 7, Rm 16) requests leave at 0, 0.5, 1.5, 3.5, 7.5, 15.5
and 31.5 s and the transaction gives up at 39.5 s. The deadlines are computed from the first send,
so a driver whose timer fires late does not stretch the schedule (and one that wakes very late
sends one request for all the missed ones).

Answers are matched like Tailscale's netcheck does (protocols.md §3.3): a STUN message with the
same transaction id; the mapped address is XOR-MAPPED-ADDRESS, else the pre-RFC 0x8020 one, else
MAPPED-ADDRESS. A Binding error response ends the transaction with its ERROR-CODE (RFC 8489 §6.3.4).
Anything else (not STUN, another transaction id, another method, a bad FINGERPRINT, a duplicate
answer to a retransmission) is dropped, counted in :attr:`~StunTransaction.drops` and traced.

RTT: which of several retransmitted requests an answer belongs to cannot be known (Karn's problem).
:attr:`TransactionResult.rtt` is measured from the *last* request sent before the answer came, so it
is exact when there was one request and a lower bound of the true round trip otherwise;
:attr:`TransactionResult.karn_rtt` is the strict Karn sample (None after a retransmission).

For RFC 5780 hairpinning (§4.5) the answer is the request itself coming back through the NAT:
``answer="request"`` makes a Binding *request* with the same transaction id the answer.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from toolkit.codec import stun
from toolkit.errors import DecodeError
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID


class State(enum.Enum):
    WAITING = "waiting"
    ANSWERED = "answered"
    FAILED = "failed"
    TIMED_OUT = "timed out"


# edge labels
SUCCESS = "success response"
HAIRPINNED = "own request came back"
ERROR = "error response"
NO_MAPPED = "success without a mapped address"
NO_ANSWER = "no answer after Rc requests"

#: Every transition a transaction can take: (from, label, to).
TRANSITIONS: tuple[tuple[State, str, State], ...] = (
    (State.WAITING, SUCCESS, State.ANSWERED),
    (State.WAITING, HAIRPINNED, State.ANSWERED),
    (State.WAITING, ERROR, State.FAILED),
    (State.WAITING, NO_MAPPED, State.FAILED),
    (State.WAITING, NO_ANSWER, State.TIMED_OUT),
)


def retransmit_schedule(timing: Timing) -> tuple[tuple[float, ...], float]:
    """The send offsets of the Rc requests and the give-up offset, from the first send (RFC 8489 §6.2.1)."""
    sends: list[float] = []
    at, rto = 0.0, timing.stun_rto
    for _ in range(max(1, timing.stun_rc)):
        sends.append(at)
        at += rto
        rto *= 2  # "the client MUST double the value of the RTO after each retransmission"
    return tuple(sends), sends[-1] + timing.stun_rm * timing.stun_rto


@dataclass(frozen=True, slots=True)
class TransactionResult:
    """The answer: ``mapped`` (None for a hairpinned request), its ``source``, the decoded ``message``.

    ``rtt`` runs from the last request sent to the answer; ``sends`` is how many requests went out.
    """

    mapped: Endpoint | None
    rtt: float
    message: stun.Message
    source: Endpoint
    sends: int
    at: float

    @property
    def retransmitted(self) -> bool:
        return self.sends > 1

    @property
    def karn_rtt(self) -> float | None:
        """The RTT only when it is unambiguous: one request, one answer (Karn's algorithm)."""
        return None if self.retransmitted else self.rtt


@dataclass(frozen=True, slots=True)
class TransactionFailure:
    """Why a transaction ended without a result.

    ``kind`` is ``timeout`` (no answer after Rc requests and the last Rm x RTO wait), ``error`` (a
    Binding error response: ``code``, ``reason`` and, for 420, the ``unknown`` attribute types) or
    ``bad-response`` (a success response without a mapped address).
    """

    kind: Literal["timeout", "error", "bad-response"]
    reason: str
    sends: int
    at: float
    code: int | None = None
    unknown: tuple[int, ...] = ()
    message: stun.Message | None = None
    source: Endpoint | None = None

    def describe(self) -> str:
        if self.kind == "timeout":
            return f"no answer after {self.sends} request{'s' if self.sends != 1 else ''}"
        if self.kind == "error":
            return f"error response {self.reason}"
        return self.reason


class StunTransaction:
    """One Binding request to ``server`` and its retransmissions until an answer or the give-up time."""

    def __init__(
        self,
        server: Endpoint,
        txid: TxID,
        request: bytes,
        timing: Timing = DEFAULT,
        now: float = 0.0,
        *,
        answer: Literal["response", "request"] = "response",
        tracer: Tracer | None = None,
        node: str = "stun",
    ) -> None:
        self.server = server
        self.txid = txid
        self.request = bytes(request)
        self.answer = answer
        self.started = now
        self.state = State.WAITING
        self.result: TransactionResult | None = None
        self.failed: TransactionFailure | None = None
        self.drops: Counter[str] = Counter()
        self.sends = 0
        self.last_send = now
        offsets, give_up = retransmit_schedule(timing)
        self._deadlines = [now + off for off in offsets]  # send times still to come, first one now
        self._give_up = now + give_up
        self._outbox: list[tuple[bytes, Endpoint]] = []
        self._tracer = tracer
        self._node = node
        self._send(now)

    # --- outputs -----------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state is not State.WAITING

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due: the next retransmission, or the give-up time."""
        if self.done:
            return None
        return self._deadlines[0] if self._deadlines else self._give_up

    @property
    def give_up_at(self) -> float:
        return self._give_up

    # --- inputs ------------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Retransmit or give up when due. A driver that wakes late sends one request, not a burst:
        the sends whose time has passed collapse into one, and past the give-up time none is sent."""
        due = self.get_timer()
        if due is None or due > now:
            return
        if now >= self._give_up:
            self._fail(TransactionFailure("timeout", "no answer", self.sends, now), NO_ANSWER, now)
            return
        while len(self._deadlines) > 1 and self._deadlines[1] <= now:
            self._deadlines.pop(0)
        self._send(now)

    def receive_datagram(self, data: bytes, src: Endpoint, now: float) -> bool:
        """Feed a datagram; True if it was this transaction's answer (then :attr:`done` is True)."""
        if not stun.is_stun(data):
            return self._drop("not-stun", data, src, now)
        try:
            msg = stun.decode(data)
        except DecodeError as exc:
            return self._drop(f"undecodable-{exc.reason}", data, src, now)
        if msg.txid != self.txid:
            return self._drop("wrong-txid", data, src, now)
        if msg.method != stun.Method.BINDING:
            return self._drop("wrong-method", data, src, now)
        if self.done:
            return self._drop("late", data, src, now)  # e.g. the answer to a retransmission
        if stun.verify_fingerprint(data) is False:
            return self._drop("bad-fingerprint", data, src, now)  # RFC 8489 §7.3: discard silently
        if self.answer == "request":
            if msg.msg_class is not stun.Class.REQUEST:
                return self._drop("not-a-request", data, src, now)
            self._trace("received", now, "own Binding request came back", src, data)
            self._succeed(TransactionResult(None, now - self.last_send, msg, src, self.sends, now), HAIRPINNED, now)
            return True
        if msg.msg_class is stun.Class.SUCCESS:
            self._trace("received", now, msg.summary(), src, data)
            if msg.mapped_endpoint is None:
                failure = TransactionFailure(
                    "bad-response",
                    "success response without a mapped address",
                    self.sends,
                    now,
                    message=msg,
                    source=src,
                )
                self._fail(failure, NO_MAPPED, now)
            else:
                result = TransactionResult(msg.mapped_endpoint, now - self.last_send, msg, src, self.sends, now)
                self._succeed(result, SUCCESS, now)
            return True
        if msg.msg_class is stun.Class.ERROR:
            self._trace("received", now, msg.summary(), src, data)
            err = msg.get(stun.ErrorCode)
            unknown = msg.get(stun.UnknownAttributes)
            failure = TransactionFailure(
                "error",
                err.describe() if err is not None else "without ERROR-CODE",
                self.sends,
                now,
                code=err.code if err is not None else None,
                unknown=unknown.types if unknown is not None else (),
                message=msg,
                source=src,
            )
            self._fail(failure, ERROR, now)
            return True
        return self._drop("not-a-response", data, src, now)

    # --- internals ---------------------------------------------------------------------------------

    def _send(self, now: float) -> None:
        self._deadlines.pop(0)
        self.sends += 1
        self.last_send = now
        self._outbox.append((self.request, self.server))
        if self._tracer is not None:
            what = "Binding request" if self.sends == 1 else f"Binding request, retransmission {self.sends - 1}"
            self._trace("sent", now, f"{what} txid {self.txid.short()}", self.server, self.request)

    def _succeed(self, result: TransactionResult, label: str, now: float) -> None:
        self.result = result
        self._move(State.ANSWERED, label, now)

    def _fail(self, failure: TransactionFailure, label: str, now: float) -> None:
        self.failed = failure
        self._move(State.FAILED if failure.kind != "timeout" else State.TIMED_OUT, label, now)

    def _move(self, to: State, label: str, now: float) -> None:
        assert (self.state, label, to) in TRANSITIONS, (self.state, label, to)
        if self._tracer is not None:
            self._tracer(
                TraceRecord(now, self._node, None, "transition", f"{self.state.value} -> {to.value}", reason=label)
            )
        self.state = to
        self._deadlines.clear()

    def _drop(self, reason: str, data: bytes, src: Endpoint, now: float) -> bool:
        self.drops[reason] += 1
        self._trace("dropped", now, f"{len(data)} bytes", src, data, reason)
        return False

    def _trace(
        self,
        kind: Literal["sent", "received", "dropped"],
        now: float,
        detail: str,
        ep: Endpoint,
        raw: bytes,
        reason: str | None = None,
    ) -> None:
        if self._tracer is not None:
            self._tracer(TraceRecord(now, self._node, None, kind, detail, reason=reason, raw=raw, endpoint=ep))


__all__ = [
    "State",
    "StunTransaction",
    "TRANSITIONS",
    "TransactionFailure",
    "TransactionResult",
    "retransmit_schedule",
]
