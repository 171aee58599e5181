"""One peer's path selection, sans-IO: magicsock's per-peer ``endpoint`` (protocols.md §4.2-§4.9).

:class:`PeerPath` keeps the peer's candidate endpoints (from control, from pings the peer sent us, from
its CallMeMaybe), the disco pings in flight by TxID, the best address with its trust deadline, and
decides where WireGuard packets go: the trusted direct address alone, that address *and* DERP while it
is being re-validated, or DERP alone (:meth:`PeerPath.send_plan`). It never seals or opens disco
boxes: the caller opens a received message and passes it in (:meth:`~PeerPath.receive_message`, or
the three handlers), and seals what :meth:`~PeerPath.messages_to_send` returns. A destination
``127.3.3.40:<region>`` means "over DERP" (magicsock's fake DERP address, :mod:`.derphome`).

Timers come from :class:`~toolkit.timing.Timing` (protocols.md §4.1). The coarse path state is a
machine (``State``, ``TRANSITIONS``); it, the values and the events live in :mod:`.peerpath_types`.

Decisions where natkit differs from Tailscale (documented): trust is the half-open interval
``[pong, pong + 6.5 s)`` (Go: closed), so :meth:`get_timer` at the deadline always makes progress; a
CallMeMaybe endpoint that is not re-advertised loses its CallMeMaybe mark and is deleted only when no
other source (control, a recent ping) keeps it (Go deletes it outright); discovery and heartbeat pings
carry no padding, so their pongs prove the safe wire MTU 1280; a padded :meth:`~PeerPath.probe` (path-MTU
probing, §4.12) proves its own wire size, kept in the best address. Events are past-tense frozen
dataclasses, pulled with :meth:`PeerPath.next_event`.

Hooks for :class:`~toolkit.sansio.peerflow.PeerFlow` (natkit's, not magicsock's): :meth:`~PeerPath.probe`
pings one candidate now, outside the round's rate limit (validation bursts, path-MTU probes);
:meth:`~PeerPath.reject` keeps an address that failed validation from becoming the best one until
:meth:`~PeerPath.clear_rejected`; :meth:`~PeerPath.take_activity` returns what the core did on its own
(a discovery round, a heartbeat ping) so the wrapper can follow it; ``trace_peer`` is the key put in
trace records (the node puts the peer's node key there).

The state, its queries (:meth:`~PeerPath.send_plan`, :meth:`~PeerPath.get_timer` ...), the pulled outputs and
the candidate / best-address bookkeeping are the base class :class:`~toolkit.sansio.peerpath_book.PathBook`;
this module is the inputs: configuration, sends and timers, and the disco message handlers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from toolkit.codec.disco import CallMeMaybe, Message, Ping, Pong
from toolkit.sansio.betteraddr import AddrQuality, better_addr, is_link_local_unicast, why_better
from toolkit.sansio.derphome import derp_magic_endpoint, region_of
from toolkit.sansio.peerpath_book import PathBook

# fmt: off
# isort: off
from toolkit.sansio.peerpath_types import (
    BAD, BETTER, PONG, REJECTED, RESET, SAFE_WIRE_MTU, TIMED_OUT, TRANSITIONS, Activity,
    Candidate, CandidateAdded, CandidateRemoved, DiscoveryStarted, EndpointsRefreshWanted, Event, HeartbeatSent,
    HeartbeatStopped, Outgoing, PathLost, PathTrustExpired, PathUpgraded, PingReceived, PingTimedOut, PongReceived,
    PongRecord, Purpose, SendPlan, SentPing, State, ping_wire_size,
)
# isort: on
# fmt: on
from toolkit.types import Endpoint, TxID


class PeerPath(PathBook):
    """Path selection towards one peer (``peer`` is its disco key; ``node_key`` ours, put in our pings)."""

    # --- inputs: configuration ---------------------------------------------------------------------

    def set_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        """The peer's endpoints from control (``setEndpointsLocked``); dropped ones go unless kept otherwise."""
        wanted = dict.fromkeys(endpoints)  # ordered: rounds ping candidates in the order control gave them
        for ep in wanted:
            if ep not in self.candidates:
                self._add(ep, Candidate(), "control")
        for ep, c in self.candidates.items():
            c.from_control = ep in wanted
        self._prune(now, "not in the netmap")

    def set_my_endpoints(self, endpoints: Iterable[Endpoint], now: float) -> None:
        """Our own endpoints (STUN, local, port mapped) for CallMeMaybe; sends one that waited for them."""
        self.my_endpoints, self.my_endpoints_at = tuple(endpoints), now
        if self.call_me_maybe_pending:
            self._enqueue_call_me_maybe(now)

    # --- inputs: sending and timers ----------------------------------------------------------------

    def note_send(self, now: float) -> SendPlan:
        """A WireGuard packet is to be sent (``endpoint.send``): where to, and start discovery if not direct."""
        self._check_trust(now)
        plan = self.send_plan(now)
        if not self.trusted(now):
            self.discover(now, call_me_maybe=True, cause="send")
        self._note_activity(now)
        return plan

    def _note_activity(self, now: float) -> None:  # noteTxActivityExtTriggerLocked: arm the heartbeat
        self.last_send_ext = now
        if self.heartbeat_at is None:
            self.heartbeat_at = now + self.timing.heartbeat_interval

    def discover(self, now: float, *, call_me_maybe: bool, cause: str = "explicit") -> int:
        """A discovery round (``sendDiscoPingsLocked``, §4.4); returns how many pings went out."""
        self.last_full_ping = now
        self._prune(now, "expired")
        targets = self.ping_targets(now)
        for ep in targets:
            self._start_ping(ep, now, Purpose.DISCOVERY)
        if targets:
            self._activity.append(DiscoveryStarted(targets, cause))
        if targets and call_me_maybe and self.derp_region is not None:
            self._enqueue_call_me_maybe(now)
        return len(targets)

    def cli_ping(self, now: float) -> list[TxID]:
        """``tailscale ping`` (disco): ping where packets would go, DERP included; counts as activity."""
        plan = self.send_plan(now)
        self._note_activity(now)
        return [self._start_ping(ep, now, Purpose.CLI) for ep in (plan.udp, plan.derp) if ep is not None]

    def probe(self, endpoint: Endpoint, now: float, *, padding: int = 0, purpose: Purpose = Purpose.VALIDATE) -> TxID:
        """Ping the candidate ``endpoint`` now, outside the round's rate limit, padded by ``padding`` zero bytes
        (a path-MTU probe, §4.12). natkit's hook for PeerFlow's validation bursts; ``KeyError`` if not a candidate."""
        if endpoint not in self.candidates:
            raise KeyError(f"{endpoint} is not a candidate endpoint")
        return self._start_ping(endpoint, now, purpose, padding)

    def reject(self, endpoint: Endpoint, now: float) -> None:
        """``endpoint`` failed validation: it may not be the best address (pongs from it are still recorded)."""
        self.rejected.add(endpoint)
        if self.best is not None and self.best.endpoint == endpoint:
            self._clear_best(REJECTED, now)

    def adopt(self, endpoint: Endpoint, now: float) -> bool:
        """Make ``endpoint`` the best address now if its last pong is still within the trust time (natkit: the
        flow validated it; betterAddr may have preferred an address that then failed validation)."""
        c = self.candidates.get(endpoint)
        if c is None or not c.pongs or endpoint in self.rejected:
            return False
        last = c.pongs[-1]
        if now - last.at >= self.timing.trust_udp_addr_duration:
            return False
        if self.best is not None and self.best.endpoint == endpoint:
            return True
        this = AddrQuality(endpoint, last.latency, SAFE_WIRE_MTU)
        self._events.append(PathUpgraded(self.best, this, "validated"))
        label = BETTER if self.state is State.DIRECT else PONG
        self.best, self.best_at, self.trust_until = this, last.at, last.at + self.timing.trust_udp_addr_duration
        self._move(State.DIRECT, label, now)
        return True

    def clear_rejected(self) -> None:
        """Give every rejected address another chance (a new upgrade attempt)."""
        self.rejected.clear()

    def handle_timer(self, now: float) -> None:
        """Ping timeouts (§4.8), end of trust (§4.3), heartbeat (§4.5), in deadline order."""
        while (due := self.get_timer()) is not None and due <= now:
            timeouts = [(sp.at, t) for t, sp in self.sent_pings.items() if sp.at + self.timing.ping_timeout == due]
            if timeouts:
                self._ping_timed_out(min(timeouts, key=lambda x: x[0])[1], now)
            elif self.state is State.DIRECT and self.trust_until == due:
                self._check_trust(now)
            elif self.heartbeat_at == due:
                self._heartbeat(now)
            else:  # pragma: no cover - get_timer returns one of the three
                break

    # --- inputs: disco messages (already opened by the caller) -------------------------------------

    def receive_message(self, message: Message, src: Endpoint, now: float) -> bool:
        """Dispatch an opened disco message from ``src`` (a magic DERP address if it came over DERP)."""
        if isinstance(message, Ping):
            return self.ping_received(message, src, now)
        if isinstance(message, Pong):
            return self.pong_received(message, src, now)
        if isinstance(message, CallMeMaybe):
            if region_of(src) is None:
                return self._drop("call-me-maybe-over-udp", now, src, message)  # §1.2: DERP only
            self.call_me_maybe(message.endpoints, now)
            return True
        return self._drop("unsupported-message", now, src, message)

    def ping_received(self, ping: Ping, src: Endpoint, now: float) -> bool:
        """``handlePingLocked`` (§4.6): learn ``src`` as a candidate (UDP) and answer with a Pong on the same path."""
        self._check_trust(now)
        if region_of(src) is None:
            c = self.candidates.get(src)
            if c is None:
                self._add(src, Candidate(last_got_ping=now, last_got_ping_txid=ping.txid), "ping")
            elif c.last_got_ping_txid == ping.txid:
                return self._drop("duplicate-ping", now, src, ping)
            else:
                c.last_got_ping_txid = ping.txid
                if c.last_got_ping is not None:
                    c.last_got_ping = now
        self.counters["ping-received"] += 1
        self._trace("received", now, ping.summary(), src, ping)
        self._events.append(PingReceived(ping.txid, src))
        self._queue(Outgoing(Pong(ping.txid, src), src), now)
        return True

    def pong_received(self, pong: Pong, src: Endpoint, now: float) -> bool:
        """``handlePongConnLocked`` (§4.7): latency, history, maybe a new best address, trust it 6.5 s."""
        self._check_trust(now)
        sp = self.sent_pings.pop(pong.txid, None)
        if sp is None:
            return self._drop("pong-unknown-txid", now, src, pong)
        latency = now - sp.at
        self.counters["pong-received"] += 1
        self._trace("received", now, f"{pong.summary()} {latency * 1000:.1f}ms", src, pong)
        via_derp = region_of(src) is not None
        if not via_derp:
            c = self.candidates.get(sp.to)
            if c is None:
                self.counters["pong-for-removed-candidate"] += 1
                return True
            c.add_pong(PongRecord(latency, now, src, pong.src), self.timing.pong_history_count)
        self._events.append(PongReceived(pong.txid, sp.to, src, latency, pong.src, sp.purpose, sp.padding))
        if via_derp or region_of(sp.to) is not None:
            return True  # pongs over DERP never become the best address
        if sp.to in self.rejected:
            return True  # natkit: failed validation (PeerFlow), not a best address until cleared
        mtu = max(SAFE_WIRE_MTU, ping_wire_size(sp.padding, ipv6=sp.to.is_ipv6)) if sp.padding else SAFE_WIRE_MTU
        this = AddrQuality(sp.to, latency, mtu)
        before, was = self.best, self.state
        if better_addr(this, self.best) or not self.trusted(now):
            if not this.same_path(self.best):
                self._events.append(PathUpgraded(self.best, this, why_better(this, self.best)))
            self.best = this
        if self.best is not None and self.best.same_path(this):
            self.best = replace(self.best, latency=latency, mtu=max(self.best.mtu, mtu))
            self.best_at, self.trust_until = now, now + self.timing.trust_udp_addr_duration
        if was is not State.DIRECT:
            self._move(State.DIRECT, PONG, now)
        elif before is not None and not before.same_path(self.best):
            self._move(State.DIRECT, BETTER, now)
        return True

    def call_me_maybe(self, endpoints: Iterable[Endpoint], now: float) -> int:
        """``handleCallMeMaybe`` (§4.9): replace the CallMeMaybe endpoints, reset rate limits, ping them all."""
        self._check_trust(now)
        self.counters["call-me-maybe-received"] += 1
        fresh = [ep for ep in endpoints if not (ep.is_ipv6 and is_link_local_unicast(ep.ip))]
        for ep, c in self.candidates.items():
            if ep not in fresh:
                c.call_me_maybe_at = None
        for ep in fresh:
            if ep in self.candidates:
                self.candidates[ep].call_me_maybe_at = now
            else:
                self._add(ep, Candidate(call_me_maybe_at=now), "call-me-maybe")
        self._prune(now, "not re-advertised")
        for c in self.candidates.values():
            c.last_ping = None
        return self.discover(now, call_me_maybe=False, cause="call-me-maybe")

    def note_bad_endpoint(self, endpoint: Endpoint, now: float) -> None:
        """A send to ``endpoint`` failed as unreachable (``noteBadEndpoint``, §4.8)."""
        self._clear_best(BAD, now)
        if endpoint in self.candidates:
            self.candidates[endpoint].clear_probes()

    def note_connectivity_change(self, now: float) -> None:
        """A link change: forget the best address and every candidate's probe state (``noteConnectivityChange``)."""
        self._clear_best(RESET, now)
        for c in self.candidates.values():
            c.clear_probes()

    # --- internals ---------------------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        self.heartbeat_at = None
        if self.last_send_ext is None:
            return
        if now - self.last_send_ext > self.timing.session_active_timeout:
            self._events.append(HeartbeatStopped(now - self.last_send_ext))
            return
        self._check_trust(now)
        udp = self.send_plan(now).udp
        if udp is not None and udp in self.candidates:
            self._start_ping(udp, now, Purpose.HEARTBEAT)
            self._activity.append(HeartbeatSent(udp))
        if self.want_full_ping(now):
            self.discover(now, call_me_maybe=True, cause="heartbeat")
        self.heartbeat_at = now + self.timing.heartbeat_interval

    def _start_ping(self, to: Endpoint, now: float, purpose: Purpose, padding: int = 0) -> TxID:
        if purpose is not Purpose.CLI:
            self.candidates[to].last_ping = now
        txid = TxID(self._rng(12))
        self.sent_pings[txid] = SentPing(to, now, purpose, padding)
        self.counters[f"ping-sent-{purpose.value}"] += 1
        self._queue(Outgoing(Ping(txid, self.node_key, padding), to, purpose), now)
        return txid

    def _ping_timed_out(self, txid: TxID, now: float) -> None:
        sp = self.sent_pings.pop(txid)
        self.counters["ping-timed-out"] += 1
        self._events.append(PingTimedOut(txid, sp.to, sp.purpose))
        self._check_trust(now)
        if self.best is not None and sp.to == self.best.endpoint and not self.trusted(now):
            self._clear_best(TIMED_OUT, now)

    def _enqueue_call_me_maybe(self, now: float) -> None:
        at = self.my_endpoints_at
        if at is None or now - at >= self.timing.endpoints_fresh_enough:
            self._events.append(EndpointsRefreshWanted())  # every time, as magicsock re-STUNs every time
            self.call_me_maybe_pending = True
            return
        self.call_me_maybe_pending = False
        if self.derp_region is not None:
            self.counters["call-me-maybe-sent"] += 1
            self._queue(Outgoing(CallMeMaybe(self.my_endpoints), derp_magic_endpoint(self.derp_region)), now)


__all__ = [
    "SAFE_WIRE_MTU", "TRANSITIONS", "Activity", "Candidate", "CandidateAdded", "CandidateRemoved", "DiscoveryStarted",
    "EndpointsRefreshWanted", "Event", "HeartbeatSent", "HeartbeatStopped", "Outgoing", "PathLost", "PathTrustExpired", "PathUpgraded", "PeerPath",
    "PingReceived", "PingTimedOut", "PongReceived", "PongRecord", "Purpose", "SendPlan", "SentPing", "State",
]  # fmt: skip
