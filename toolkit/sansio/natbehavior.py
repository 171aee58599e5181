"""RFC 5780 NAT behaviour discovery as a sans-IO state machine (mapping, filtering, hairpinning, lifetime).

The caller owns the sockets and the clock. The machine names the local socket each request leaves
from (``mapping``, ``filtering``, ``hairpin``, ``lifetime-N``, ``lifetime-probe``); the driver opens
a socket when a name first appears, bound to the local address the server is reached from, reports
it with :meth:`~toolkit.sansio.stunprobes.ProbeRunner.socket_bound` and feeds every datagram with
the socket's name. Each request is a :class:`~toolkit.sansio.stunclient.StunTransaction` (RFC 8489
§6.2.1), so "no answer" means Rc requests and the final wait went by. The tests (their graph is
:data:`toolkit.sansio.natgraph.TRANSITIONS`):

* Test I (RFC 5780 §4.3): socket ``mapping`` asks the primary address. No answer: UDP is blocked.
  The answer gives the mapped address and OTHER-ADDRESS; mapped = local means there is no NAT.
* Mapping tests II and III (§4.3): the same socket asks the other IP with the primary port, then the
  other IP and port. Same mapped address as test I: endpoint-independent; test III equal to test II:
  address-dependent; otherwise address-and-port-dependent.
* Filtering tests II and III (§4.4), from a fresh socket ``filtering``: the mapping tests opened
  the NAT's filter towards both server addresses from ``mapping``, so RFC 5780's "test I socket"
  would see answers a real stranger could not send. CHANGE-REQUEST(IP and port) answered from the
  other address: endpoint-independent; else CHANGE-REQUEST(port) answered from the other port:
  address-dependent; else address-and-port-dependent. An answer from an address other than the one
  asked for means the server ignores CHANGE-REQUEST, and the filtering stays unknown.
* Hairpinning (§4.5), optional: socket ``hairpin`` sends a Binding request to the mapped address of
  ``mapping``; if ``mapping`` receives that request, the NAT hairpins.
* Mapping lifetime (§4.6), optional: sockets ``lifetime-1..N`` each open a binding at once; binding
  i is left idle for the i-th wait of a geometric ladder (``lifetime_start`` x ``lifetime_step``^k up
  to ``max_lifetime``), then ``lifetime-probe`` asks the server to answer to its mapped port
  (RESPONSE-PORT); an answer on ``lifetime-i`` means it survived. The ladder is the base class
  :class:`~toolkit.sansio.natlifetime.LifetimeLadder`, whose docstring has the details.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# fmt: off
# isort: off
from toolkit.codec import stun
from toolkit.sansio.natgraph import (
    ANSWERED, BEHIND_NAT, ERROR, HAIRPINNED, NEW, NO_ANSWER, NO_NAT, NOT_5780, SAME, STARTED, TRANSITIONS,
    WRONG_SOURCE, Edge, State,
)
# isort: on
# fmt: on
from toolkit.sansio.natlifetime import Binding, LifetimeLadder, lifetime_waits
from toolkit.sansio.natreport import Behavior, NatReport
from toolkit.sansio.stunprobes import Outgoing, Probe
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

MAPPING, FILTERING, HAIRPIN = "mapping", "filtering", "hairpin"


@dataclass(slots=True)
class _Findings:
    udp_blocked: bool = False
    behind_nat: bool | None = None
    mapping: Behavior | None = None
    filtering: Behavior | None = None
    hairpinning: bool | None = None


class NatBehaviorDiscovery(LifetimeLadder):
    """RFC 5780 §4 discovery against the STUN server at ``server`` (its primary address).

    ``rng(n)`` returns n random bytes (transaction ids). Call :meth:`start`, then feed datagrams
    (:meth:`receive_datagram`) and timers (:meth:`handle_timer`) and send what
    :meth:`datagrams_to_send` returns until :attr:`done`; :attr:`report` is the verdict and its
    evidence. :attr:`path` is the list of edges taken, every one of them in :data:`TRANSITIONS`.
    """

    def __init__(
        self,
        server: Endpoint,
        *,
        rng: Callable[[int], bytes],
        timing: Timing = DEFAULT,
        hairpin: bool = False,
        lifetime: bool = False,
        max_lifetime: float = 60.0,
        lifetime_start: float = 1.0,
        lifetime_step: float = 1.2,
        software: str | None = "natkit",
        tracer: Tracer | None = None,
        node: str = "nat-type",
    ) -> None:
        waits = lifetime_waits(lifetime_start, lifetime_step, max_lifetime) if lifetime else ()
        super().__init__(waits=waits, rng=rng, timing=timing, software=software, tracer=tracer, node=node)
        self.server = server
        self.state = State.START
        self.path: list[Edge] = []
        self.report: NatReport | None = None
        self._hairpin, self._lifetime = hairpin, lifetime
        self._mapped: list[Endpoint | None] = []  # the mapped address of mapping tests I, II, III
        self._other: Endpoint | None = None
        self._server_software: str | None = None
        self._found = _Findings()

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def start(self, now: float) -> None:
        if self.state is not State.START:
            raise RuntimeError("discovery already started")
        self._move(STARTED, State.TEST_I, now)
        self._begin("mapping test I", MAPPING, self.server, now)

    # --- test I, mapping (RFC 5780 §4.3) -------------------------------------------------------------

    def _finished(self, probe: Probe, now: float) -> None:
        if isinstance(probe.tag, Binding):
            self._on_lifetime(probe, probe.tag, now)
        elif self.state is State.TEST_I:
            self._on_test_i(probe, now)
        elif self.state in (State.MAPPING_II, State.MAPPING_III):
            self._on_mapping(probe, now)
        elif self.state in (State.FILTERING_II, State.FILTERING_III):
            self._on_filtering(probe, now)
        elif self.state is State.HAIRPIN:
            self._on_hairpin(probe, now)

    def _on_test_i(self, probe: Probe, now: float) -> None:
        r = probe.txn.result
        if r is None:
            failed = probe.txn.failed
            self._found.udp_blocked = failed is not None and failed.kind == "timeout"
            if self._found.udp_blocked:
                self._record(probe, "nothing came back: UDP is blocked, or no STUN server listens there")
            else:
                self._record(probe, "the server refused a plain Binding request")
                self._notes.append(f"the server answered test I with {failed.describe() if failed else 'nothing'}")
            self._finish_run(NO_ANSWER if self._found.udp_blocked else ERROR, now)
            return
        self._mapped.append(r.mapped)
        self._server_software = r.message.software
        other = r.message.get(stun.OtherAddress)
        local = self.locals.get(MAPPING)
        self._found.behind_nat = None if local is None else r.mapped != local
        if local is None:
            self._notes.append("the driver did not say which local address socket 'mapping' has: NAT unknown")
        if other is None:
            self._record(probe, "no OTHER-ADDRESS: the server does not do RFC 5780 behaviour discovery")
            self._notes.append("no OTHER-ADDRESS: mapping and filtering need an RFC 5780 server with two addresses")
            if self._lifetime:
                self._notes.append("the lifetime test needs RESPONSE-PORT (RFC 5780): skipped")
                self._lifetime = False
            if self._hairpin:
                self._move(NOT_5780, State.HAIRPIN, now)
                self._begin_hairpin(now)
            else:
                self._finish_run(NOT_5780, now)
            return
        self._other = other.endpoint
        if local is not None and r.mapped == local:
            self._record(probe, "mapped address = local address: no NAT on the way")
            self._found.mapping = Behavior.ENDPOINT_INDEPENDENT
            self._move(NO_NAT, State.FILTERING_II, now)
            self._begin_filtering(now)
            return
        self._record(probe, "mapped address differs from the local one: behind a NAT")
        self._move(BEHIND_NAT, State.MAPPING_II, now)
        # Test II: the other IP with the primary port
        self._begin("mapping test II", MAPPING, Endpoint(other.endpoint.ip, self.server.port), now)

    def _on_mapping(self, probe: Probe, now: float) -> None:
        r = probe.txn.result
        ii = self.state is State.MAPPING_II
        if r is None:
            self._record(probe, "mapping unknown: the other address did not answer")
            failed = probe.txn.failed
            self._move(NO_ANSWER if failed is None or failed.kind == "timeout" else ERROR, State.FILTERING_II, now)
            self._begin_filtering(now)
            return
        before = self._mapped[-1]
        self._mapped.append(r.mapped)
        if r.mapped == before:
            self._record(probe, f"same mapped address as test {'I' if ii else 'II'}")
            self._found.mapping = Behavior.ENDPOINT_INDEPENDENT if ii else Behavior.ADDRESS_DEPENDENT
            self._move(SAME, State.FILTERING_II, now)
            self._begin_filtering(now)
        elif ii:
            self._record(probe, "new mapped address for another destination IP")
            self._move(NEW, State.MAPPING_III, now)
            assert self._other is not None
            self._begin("mapping test III", MAPPING, self._other, now)  # the other IP and the other port
        else:
            self._record(probe, "new mapped address for another destination port")
            self._found.mapping = Behavior.ADDRESS_AND_PORT_DEPENDENT
            self._move(NEW, State.FILTERING_II, now)
            self._begin_filtering(now)

    # --- filtering (RFC 5780 §4.4), hairpinning (§4.5) ---------------------------------------------

    def _begin_filtering(self, now: float) -> None:
        if self.state is State.FILTERING_II:
            self._begin("filtering test II", FILTERING, self.server, now, change_ip=True, change_port=True)
        else:
            self._begin("filtering test III", FILTERING, self.server, now, change_port=True)

    def _on_filtering(self, probe: Probe, now: float) -> None:
        ii = self.state is State.FILTERING_II
        assert self._other is not None
        expected = self._other if ii else Endpoint(self.server.ip, self._other.port)
        r, failed = probe.txn.result, probe.txn.failed
        if r is not None and r.source == expected:
            self._record(probe, f"the answer from {expected} came through")
            self._found.filtering = Behavior.ENDPOINT_INDEPENDENT if ii else Behavior.ADDRESS_DEPENDENT
            label = ANSWERED
        elif r is not None or (failed is not None and failed.kind == "bad-response"):
            source = r.source if r is not None else failed.source if failed is not None else None
            self._record(probe, f"the answer came from {source}, not {expected}: the server ignores CHANGE-REQUEST")
            self._notes.append("the server ignored CHANGE-REQUEST: filtering unknown")
            label = WRONG_SOURCE
        elif failed is not None and failed.kind == "error":
            self._record(probe, "the server refused CHANGE-REQUEST: filtering unknown")
            label = ERROR
        elif ii:
            self._record(probe, f"nothing came from {expected}: the filter looks at the address")
            self._move(NO_ANSWER, State.FILTERING_III, now)
            self._begin_filtering(now)
            return
        else:
            self._record(probe, f"nothing came from {expected}: the filter looks at address and port")
            self._found.filtering = Behavior.ADDRESS_AND_PORT_DEPENDENT
            label = NO_ANSWER
        if self._hairpin:
            self._move(label, State.HAIRPIN, now)
            self._begin_hairpin(now)
        elif self._lifetime:
            self._move(label, State.LIFETIME, now)
            self._begin_lifetime(now)
        else:
            self._finish_run(label, now)

    def _begin_hairpin(self, now: float) -> None:
        mapped = self._mapped[0]
        assert mapped is not None
        self._begin("hairpinning", HAIRPIN, mapped, now, answer_socket=MAPPING, answer="request")

    def _on_hairpin(self, probe: Probe, now: float) -> None:
        came_back = probe.txn.result is not None
        self._found.hairpinning = came_back
        self._record(probe, "socket 'mapping' received it: the NAT hairpins" if came_back else "it did not come back")
        label = HAIRPINNED if came_back else NO_ANSWER
        if self._lifetime:
            self._move(label, State.LIFETIME, now)
            self._begin_lifetime(now)
        else:
            self._finish_run(label, now)

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _finish_run(self, label: str, now: float) -> None:
        self._move(label, State.DONE, now)
        self._cancel_all()
        f = self._found
        lifetime_min, lifetime_max = self.lifetime_bounds()
        self.report = NatReport(
            server=self.server,
            local=self.locals.get(MAPPING),
            mapped=self._mapped[0] if self._mapped else None,
            other_address=self._other,
            server_software=self._server_software,
            udp_blocked=f.udp_blocked,
            behind_nat=f.behind_nat,
            mapping=f.mapping,
            filtering=f.filtering,
            hairpinning=f.hairpinning,
            lifetime_tested=self._lifetime and bool(self._bindings),
            lifetime_min=lifetime_min,
            lifetime_max=lifetime_max,
            notes=tuple(self._notes),
            tests=tuple(self.evidence),
            path=tuple((e.source.value, e.label, e.target.value) for e in self.path),
        )

    def _move(self, label: str, to: State, now: float) -> None:
        edge = Edge(self.state, label, to)
        if edge not in TRANSITIONS:
            raise AssertionError(f"discovery took an edge that is not in TRANSITIONS: {edge}")
        self.path.append(edge)
        if self._tracer is not None:
            detail = f"{self.state.value} -> {to.value}"
            self._tracer(TraceRecord(now, self._node, None, "transition", detail, reason=label))
        self.state = to


__all__ = ["Edge", "NatBehaviorDiscovery", "Outgoing", "State", "TRANSITIONS", "lifetime_waits"]
