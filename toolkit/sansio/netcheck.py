"""The sans-IO netcheck: STUN probes to every DERP region, one :class:`Report` (protocols.md §5).

Like Tailscale's ``net/netcheck`` (and its CLI ``tailscale netcheck``), one :class:`Netcheck` runs one
report. It never touches a socket or a clock (design.md §2): ``start(now)``, ``handle_timer(now)`` and
``receive_datagram(data, src, now)`` go in; ``datagrams_to_send()`` (Tailscale's 40-byte ``tailnode``
Binding Requests, protocols.md §3.1) and ``get_timer()`` come out; when :attr:`done` is true,
:meth:`report` is the result. The driver (:mod:`toolkit.services.netcheck`) owns the sockets, resolves
DERP host names beforehand (``resolved``) and reports failed sends in (:meth:`send_failed`), which is
how ``IPv4CanSend``/``IPv6CanSend`` are measured.

The run (protocols.md §5.2, ``GetReport``):

* The plan (:func:`~toolkit.sansio.netcheck_plan.make_probe_plan`) is a set of probes per region and
  family. Each probe fires ``delay`` after :meth:`start`, unless it would add nothing new
  (``probeWouldHelp``: its region has a latency, and v6 is already known or - for v4 - the
  MappingVariesByDestIP question is already answered); then the rest of its set is dropped too.
* A reply is matched by transaction id (unknown ids are ignored and counted); the first reply in a set
  cancels the set's remaining probes; replies to probes already sent still count.
* It stops when every set is cancelled, when ``enough_regions`` (3) regions answered and the slowest
  latency has passed once more (twice on full reports), or at the STUN probe timeout (3 s; natkit sends
  no HTTPS/ICMP fallback, so it is also the end of the report, before ReportTimeout 5 s).
* The home region comes from :func:`~toolkit.sansio.netcheck_plan.pick_preferred_derp` over ``previous``.

Malformed, foreign or late datagrams never raise: they are counted in ``counters`` under a reason of
:data:`DROP_REASONS` and traced. The run's phases are a small state machine (:data:`TRANSITIONS`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from toolkit.codec import stun
from toolkit.codec.derpmap import DERPMap
from toolkit.errors import DecodeError
from toolkit.sansio.netcheck_plan import LastDERPActivity, Probe, make_probe_plan, pick_preferred_derp
from toolkit.sansio.netcheck_report import Report
from toolkit.sansio.trace import TraceKind, Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, IPAddress, TxID

ENOUGH_REGIONS = 3  # enoughRegions(): stop soon after this many regions answered
_EPSILON = 1e-6  # a timer due "now" may be handled a hair early by an event loop

DROP_REASONS: dict[str, str] = {
    "not-stun": "not a STUN message (RFC 8489 §6: top bits, magic cookie)",
    "malformed": "looked like STUN but did not decode (the decoder's reason is counted too)",
    "not-success": "a STUN message that is not a Binding Success (a request, an error response)",
    "no-address": "a Binding Success without XOR-MAPPED-ADDRESS or MAPPED-ADDRESS",
    "unknown-txid": "a reply to no probe of this run (another client's, or a duplicate)",
    "not-running": "arrived before start() or after the run finished",
}


class State(Enum):
    IDLE = "Idle"
    PROBING = "Probing"
    FINISHING = "Finishing"  # enough regions answered: waiting a little for the rest
    DONE = "Done"


TRANSITIONS: dict[tuple[State, str], State] = {
    (State.IDLE, "start"): State.PROBING,
    (State.IDLE, "cancelled"): State.DONE,
    (State.PROBING, "enough regions"): State.FINISHING,
    (State.PROBING, "all sets done"): State.DONE,
    (State.PROBING, "STUN probe timeout"): State.DONE,
    (State.PROBING, "cancelled"): State.DONE,
    (State.FINISHING, "waited for the rest"): State.DONE,
    (State.FINISHING, "all sets done"): State.DONE,
    (State.FINISHING, "STUN probe timeout"): State.DONE,
    (State.FINISHING, "cancelled"): State.DONE,
}


@dataclass(slots=True)
class _Flight:
    probe: Probe
    sent_at: float


@dataclass(slots=True)
class _Measure:
    """The report under construction (``reportState``)."""

    udp: bool = False
    ipv4: bool = False
    ipv6: bool = False
    mapping_varies: bool | None = None
    latency: dict[int, float] = field(default_factory=dict)
    v4_latency: dict[int, float] = field(default_factory=dict)
    v6_latency: dict[int, float] = field(default_factory=dict)
    v4_counters: dict[Endpoint, int] = field(default_factory=dict)
    v6_counters: dict[Endpoint, int] = field(default_factory=dict)
    global_v4: Endpoint | None = None
    global_v6: Endpoint | None = None
    sent: Counter[int] = field(default_factory=Counter)
    failed: Counter[int] = field(default_factory=Counter)


def _lower(m: dict[int, float], key: int, d: float) -> None:
    if key not in m or d < m[key]:
        m[key] = d


class Netcheck:
    """One netcheck run over ``derp_map`` (see the module docstring).

    ``previous`` are earlier reports, oldest first (the last one gives the current home region and, when
    ``full`` is False, the incremental plan). ``have_v4``/``have_v6``: the driver can send that family;
    ``os_has_ipv6``: it could bind ``[::1]:0``. ``resolved`` maps DERP host names to addresses.
    ``last_derp_activity(region)`` is when a DERP frame last arrived from a region (same clock as ``now``).
    ``rng(n)`` gives ``n`` random bytes (transaction ids).
    """

    def __init__(
        self,
        derp_map: DERPMap,
        *,
        timing: Timing = DEFAULT,
        previous: Sequence[Report] | None = None,
        full: bool = True,
        rng: Callable[[int], bytes],
        tracer: Tracer | None = None,
        have_v4: bool = True,
        have_v6: bool = True,
        os_has_ipv6: bool = False,
        resolved: Mapping[str, Sequence[IPAddress]] | None = None,
        last_derp_activity: LastDERPActivity | None = None,
        enough_regions: int = ENOUGH_REGIONS,
        name: str = "netcheck",
    ) -> None:
        self.derp_map = derp_map
        self.timing = timing
        self.previous = list(previous or [])
        last = self.previous[-1] if self.previous else None
        self.previous_home = last.preferred_derp if last is not None else 0
        self.incremental = not full and last is not None
        self.plan: dict[str, list[Probe]] = make_probe_plan(
            derp_map,
            timing=timing,
            last=last if self.incremental else None,
            preferred=self.previous_home,
            have_v4=have_v4,
            have_v6=have_v6,
            resolved=resolved,
        )
        self.os_has_ipv6 = os_has_ipv6
        self.enough_regions = enough_regions
        self.name = name
        self.state = State.IDLE
        self.counters: Counter[str] = Counter()
        self._rng = rng
        self._tracer = tracer
        self._last_derp_activity = last_derp_activity
        self._pending: dict[str, list[Probe]] = {k: list(v) for k, v in self.plan.items()}
        self._cancelled: set[str] = set()
        self._in_flight: dict[TxID, _Flight] = {}
        self._out: list[tuple[bytes, Endpoint]] = []
        self._m = _Measure()
        self._started = 0.0
        self._stun_deadline = 0.0
        self._enough_deadline: float | None = None
        self._report: Report | None = None

    # --- inputs --------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin the run: the probes with delay 0 are ready in :meth:`datagrams_to_send` at once."""
        if self.state is not State.IDLE:
            return
        self._started = now
        t = self.timing
        self._stun_deadline = now + min(t.netcheck_stun_probe_timeout, t.netcheck_report_timeout)
        self._move("start", now)
        self._run_due(now)

    def handle_timer(self, now: float) -> None:
        if self.state in (State.IDLE, State.DONE):
            return
        if now + _EPSILON >= self._stun_deadline:
            self._finish("STUN probe timeout", now)
        elif self._enough_deadline is not None and now + _EPSILON >= self._enough_deadline:
            self._finish("waited for the rest", now)
        else:
            self._run_due(now)

    def cancel(self, now: float) -> None:
        """Stop now with what has been measured (a caller's deadline, shutdown)."""
        if self.state is not State.DONE:
            self._finish("cancelled", now)

    def send_failed(self, dst: Endpoint, now: float, error: str = "") -> None:
        """The driver could not send a probe to ``dst`` (``sendto`` raised): counts against CanSend."""
        self._m.failed[dst.family] += 1
        if self._tracer is not None:
            self._trace(now, "dropped", f"send to {dst} failed: {error or 'error'}", "send-failed", b"", dst)

    def receive_datagram(self, data: bytes, src: Endpoint, now: float) -> bool:
        """A datagram that may be a STUN reply; True if it answered one of this run's probes."""
        if self.state not in (State.PROBING, State.FINISHING):
            return self._drop("not-running", data, src, now)
        if not stun.is_stun(data):
            return self._drop("not-stun", data, src, now)
        try:
            msg = stun.decode(data)
        except DecodeError as exc:
            self.counters[exc.reason] += 1
            return self._drop("malformed", data, src, now, f"{exc.reason}: {exc}")
        if msg.msg_class is not stun.Class.SUCCESS or msg.method != stun.Method.BINDING:
            return self._drop("not-success", data, src, now)
        mapped = msg.mapped_endpoint
        if mapped is None:
            return self._drop("no-address", data, src, now)
        flight = self._in_flight.pop(msg.txid, None)
        if flight is None:
            return self._drop("unknown-txid", data, src, now)
        latency = max(now - flight.sent_at, 0.0)
        probe = flight.probe
        if self._tracer is not None:
            detail = f"STUN reply {probe.set_name} node {probe.node}: mapped {mapped}, {latency * 1000:.2f} ms"
            self._trace(now, "received", detail, None, data, src)
        self._add_latency(probe.region_id, mapped, latency, now)
        self._cancel_set(probe.set_name)
        self._check_all_done(now)
        return True

    # --- outputs -------------------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (monotonic seconds), or None when idle or done."""
        if self.state in (State.IDLE, State.DONE):
            return None
        due = [self._stun_deadline]
        if self._enough_deadline is not None:
            due.append(self._enough_deadline)
        due += [self._started + probes[0].delay for probes in self._pending.values() if probes]
        return min(due)

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def report(self, wall_time: datetime | None = None) -> Report:
        """The finished report (``Now`` set to ``wall_time``). Raises RuntimeError while running."""
        if self._report is None:
            raise RuntimeError(f"netcheck {self.name} is still {self.state.value}: wait until done")
        return self._report if wall_time is None else dataclasses.replace(self._report, now=wall_time)

    # --- the run -------------------------------------------------------------------------------------

    def _run_due(self, now: float) -> None:
        due = sorted((probes[0].delay, key) for key, probes in self._pending.items() if probes)
        while due and self._started + due[0][0] <= now + _EPSILON:
            _, key = due.pop(0)
            probe = self._pending[key].pop(0)
            if not self._would_help(probe):
                self._cancel_set(key)
            else:
                self._send(probe, now)
                rest = self._pending[key]
                if rest:
                    due.append((rest[0].delay, key))
                    due.sort()
        self._check_all_done(now)

    def _would_help(self, probe: Probe) -> bool:
        """``probeWouldHelp``: a region without latency, the first v6 answer, or the v4 mapping question."""
        m = self._m
        if probe.region_id not in m.latency:
            return True
        if probe.family == 6 and not m.v6_latency:
            return True
        return probe.family == 4 and m.mapping_varies is None

    def _send(self, probe: Probe, now: float) -> None:
        txid = TxID(self._rng(12))
        data = stun.tailnode_request(txid)
        self._in_flight[txid] = _Flight(probe, now)
        self._m.sent[probe.family] += 1
        self._out.append((data, probe.dst))
        if self._tracer is not None:
            detail = f"STUN tailnode request {probe.set_name} node {probe.node} (+{probe.delay * 1000:.0f} ms)"
            self._trace(now, "sent", detail, None, data, probe.dst)

    def _cancel_set(self, key: str) -> None:
        self._cancelled.add(key)
        self._pending[key] = []

    def _check_all_done(self, now: float) -> None:
        if self.state is not State.DONE and all(key in self._cancelled for key in self.plan):
            self._finish("all sets done", now)

    def _add_latency(self, region_id: int, mapped: Endpoint, d: float, now: float) -> None:
        """``addNodeLatency``: latency per region and family, our global endpoints, the mapping question."""
        m = self._m
        m.udp = True
        _lower(m.latency, region_id, d)
        if len(m.latency) == self.enough_regions and self._enough_deadline is None:
            wait = max(m.latency.values()) * (1 if self.incremental else 2)
            self._enough_deadline = now + wait
            self._move("enough regions", now)
        if mapped.family == 6:
            _lower(m.v6_latency, region_id, d)
            m.ipv6 = True
            m.global_v6 = mapped  # the last v6 answer
            m.v6_counters[mapped] = m.v6_counters.get(mapped, 0) + 1
            return
        _lower(m.v4_latency, region_id, d)
        m.ipv4 = True
        m.v4_counters[mapped] = m.v4_counters.get(mapped, 0) + 1
        if m.global_v4 is None:
            m.global_v4 = mapped  # the first v4 answer; every later one is compared with it
        elif mapped != m.global_v4:
            m.mapping_varies = True
        elif m.mapping_varies is None:
            m.mapping_varies = False

    def _finish(self, label: str, now: float) -> None:
        self._move(label, now)
        for key in self._pending:
            self._pending[key] = []
        self._in_flight.clear()
        m = self._m
        report = Report(
            udp=m.udp,
            ipv6=m.ipv6,
            ipv4=m.ipv4,
            ipv6_can_send=m.sent[6] > m.failed[6],
            ipv4_can_send=m.sent[4] > m.failed[4],
            os_has_ipv6=self.os_has_ipv6,
            mapping_varies_by_dest_ip=m.mapping_varies,
            region_latency=dict(m.latency),
            region_v4_latency=dict(m.v4_latency),
            region_v6_latency=dict(m.v6_latency),
            global_v4_counters=dict(m.v4_counters),
            global_v6_counters=dict(m.v6_counters),
            global_v4=m.global_v4,
            global_v6=m.global_v6,
            at=now,
            full=not self.incremental,
        )
        home = pick_preferred_derp(
            self.derp_map,
            report,
            self.previous,
            timing=self.timing,
            now=now,
            started=self._started,
            previous_home=self.previous_home,
            last_derp_activity=self._last_derp_activity,
        )
        self._report = dataclasses.replace(report, preferred_derp=home)

    # --- bookkeeping ---------------------------------------------------------------------------------

    def _move(self, label: str, now: float) -> None:
        new = TRANSITIONS[(self.state, label)]
        old, self.state = self.state, new
        if self._tracer is not None:
            self._trace(now, "transition", f"{old.value} -> {new.value}", label, b"", None)

    def _drop(self, reason: str, data: bytes, src: Endpoint, now: float, detail: str = "") -> bool:
        self.counters[reason] += 1
        if self._tracer is not None:
            self._trace(now, "dropped", detail or DROP_REASONS[reason], reason, data, src)
        return False

    def _trace(
        self, now: float, kind: TraceKind, detail: str, reason: str | None, raw: bytes, endpoint: Endpoint | None
    ) -> None:
        assert self._tracer is not None
        self._tracer(TraceRecord(now, self.name, None, kind, detail, reason, raw, endpoint))


__all__ = ["DROP_REASONS", "ENOUGH_REGIONS", "TRANSITIONS", "Netcheck", "State"]
