"""What PeerFlow follows and judges, sans-IO: its state, PeerPath's events and activity, direct answers, validation.

:class:`FlowFollow` is the base of :class:`~toolkit.sansio.peerflow.PeerFlow` (brief 6 §N1, the seed flowchart
walked for one peer). It builds the wrapped :class:`~toolkit.sansio.peerpath.PeerPath` and the flow's state,
and answers the questions the chart walk asks (:mod:`.peerflow` holds the decision table and the walk):

* Following PeerPath (protocols.md §4.4-§4.8): every discovery round that starts while the flow is not
  direct carries validation bursts to each UDP target (:mod:`.pathcheck`, protocols.md §4.12); a heartbeat
  ping in DirectActive queues the HEARTBEAT edge; a lost path queues HEARTBEAT (a timed-out ping to the
  untrusted best, §4.8) or UNREACHABLE (a send error, a link change, a removed candidate).
* Direct answers: a direct pong (never one over DERP) is remembered per endpoint with its latency; the
  endpoint to validate is a recent (within the trust time), not rejected one: PeerPath's best first, else
  the fastest. TryAltPath is Yes while another candidate answered or a round ping is still out.
* Validation (:meth:`FlowFollow._start_validation`, :meth:`FlowFollow._judge`): a fresh burst unless one
  recent enough already carries the round's answers; PathGood's verdict rejects a failed endpoint in
  PeerPath.
* natkit's "ping back": a disco ping from a candidate whose pongs we lack, while not direct, is answered
  with a ping to it at once (at most every ``disco_ping_interval``).

PeerPath's own ``transition`` records are not forwarded to the tracer (:func:`_without_transitions`), so
every ``transition`` record of a node is a peergraph edge.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable

from toolkit.sansio import peergraph as g
from toolkit.sansio.derphome import region_of
from toolkit.sansio.pathcheck import PathCheck
from toolkit.sansio.peerflow_types import FlowEvent, PathValidated
from toolkit.sansio.peergraph import State
from toolkit.sansio.peerpath import PeerPath
from toolkit.sansio.peerpath_types import (
    Activity,
    DiscoveryStarted,
    Event,
    HeartbeatSent,
    PathLost,
    PingReceived,
    PingTimedOut,
    PongReceived,
    Purpose,
)
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey

S = State
_MIGRATED = frozenset((S.MigrateDirect, S.MonitorDirect, S.DirectStable, S.DirectActive))


class FlowFollow:
    """The flow's state around one :class:`PeerPath` (``path``); :class:`~toolkit.sansio.peerflow.PeerFlow` walks."""

    def __init__(
        self,
        peer: DiscoPublicKey,
        rng: Callable[[int], bytes],
        *,
        node_key: NodePublicKey | None = None,
        peer_node: NodePublicKey | None = None,
        derp_region: int | None = None,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        node: str = "peerflow",
    ) -> None:
        self.timing, self.tracer, self.node = timing, tracer, node
        self.trace_peer = peer_node if peer_node is not None else peer
        path_tracer = None if tracer is None else _without_transitions(tracer)
        self.path = PeerPath(
            peer, rng, node_key=node_key, derp_region=derp_region, timing=timing,
            tracer=path_tracer, node=node, trace_peer=self.trace_peer,
        )  # fmt: skip
        self.state = S.Start
        self.walked: list[State] = [S.Start]
        self.time_direct: float | None = None
        self.mtu: int | None = None
        self.validated: PathValidated | None = None
        self.derp_up = False
        self.peer_endpoints: tuple[Endpoint, ...] = ()
        self.rounds = 0
        self._round_end = self._try_end = self._upgrade_at = 0.0
        self._answered: dict[Endpoint, tuple[float, float]] = {}  # direct pongs: endpoint -> (at, latency)
        self.check = PathCheck(self.path, timing)  # the validation bursts
        self._validating: Endpoint | None = None
        self._ping_back_at: dict[Endpoint, float] = {}
        self._pending: str | None = None  # an edge out of DirectActive / StayOnDERP waiting to be taken
        self._migrating = False  # between MigrateDirect and the DirectActive it leads to
        self._events: deque[FlowEvent] = deque()
        self.wanted = False  # a packet, a CLI ping or the peer's disco asked for a direct path

    # --- queries ---------------------------------------------------------------------------------------

    @property
    def counters(self) -> Counter[str]:
        return self.path.counters

    @property
    def drops(self) -> Counter[str]:
        return self.path.drops

    @property
    def latency(self) -> float | None:
        return self.path.best.latency if self.path.best is not None else None

    @property
    def migrated(self) -> bool:
        return self.state in _MIGRATED

    # --- answers, validation -----------------------------------------------------------------------

    def _answer(self, now: float) -> Endpoint | None:
        """The endpoint to validate: a recent direct pong's, not rejected; PeerPath's best first, else the fastest."""
        recent = {
            ep: lat
            for ep, (at, lat) in self._answered.items()
            if now - at < self.timing.trust_udp_addr_duration and ep not in self.path.rejected
        }
        if not recent:
            return None
        best = self.path.best
        if best is not None and best.endpoint in recent:
            return best.endpoint
        return min(recent, key=lambda ep: recent[ep])

    def _alternatives(self, now: float) -> bool:
        if self._answer(now) is not None:
            return True
        out = [
            sp.at + self.timing.ping_timeout
            for sp in self.path.sent_pings.values()
            if sp.purpose is Purpose.DISCOVERY and sp.to not in self.path.rejected and region_of(sp.to) is None
        ]
        if out:
            self._round_end = max(self._round_end, max(out))
        return bool(out)

    def _start_validation(self, now: float) -> None:
        ep = self._answer(now)
        assert ep is not None  # AnalyzeResponses said Yes
        self._validating = ep
        at, latency = self._answered[ep]
        burst = self.check.burst_for(ep)
        # no recent burst, or one that left before the ping this pong answers (the ping-back case: the
        # peer's NAT opened after the round's burst hit it, so that burst proves nothing): send one now
        stale = burst is not None and not burst.answered and burst.sent_at < at - latency
        if burst is None or stale or now - burst.sent_at >= self.timing.ping_timeout:
            burst = self.check.send(ep, now)
        burst.note_first_pong(now, latency, self.timing.validate_wait_min)

    def _judge(self, now: float) -> bool:
        ep = self._validating
        assert ep is not None
        result = self.check.judge(ep, self._answered.get(ep, (now, 0.0))[1])
        self.validated = result
        self._events.append(result)
        self._validating = None
        if result.good:
            self.mtu = result.mtu
        else:
            self.path.reject(ep, now)
            self._answered.pop(ep, None)
        return result.good

    # --- following PeerPath ------------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        for note in self.path.take_activity():
            self._on_activity(note, now)
        while (event := self.path.next_event()) is not None:
            self._events.append(event)
            self._on_event(event, now)

    def _on_activity(self, note: Activity, now: float) -> None:
        if isinstance(note, DiscoveryStarted):
            if not self.migrated:
                for ep in note.targets:
                    if region_of(ep) is None:
                        self.check.send(ep, now)
            if self.state is S.MultiProbe:
                self._round_end = max(self._round_end, now + self.timing.ping_timeout)
        elif isinstance(note, HeartbeatSent) and self.state is S.DirectActive and self._pending is None:
            self._pending = g.HEARTBEAT

    def _on_event(self, event: Event, now: float) -> None:
        if isinstance(event, PongReceived):
            if region_of(event.src) is not None or region_of(event.to) is not None:
                return
            if event.to not in self._answered or now - self._answered[event.to][0] >= self.timing.ping_timeout:
                self._answered[event.to] = (now, event.latency)
            self.check.pong(event, now)
        elif isinstance(event, PingTimedOut):
            self.check.timed_out(event)
        elif isinstance(event, PingReceived):
            self._maybe_ping_back(event.src, now)
        elif isinstance(event, PathLost) and self.state is S.DirectActive:
            # §4.8: a timed-out ping to the untrusted best is what monitoring detects (DirectStable No);
            # a send error, a link change or a removed candidate is the UNREACHABLE extension.
            self._pending = g.HEARTBEAT if event.reason == "ping to best timed out" else g.UNREACHABLE

    def _maybe_ping_back(self, src: Endpoint, now: float) -> None:
        if self.migrated or self.state is S.Start or region_of(src) is not None or src not in self.path.candidates:
            return
        if self._answer(now) == src or now - self._ping_back_at.get(src, -1e18) < self.timing.disco_ping_interval:
            return
        self._ping_back_at[src] = now
        self.path.probe(src, now, purpose=Purpose.DISCOVERY)
        self.check.send(src, now, fresh=True)

    def _set_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        self.peer_endpoints = tuple(dict.fromkeys(endpoints))
        self.path.set_endpoints(self.peer_endpoints, now)


def _without_transitions(tracer: Tracer) -> Tracer:
    def forward(record: TraceRecord) -> None:
        if record.kind != "transition":
            tracer(record)

    return forward


__all__ = ["FlowFollow"]
