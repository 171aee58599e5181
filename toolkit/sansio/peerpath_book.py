"""One peer's path bookkeeping, sans-IO: candidates, pings in flight, the best address and its trust (protocols.md §4).

:class:`PathBook` is the base of :class:`~toolkit.sansio.peerpath.PeerPath` (magicsock's per-peer ``endpoint``):
it holds the state and answers the queries, and keeps it consistent; PeerPath's inputs (configuration, sends,
timers, disco messages) change it through these helpers:

* Queries: :meth:`~PathBook.trusted` (trust is ``[pong, pong + trust_udp_addr_duration)``, §4.3, natkit's
  half-open interval), :meth:`~PathBook.send_plan` (``addrForSendLocked``: the trusted best alone, else it
  and DERP), :meth:`~PathBook.ping_targets` (a round's candidates, §4.4), :meth:`~PathBook.want_full_ping`
  (§4.5), :meth:`~PathBook.get_timer` (ping timeouts, heartbeat, end of trust).
* Outputs, pulled: :meth:`~PathBook.messages_to_send`, :meth:`~PathBook.next_event`,
  :meth:`~PathBook.take_activity` (natkit's hook for PeerFlow).
* Bookkeeping: candidates are added and pruned with events (``CandidateAdded`` / ``CandidateRemoved``;
  removing the best address clears it), the coarse state moves only along :data:`TRANSITIONS` of
  :mod:`.peerpath_types` (traced as ``transition`` records), trust that ran out moves DIRECT to VALIDATING
  (§4.3), and every message queued, received or dropped is traced.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

from toolkit.codec.disco import Message, Ping
from toolkit.sansio.betteraddr import AddrQuality
from toolkit.sansio.derphome import derp_magic_endpoint
from toolkit.sansio.peerpath_types import (
    REMOVED,
    TRANSITIONS,
    TRUST_EXPIRED,
    Activity,
    Candidate,
    CandidateAdded,
    CandidateRemoved,
    Event,
    Outgoing,
    PathLost,
    PathTrustExpired,
    SendPlan,
    SentPing,
    State,
)
from toolkit.sansio.trace import TraceKind, Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPublicKey, Endpoint, Key32, NodePublicKey, TxID

_EDGES = frozenset(TRANSITIONS)


class PathBook:
    """The state of path selection towards one peer and its queries; :class:`~toolkit.sansio.peerpath.PeerPath`
    adds the inputs (``peer`` is the peer's disco key; ``node_key`` ours, put in our pings)."""

    def __init__(
        self,
        peer: DiscoPublicKey,
        rng: Callable[[int], bytes],
        *,
        node_key: NodePublicKey | None = None,
        derp_region: int | None = None,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        node: str = "peerpath",
        trace_peer: Key32 | None = None,
    ) -> None:
        self.peer, self.node_key, self.derp_region, self.timing = peer, node_key, derp_region, timing
        self.tracer, self.node, self._rng = tracer, node, rng
        self.trace_peer: Key32 = trace_peer if trace_peer is not None else peer
        self.rejected: set[Endpoint] = set()
        self._activity: list[Activity] = []
        self.candidates: dict[Endpoint, Candidate] = {}
        self.sent_pings: dict[TxID, SentPing] = {}
        self.best: AddrQuality | None = None
        self.best_at: float | None = None
        self.trust_until = 0.0
        self.state = State.DERP
        self.last_send_ext: float | None = None
        self.last_full_ping: float | None = None
        self.heartbeat_at: float | None = None
        self.my_endpoints: tuple[Endpoint, ...] = ()
        self.my_endpoints_at: float | None = None
        self.call_me_maybe_pending = False
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self._outbox: list[Outgoing] = []
        self._events: deque[Event] = deque()

    # --- queries and outputs -----------------------------------------------------------------------

    def trusted(self, now: float) -> bool:
        return self.best is not None and now < self.trust_until

    def send_plan(self, now: float) -> SendPlan:
        """``addrForSendLocked``: the trusted best address alone, else it (if any) and DERP (§4.3)."""
        udp = self.best.endpoint if self.best is not None else None
        if self.trusted(now):
            return SendPlan(udp, None)
        return SendPlan(udp, derp_magic_endpoint(self.derp_region) if self.derp_region is not None else None)

    def send_addr(self, now: float) -> Endpoint | None:
        """The trusted direct address, or None: use DERP (with the untrusted best too, see :meth:`send_plan`)."""
        return self.best.endpoint if self.best is not None and self.trusted(now) else None

    def ping_targets(self, now: float) -> tuple[Endpoint, ...]:
        """The candidates a discovery round at ``now`` pings: live ones not pinged within ``disco_ping_interval``."""
        return tuple(
            ep
            for ep, c in self.candidates.items()
            if not c.should_delete(now, self.timing)
            and (c.last_ping is None or now - c.last_ping >= self.timing.disco_ping_interval)
        )

    def want_full_ping(self, now: float) -> bool:
        """``wantFullPingLocked`` (§4.5): no direct best, no round yet, untrusted, or slow and due to re-upgrade."""
        if self.best is None or not self.best.is_direct or self.last_full_ping is None or not self.trusted(now):
            return True
        if self.best.latency <= self.timing.good_enough_latency:
            return False
        return now - self.last_full_ping >= self.timing.upgrade_udp_direct_interval

    def get_timer(self) -> float | None:
        """The earliest of: a ping's timeout, the heartbeat, the end of trust in the best address."""
        due = [sp.at + self.timing.ping_timeout for sp in self.sent_pings.values()]
        if self.heartbeat_at is not None:
            due.append(self.heartbeat_at)
        if self.state is State.DIRECT:
            due.append(self.trust_until)
        return min(due, default=None)

    def messages_to_send(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    def pings_to_send(self) -> list[Outgoing]:
        """Only the pings of :meth:`messages_to_send` (pongs and CallMeMaybes stay queued)."""
        pings = [o for o in self._outbox if isinstance(o.message, Ping)]
        self._outbox = [o for o in self._outbox if not isinstance(o.message, Ping)]
        return pings

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def take_activity(self) -> list[Activity]:
        """The discovery rounds and heartbeat pings since the last call (for a wrapper; not events)."""
        out, self._activity = self._activity, []
        return out

    # --- bookkeeping -------------------------------------------------------------------------------

    def _check_trust(self, now: float) -> None:
        if self.state is State.DIRECT and not self.trusted(now) and self.best is not None:
            self._events.append(PathTrustExpired(self.best))
            self._move(State.VALIDATING, TRUST_EXPIRED, now)

    def _clear_best(self, label: str, now: float) -> None:
        if self.best is not None:
            self._events.append(PathLost(self.best, label))
            self._move(State.DERP, label, now)
        self.best, self.best_at, self.trust_until = None, None, 0.0

    def _add(self, ep: Endpoint, c: Candidate, source: str) -> None:
        self.candidates[ep] = c
        self._events.append(CandidateAdded(ep, source))

    def _prune(self, now: float, reason: str) -> None:
        for ep in [ep for ep, c in self.candidates.items() if c.should_delete(now, self.timing)]:
            del self.candidates[ep]
            self._events.append(CandidateRemoved(ep, reason))
            if self.best is not None and self.best.endpoint == ep:
                self._clear_best(REMOVED, now)

    def _move(self, to: State, label: str, now: float) -> None:
        assert (self.state, label, to) in _EDGES, (self.state, label, to)
        if self.tracer is not None:
            self.tracer(
                TraceRecord(now, self.node, self.trace_peer, "transition", f"{self.state.name} -> {to.name}", label)
            )
        self.state = to

    def _queue(self, out: Outgoing, now: float) -> None:
        self._outbox.append(out)
        self._trace("sent", now, out.message.summary(), out.to, out.message)

    def _drop(self, reason: str, now: float, src: Endpoint, message: Message) -> bool:
        self.drops[reason] += 1
        self._trace("dropped", now, message.summary(), src, message, reason)
        return False

    def _trace(
        self, kind: TraceKind, now: float, text: str, ep: Endpoint, msg: Message, why: str | None = None
    ) -> None:
        if self.tracer is not None:
            self.tracer(TraceRecord(now, self.node, self.trace_peer, kind, text, why, msg.encode(), ep))


__all__ = ["PathBook"]
