"""Many STUN transactions over named local sockets: the mechanics under RFC 5780 behaviour discovery.

A :class:`ProbeRunner` runs :class:`Probe` s, each one :class:`~toolkit.sansio.stunclient.StunTransaction`
(RFC 8489 §6.2.1 retransmissions) sent from a named local socket, whose answer must arrive on a
named socket (usually the same one; RFC 5780 §4.5 hairpinning and §4.6 RESPONSE-PORT probes expect
it on another). It routes every received datagram by transaction id and socket, keeps the timers,
collects the datagrams to send and turns each finished probe into an
:class:`~toolkit.sansio.natreport.Evidence` record. What a finished probe *means* is decided by the
subclass in :meth:`ProbeRunner._finished` (:class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery`).

Datagrams that are not STUN, carry an unknown transaction id, come after their probe finished or
arrive on the wrong socket are dropped, counted in :attr:`ProbeRunner.drops` and traced.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from toolkit.codec import stun
from toolkit.sansio.natreport import Evidence
from toolkit.sansio.stunclient import StunTransaction
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A datagram to send from the local socket named ``socket`` to ``dest``."""

    socket: str
    data: bytes
    dest: Endpoint


@dataclass(slots=True, eq=False)
class Probe:
    """One running test: its name, sending and answering sockets, what it carried, its transaction."""

    name: str
    socket: str
    answer_socket: str
    attributes: tuple[str, ...]
    txn: StunTransaction
    tag: object = None  # the subclass's own bookkeeping (a lifetime binding)
    answered_on: str | None = None  # the socket the answer came in on


class ProbeRunner(abc.ABC):
    """Runs probes; subclasses implement :meth:`_finished` (and may add timers with :meth:`_extra_timer`)."""

    def __init__(
        self,
        *,
        rng: Callable[[int], bytes],
        timing: Timing = DEFAULT,
        software: str | None = "natkit",
        tracer: Tracer | None = None,
        node: str = "stun",
    ) -> None:
        self.drops: Counter[str] = Counter()
        self.evidence: list[Evidence] = []
        self.locals: dict[str, Endpoint] = {}
        self._rng, self._timing, self._software = rng, timing, software
        self._tracer, self._node = tracer, node
        self._active: dict[bytes, Probe] = {}
        self._finished_ids: set[bytes] = set()
        self._outbox: list[Outgoing] = []

    # --- inputs ------------------------------------------------------------------------------------

    def socket_bound(self, socket: str, local: Endpoint) -> None:
        """The driver opened ``socket`` at ``local`` (a specific address, not 0.0.0.0)."""
        self.locals[socket] = local

    def receive_datagram(self, socket: str, data: bytes, src: Endpoint, now: float) -> None:
        if not stun.is_stun(data):
            self._drop("not-stun", socket, data, src, now)
            return
        txid = bytes(data[8:20])
        probe = self._active.get(txid)
        if probe is None:
            self._drop("late" if txid in self._finished_ids else "unknown-txid", socket, data, src, now)
            return
        if socket not in (probe.answer_socket, probe.socket):
            self._drop("wrong-socket", socket, data, src, now)
            return
        # on the sending socket although expected elsewhere: an error response, or a server that
        # ignored RESPONSE-PORT; the transaction still ends, and the subclass sees ``answered_on``
        if probe.txn.receive_datagram(data, src, now):
            probe.answered_on = socket
        if probe.txn.done:
            self._retire(probe)
            self._finished(probe, now)
        self._collect()

    def handle_timer(self, now: float) -> None:
        for probe in list(self._active.values()):
            if probe.txn.txid.raw in self._active:  # not cancelled by a probe finished earlier in this loop
                probe.txn.handle_timer(now)
                if probe.txn.done:
                    self._retire(probe)
                    self._finished(probe, now)
        self._timer_due(now)
        self._collect()

    # --- outputs -----------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[Outgoing]:
        self._collect()
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> float | None:
        times = [t for probe in self._active.values() if (t := probe.txn.get_timer()) is not None]
        extra = self._extra_timer()
        if extra is not None:
            times.append(extra)
        return min(times) if times else None

    def sockets(self) -> tuple[str, ...]:
        """The names of the sockets the driver reported (it may close them all at the end)."""
        return tuple(self.locals)

    # --- for subclasses ----------------------------------------------------------------------------

    @abc.abstractmethod
    def _finished(self, probe: Probe, now: float) -> None:
        """Provided by the subclass."""

    def _extra_timer(self) -> float | None:
        return None

    def _timer_due(self, now: float) -> None:
        return None

    def _begin(
        self,
        name: str,
        socket: str,
        dest: Endpoint,
        now: float,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        response_port: int | None = None,
        answer_socket: str | None = None,
        answer: Literal["response", "request"] = "response",
        tag: object = None,
    ) -> Probe:
        """Start a Binding transaction from ``socket`` to ``dest`` (RFC 5780 §7.2, §7.5 attributes)."""
        txid = TxID(self._rng(12))
        request = stun.binding_request(
            txid, software=self._software, change_ip=change_ip, change_port=change_port, response_port=response_port
        )
        attrs: list[str] = []
        if change_ip or change_port:
            what = " and ".join(w for w, on in (("IP", change_ip), ("port", change_port)) if on)
            attrs.append(f"CHANGE-REQUEST change {what}")
        if response_port is not None:
            attrs.append(f"RESPONSE-PORT {response_port}")
        node = f"{self._node} {socket}"
        txn = StunTransaction(dest, txid, request, self._timing, now, answer=answer, tracer=self._tracer, node=node)
        probe = Probe(name, socket, answer_socket or socket, tuple(attrs), txn, tag)
        self._active[txid.raw] = probe
        return probe

    def _cancel(self, probe: Probe) -> bool:
        """Stop a running probe; False if it had already finished."""
        if probe.txn.txid.raw not in self._active:
            return False
        self._retire(probe)
        return True

    def _cancel_all(self) -> None:
        for probe in list(self._active.values()):
            self._retire(probe)

    def _record(self, probe: Probe, note: str = "", *, outcome: str | None = None, wait: float | None = None) -> None:
        """Keep what ``probe`` sent and what came back as an :class:`Evidence` record."""
        txn, r, failed = probe.txn, probe.txn.result, probe.txn.failed
        if outcome is None:
            kind = failed.kind if failed is not None else None
            outcome = {None: "answered", "timeout": "no answer", "error": "error response"}.get(kind, "bad response")
        msg = r.message if r is not None else failed.message if failed is not None else None
        origin = msg.get(stun.ResponseOrigin) if msg is not None else None
        other = msg.get(stun.OtherAddress) if msg is not None else None
        source = r.source if r is not None else failed.source if failed is not None else None
        self.evidence.append(
            Evidence(
                test=probe.name,
                socket=probe.socket,
                local=self.locals.get(probe.socket),
                sent_to=txn.server,
                attributes=probe.attributes,
                outcome=outcome,
                sends=txn.sends,
                started=txn.started,
                received_on=probe.answered_on,
                source=source,
                mapped=r.mapped if r is not None else None,
                response_origin=origin.endpoint if origin is not None else None,
                other_address=other.endpoint if other is not None else None,
                rtt=r.rtt if r is not None else None,
                error=failed.reason if failed is not None and failed.kind == "error" else None,
                wait=wait,
                note=note,
            )
        )

    # --- internals ---------------------------------------------------------------------------------

    def _retire(self, probe: Probe) -> None:
        for data, dest in probe.txn.datagrams_to_send():  # a retransmission queued in the same call
            self._outbox.append(Outgoing(probe.socket, data, dest))
        self._active.pop(probe.txn.txid.raw, None)
        self._finished_ids.add(probe.txn.txid.raw)

    def _collect(self) -> None:
        for probe in self._active.values():
            for data, dest in probe.txn.datagrams_to_send():
                self._outbox.append(Outgoing(probe.socket, data, dest))

    def _drop(self, reason: str, socket: str, data: bytes, src: Endpoint, now: float) -> None:
        self.drops[reason] += 1
        if self._tracer is not None:
            node = f"{self._node} {socket}"
            self._tracer(TraceRecord(now, node, None, "dropped", f"{len(data)} bytes", reason, data, src))


__all__ = ["Outgoing", "Probe", "ProbeRunner"]
