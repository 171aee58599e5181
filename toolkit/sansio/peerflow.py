"""The seed flowchart walked for one peer, sans-IO: :class:`PeerFlow` around magicsock's :class:`PeerPath`.

API (the contract of the node core, brief 6 §N1)::

    PeerFlow(peer: DiscoPublicKey, rng, *, node_key=None, peer_node=None, derp_region=None,
             timing=DEFAULT, tracer=None, node="peerflow")
      # flow inputs
      start(now, *, have_info: bool); info_received(endpoints, derp_region, now); derp_ready(now)
      # PeerPath's API, delegated (every call first runs due timers, then walks the chart)
      receive_message(msg, src, now) -> bool; note_send(now) -> SendPlan; send_plan(now) -> SendPlan
      set_endpoints(endpoints, now); set_my_endpoints(endpoints, now); cli_ping(now) -> list[TxID]
      messages_to_send() -> list[Outgoing]; handle_timer(now); get_timer() -> float | None
      next_event() -> FlowEvent | None   # PeerPath's events + FlowMoved(src, label, dst) + PathValidated
      note_bad_endpoint(endpoint, now); note_connectivity_change(now)
      # queries
      state: State; walked: list[State]; path_kind(now) -> "direct" | "local" | "derp"
      latency: float | None; mtu: int | None; time_direct: float | None; path: PeerPath; counters; drops

The flow takes only edges of :data:`toolkit.sansio.peergraph.TRANSITIONS` (:func:`peergraph.transition`
raises on any other) and traces each one with :meth:`Transition.record`. :class:`PeerPath` stays the only
owner of candidates, pings and trust (protocols.md §4.2-§4.9); the flow adds validation bursts and the
round counting. Decisions (the seed says what, protocols.md §4 says how Tailscale does it, this says how
natkit walks it):

* States that *do* something wait there (QueryControl, TryDirect, StartDERP, MultiProbe, ValidatePath,
  DirectActive, StayOnDERP); decisions are answered at once when their question can be.
* GetInfo: the node knows the peer from the netmap (``have_info``) or waits in QueryControl.
* CheckDirect "Public IP available" iff the peer advertises at least one endpoint and none is private
  (:func:`is_private_endpoint`: RFC 1918, 100.64/10, ULA, link local, loopback). TryDirect pings them all
  at once; DirectSuccess is Yes on a direct pong within ``Timing.try_direct_timeout``, else No.
* StartDERP waits for :meth:`derp_ready`. DERPActive waits for a reason to look for a direct path, as
  magicsock does (§4.4, §4.9: discovery starts when a packet is sent to the peer, or when the peer's
  CallMeMaybe or ping arrives): :meth:`note_send`, :meth:`cli_ping` or a disco message from the peer; a
  FallbackDERP (traffic was flowing) needs none. StartDisco passes on at once (disco runs beside DERP).
  The lazy start matters: the side that sends first pings first, and its ping reaches the peer's router
  before the peer's own packets leave it (the broken router of design.md §5 fails exactly then).
* SendSTUN starts a discovery round (§4.4: every candidate pinged at once, CallMeMaybe over DERP; stale own
  endpoints make PeerPath ask for a re-STUN first: ``EndpointsRefreshWanted``). MultiProbe waits for the
  round: AnalyzeResponses is Yes on the first direct pong, No when the round ran ``Timing.ping_timeout``
  without one. A CallMeMaybe (§4.9) or PeerPath's own round during MultiProbe extends the round.
  RetryProbes is Yes after ``Timing.disco_retry_rounds`` rounds.
* ValidatePath (natkit's; Tailscale trusts the first pong): every discovery round that starts while the flow
  is not direct carries, to every target, ``validate_probes`` pings padded to 1280 bytes on the wire and one
  padded to 1500 (:mod:`.pathcheck`, protocols.md §4.12). Their answers come with the round's, so validation adds
  no round trip when nothing is lost, and at most ``max(2 RTT, validate_wait_min)`` after the first pong
  otherwise. PathGood: loss ≤ ``validate_max_loss``, latency ≤ ``path_max_latency``, MTU ≥ 1280.
  A failed endpoint is rejected in PeerPath (never its best address) until the next round (RetryProbes),
  StayOnDERP's upgrade interval or a link change; TryAltPath is Yes while another candidate answered or a round ping is still out.
* EstablishDirect makes the validated endpoint PeerPath's best address (betterAddr may have preferred one
  that failed). From MigrateDirect on, PeerPath's plan is used as is (a trusted address means UDP only,
  §4.3); before it, :meth:`send_plan` adds DERP to a UDP-only plan.
* DirectActive: each heartbeat ping (§4.5) walks MonitorDirect → DirectStable (Yes while PeerPath has a
  best address). A ping to the untrusted best that timed out (§4.8) is answered No → FallbackDERP; a send
  error, a link change or a removed candidate takes the UNREACHABLE extension. FallbackDERP → DERPActive
  starts a new attempt (rounds counted from zero).
* StayOnDERP leaves on CALL_ME_MAYBE when one arrives, and on UPGRADE_INTERVAL after
  ``upgrade_udp_direct_interval`` or when one of PeerPath's own rounds (it keeps pinging while traffic
  flows, §4.5) was answered; an unanswered background round does not move the chart. A re-upgrade from
  StayOnDERP is one round.
* natkit's "ping back" (not Tailscale's): a disco ping from a candidate whose pongs we lack, while not
  direct, is answered with a ping to it at once (at most every ``disco_ping_interval``): the peer's ping
  proves its NAT is open towards us, so our ping gets through one round trip later instead of at our
  next round (protocols.md §4.4's 5 s rate limit).
* PeerPath's own ``transition`` records (its coarse DERP/UDP state) are not forwarded to the tracer, so every
  ``transition`` record of a node is a peergraph edge (widgets read them with ``transition_of``).

This module is the decision table and the walk (:meth:`PeerFlow._decide`, :meth:`PeerFlow._enter`); the
flow's state, following PeerPath's events, the direct answers and validation are its base class
:class:`~toolkit.sansio.peerflow_follow.FlowFollow`.
"""

from __future__ import annotations

from collections.abc import Iterable

from toolkit.codec.disco import CallMeMaybe, Message
from toolkit.sansio import peergraph as g
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.peerflow_follow import FlowFollow
from toolkit.sansio.peerflow_types import FlowEvent, FlowMoved, PathKind, is_private_endpoint
from toolkit.sansio.peergraph import State
from toolkit.sansio.peerpath_types import Outgoing, SendPlan
from toolkit.types import Endpoint, TxID

S = State
_PASS_ON = {S.StoreInfo, S.StartDisco, S.SendSTUN, S.EstablishDirect, S.MigrateDirect}
_PASS_ON |= {S.MonitorDirect, S.FallbackDERP}
_MAX_STEPS = 200  # edges in one settle: a loop beyond this is a bug


class PeerFlow(FlowFollow):
    """The per-peer machine of the seed flowchart; wraps one :class:`PeerPath` (``path``, built by the base)."""

    # --- queries -----------------------------------------------------------------------------------

    def send_plan(self, now: float) -> SendPlan:
        """PeerPath's plan (§4.3); before MigrateDirect a UDP-only plan gets DERP too."""
        plan = self.path.send_plan(now)
        if plan.derp is None and not self.migrated and self.path.derp_region is not None:
            return SendPlan(plan.udp, derp_magic_endpoint(self.path.derp_region))
        return plan

    def path_kind(self, now: float) -> PathKind:
        plan = self.send_plan(now)
        if plan.udp is None or plan.derp is not None:
            return "derp"
        return "local" if is_private_endpoint(plan.udp) else "direct"

    def get_timer(self) -> float | None:
        due = [t for t in (self.path.get_timer(), self._flow_timer()) if t is not None]
        return min(due, default=None)

    def next_event(self) -> FlowEvent | None:
        return self._events.popleft() if self._events else None

    def messages_to_send(self) -> list[Outgoing]:
        return self.path.messages_to_send()

    # --- flow inputs -------------------------------------------------------------------------------

    def start(self, now: float, *, have_info: bool) -> None:
        """Start → GetInfo → (Yes) CheckDirect … | (No) QueryControl, which waits for :meth:`info_received`."""
        if self.state is not S.Start:
            return
        self._tick(now)
        self._go(g.NEXT, now)
        self._go(g.YES if have_info else g.NO, now)
        self._settle(now)

    def info_received(self, endpoints: Iterable[Endpoint], derp_region: int | None, now: float) -> None:
        """Control told us the peer's endpoints and home region: QueryControl → StoreInfo → CheckDirect."""
        self._tick(now)
        if derp_region is not None:
            self.path.derp_region = derp_region
        self._set_endpoints(endpoints, now)
        if self.state is S.QueryControl:
            self._go(g.NEXT, now)
        self._settle(now)

    def derp_ready(self, now: float) -> None:
        """The DERP connection to the peer's region is up: StartDERP → DERPActive → StartDisco → …"""
        self.derp_up = True
        self._tick(now)
        self._settle(now)

    # --- PeerPath's API, delegated -----------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        self._tick(now)
        self._set_endpoints(endpoints, now)
        self._settle(now)

    def set_my_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        self._tick(now)
        self.path.set_my_endpoints(endpoints, now)
        self._settle(now)

    def receive_message(self, message: Message, src: Endpoint, now: float) -> bool:
        self._tick(now)
        ok = self.path.receive_message(message, src, now)
        self.wanted |= ok
        if ok and isinstance(message, CallMeMaybe):
            if self.state is S.StayOnDERP:
                self._pending = g.CALL_ME_MAYBE
            elif self.state is S.MultiProbe:
                self._round_end = max(self._round_end, now + self.timing.ping_timeout)
        self._settle(now)
        return ok

    def note_send(self, now: float) -> SendPlan:
        self._tick(now)
        self.wanted = True
        self.path.note_send(now)
        self._settle(now)
        return self.send_plan(now)

    def cli_ping(self, now: float) -> list[TxID]:
        self._tick(now)
        self.wanted = True
        txids = self.path.cli_ping(now)
        self._settle(now)
        return txids

    def handle_timer(self, now: float) -> None:
        self._tick(now)

    def note_bad_endpoint(self, endpoint: Endpoint, now: float) -> None:
        self._tick(now)
        self.path.note_bad_endpoint(endpoint, now)
        self._answered.pop(endpoint, None)
        self._settle(now)

    def note_connectivity_change(self, now: float) -> None:
        self._tick(now)
        self.path.note_connectivity_change(now)
        self.path.clear_rejected()  # a new network: every address gets another chance
        self._answered.clear()
        self._settle(now)

    # --- walking -----------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        self.path.handle_timer(now)
        self._settle(now)

    def _settle(self, now: float) -> None:
        """Follow PeerPath, then take every edge whose question can be answered now."""
        for _ in range(_MAX_STEPS):
            self._pump(now)
            label = self._decide(now)
            if label is None:
                return
            self._go(label, now)
        raise RuntimeError(f"{self.node}: the flow does not settle at {self.state.value}")  # pragma: no cover

    def _go(self, label: str, now: float) -> None:
        edge = g.transition(self.state, label)  # NoSuchTransition: never an edge outside TRANSITIONS
        if self.tracer is not None:
            self.tracer(edge.record(now, self.node, self.trace_peer))
        self.state = edge.dst
        self.walked.append(edge.dst)
        self._events.append(FlowMoved(edge.src, edge.label, edge.dst))
        self._enter(edge, now)

    def _enter(self, edge: g.Transition, now: float) -> None:
        to, t = edge.dst, self.timing
        if to is S.TryDirect:
            self._try_end = now + t.try_direct_timeout
            self.path.discover(now, call_me_maybe=False, cause="try-direct")
        elif to is S.SendSTUN:
            if edge.src is S.StayOnDERP:
                self.rounds = max(self.rounds, t.disco_retry_rounds - 1)  # a re-upgrade is one round
                if edge.label == g.UPGRADE_INTERVAL:
                    self.path.clear_rejected()
            elif edge.src is S.RetryProbes:
                self.path.clear_rejected()  # a new round validates afresh: a burst late once is not a bad path
            self.rounds += 1
            self._round_end = now + t.ping_timeout
            self.path.discover(now, call_me_maybe=True, cause="flow")
        elif to is S.ValidatePath:
            self._start_validation(now)
        elif to is S.StayOnDERP:
            self._upgrade_at = now + t.upgrade_udp_direct_interval
        elif to is S.FallbackDERP:
            self.rounds, self._migrating = 0, False
            self._answered.clear()
        elif to is S.EstablishDirect and self.validated is not None:
            self.path.adopt(self.validated.endpoint, now)  # the validated address carries the tunnel
        elif to is S.MigrateDirect:
            self._migrating = True
        elif to is S.DirectActive and (self._migrating or edge.src is S.DirectSuccess):
            self._migrating = False
            self.rounds = 0
            if self.time_direct is None:
                self.time_direct = now
            if self.mtu is None and self.path.best is not None:
                self.mtu = self.path.best.mtu
        self._pending = None

    def _decide(self, now: float) -> str | None:
        """The label to take from the current state now, or None to wait."""
        st, t = self.state, self.timing
        if st in _PASS_ON:
            return g.NEXT
        if st is S.DERPActive:
            return g.NEXT if self.wanted else None
        if st is S.CheckDirect:
            eps = self.peer_endpoints
            return g.PUBLIC_IP if eps and not any(is_private_endpoint(e) for e in eps) else g.BEHIND_NAT
        if st is S.TryDirect:
            return g.NEXT if self._answer(now) is not None or now >= self._try_end else None
        if st in (S.DirectSuccess, S.AnalyzeResponses):
            return g.YES if self._answer(now) is not None else g.NO
        if st is S.StartDERP:
            return g.NEXT if self.derp_up else None
        if st is S.MultiProbe:
            return g.NEXT if self._answer(now) is not None or now >= self._round_end else None
        if st is S.RetryProbes:
            return g.YES if self.rounds >= t.disco_retry_rounds else g.NO
        if st is S.ValidatePath:
            burst = self.check.burst_for(self._validating)
            return g.NEXT if burst is None or burst.complete(now) else None
        if st is S.PathGood:
            return g.YES if self._judge(now) else g.NO
        if st is S.TryAltPath:
            return g.YES if self._alternatives(now) else g.NO
        if st is S.DirectStable:
            return g.YES if self.path.best is not None else g.NO
        if st is S.StayOnDERP:
            if self._pending is None and (now >= self._upgrade_at or self._answer(now) is not None):
                self._pending = g.UPGRADE_INTERVAL
            return self._pending
        if st is S.DirectActive:
            return self._pending
        return None  # Start, GetInfo (answered by start), QueryControl (waits for info_received)

    def _flow_timer(self) -> float | None:
        st = self.state
        if st is S.TryDirect:
            return self._try_end
        if st is S.MultiProbe:
            return self._round_end
        if st is S.StayOnDERP:
            return self._upgrade_at
        if st is S.ValidatePath:
            burst = self.check.burst_for(self._validating)
            return burst.deadline if burst is not None else None
        return None


__all__ = ["PeerFlow"]
