"""Every timer and threshold natkit uses, named, in one place (design.md §3).

Values follow Tailscale's magicsock and netcheck (protocols.md §4.1, §5.2), DERP (§2.4),
STUN (RFC 8489 §6.2.1) and WireGuard (whitepaper §6, protocols.md §8.5). All durations are
seconds as floats. A lab may slow the whole clock down for teaching with :meth:`Timing.scaled`,
or override single values with :meth:`Timing.replace`; protocol code takes a ``Timing`` and
never reads the module constants directly, so tests can run timers fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

_RATIO = {"unit": "ratio"}  # a field that is not a duration: scaled() leaves it alone
_FIXED = {"unit": "fixed"}  # a duration that is not a protocol timer (a tolerance): scaled() leaves it alone


@dataclass(frozen=True, slots=True)
class Timing:
    # --- magicsock path selection (protocols.md §4.1) ---
    heartbeat_interval: float = 3.0
    trust_udp_addr_duration: float = 6.5
    upgrade_udp_direct_interval: float = 60.0
    good_enough_latency: float = 0.005
    session_active_timeout: float = 45.0
    disco_ping_interval: float = 5.0
    ping_timeout: float = 5.0
    endpoints_fresh_enough: float = 27.0
    restun_min: float = 20.0
    restun_max: float = 26.0
    pong_history_count: int = 64
    derp_inactive_cleanup: float = 60.0
    derp_clean_stale_interval: float = 15.0

    # --- the seed flowchart walked per peer (toolkit/sansio/peerflow.py; natkit's, Tailscale has no such steps) ---
    # TryDirect: how long the first pings to a peer that advertises only public endpoints may take before
    # DirectSuccess says No and the peer goes through DERP. Tailscale never waits (it sends over DERP at once
    # and upgrades later); an internet round trip is well under a second.
    try_direct_timeout: float = 1.0
    # RetryProbes: discovery rounds (each one waits ping_timeout for a pong) before the peer StaysOnDERP.
    # Tailscale keeps pinging every disco_ping_interval while traffic flows; natkit leaves the probing states
    # after this many rounds and re-probes from StayOnDERP (upgrade_udp_direct_interval, CallMeMaybe).
    disco_retry_rounds: int = 3
    # ValidatePath: pings padded to the safe wire MTU 1280 (protocols.md §4.12) sent with every discovery round
    # to every candidate; the share of them left unanswered is the path's loss.
    validate_probes: int = 4
    # PathGood: at most this share of the validate_probes may be lost (a ratio, not a duration: never scaled).
    validate_max_loss: float = field(default=0.25, metadata=_RATIO)
    # ValidatePath: after the first pong from a candidate, wait this long at least (and two measured round trips
    # at least) for the rest of its burst; a burst answered in full ends validation at once. Not scaled: it
    # covers the peer's processing (it answers its own burst first) and a loaded machine, not a protocol timer.
    validate_wait_min: float = field(default=0.05, metadata=_FIXED)
    # PathGood: a direct path slower than this is not worth migrating to (DERP relays answer within it).
    path_max_latency: float = 1.0

    # --- netcheck (protocols.md §5.2; Tailscale net/netcheck/netcheck.go) ---
    netcheck_report_timeout: float = 5.0  # ReportTimeout
    netcheck_stun_probe_timeout: float = 3.0  # stunProbeTimeout
    netcheck_icmp_probe_timeout: float = 1.0  # icmpProbeTimeout
    netcheck_initial_retransmit: float = 0.1  # defaultInitialRetransmitTime: full plan, tries at 0, 100, 200 ms
    netcheck_active_retransmit: float = 0.2  # defaultActiveRetransmitTime: incremental retry spacing, no latency yet
    netcheck_retry_extra: float = 0.05  # makeProbePlan: + try x 50 ms from the third try on (incremental plan)
    netcheck_full_report_interval: float = 300.0  # fullReportInterval
    netcheck_preferred_derp_frame_time: float = 8.0  # PreferredDERPFrameTime: a home heard from this recently works
    netcheck_preferred_derp_absolute_diff: float = 0.010  # preferredDERPAbsoluteDiff: keep a home within 10 ms

    # --- STUN client (RFC 8489 §6.2.1: RTO 500 ms, Rc = 7 requests, Rm = 16) ---
    stun_rto: float = 0.5
    stun_rc: int = 7
    stun_rm: int = 16

    # --- STUN server (natkit's; Tailscale's STUN is UDP only) ---
    stun_tcp_idle_timeout: float = 40.0  # RFC 8489 §6.2.2: a client gives up on a TCP transaction after Ti = 39.5 s

    # --- DERP (protocols.md §2.4) ---
    derp_keepalive: float = 60.0
    derp_keepalive_jitter: float = 5.0
    derp_client_read_timeout: float = 120.0
    derp_handshake_timeout: float = 10.0
    derp_write_timeout: float = 2.0
    derp_queue_depth: int = 32
    derp_reconnect_min: float = 0.1  # client backoff after a failed dial, doubled up to the max
    derp_reconnect_max: float = 10.0  # magicsock's derp backoff cap (wgengine/magicsock/derp.go)
    # natkit's relay sends Restarting when it stops (derper only decodes the frame, protocols.md §10):
    derp_restart_reconnect_in: float = 1.0  # clients dial again after this long ...
    derp_restart_try_for: float = 30.0  # ... and retry quickly for this long (protocols.md §2.3)

    # --- coordination server (natkit's own; issue 4) ---
    control_stream_keepalive: float = 15.0  # an SSE comment line this often keeps proxies and clients awake
    control_long_poll: float = 30.0  # a long poll with nothing new answers after this long
    control_request_timeout: float = 10.0  # a request (and its answer) must move within this long, both sides
    control_idle_timeout: float = 60.0  # a kept-alive HTTP connection may idle this long between requests

    # --- WireGuard (whitepaper §6, protocols.md §8.5) ---
    rekey_after_messages: int = 2**60
    reject_after_messages: int = 2**64 - 2**13 - 1
    rekey_after_time: float = 120.0
    reject_after_time: float = 180.0
    rekey_attempt_time: float = 90.0
    rekey_timeout: float = 5.0
    rekey_timeout_jitter_max: float = 0.334
    keepalive_timeout: float = 10.0
    cookie_refresh_time: float = 120.0
    handshake_flood_interval: float = 0.02

    def scaled(self, factor: float) -> Timing:
        """Every duration multiplied by ``factor`` (> 1 slows a lab down); counts, ratios and tolerances are kept."""
        if factor <= 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        changes = {
            f.name: getattr(self, f.name) * factor
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), float) and f.metadata.get("unit") not in ("ratio", "fixed")
        }
        return dataclasses.replace(self, **changes)

    def replace(self, **changes: float) -> Timing:
        """A copy with the named values changed; unknown names raise ``TypeError``."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @property
    def netcheck_history_max_age(self) -> float:
        """Reports this old or newer count for the home region: 5 min + 5 s (protocols.md §5.2)."""
        return self.netcheck_full_report_interval + self.netcheck_report_timeout

    @property
    def preferred_derp_keepalive_timeout(self) -> float:
        """``PreferredDERPKeepAliveTimeout`` = 2 x ``derp.KeepAlive`` (120 s): a home with no latency data
        is kept while DERP frames arrived within this long (protocols.md §5.2)."""
        return 2 * self.derp_keepalive

    @property
    def new_handshake_timeout(self) -> float:
        """Data sent but nothing authenticated back: KEEPALIVE + REKEY_TIMEOUT (protocols.md §8.5)."""
        return self.keepalive_timeout + self.rekey_timeout

    @property
    def max_timer_handshakes(self) -> int:
        return int(self.rekey_attempt_time / self.rekey_timeout)

    @property
    def zero_keys_after(self) -> float:
        return 3 * self.reject_after_time


DEFAULT = Timing()

__all__ = ["Timing", "DEFAULT"]
