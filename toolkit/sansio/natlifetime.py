"""The mapping-lifetime part of RFC 5780 behaviour discovery (§4.6): a ladder of idle bindings.

:class:`LifetimeLadder` is the base of :class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery` that
runs the optional lifetime test once mapping, filtering and hairpinning are done. Sockets
``lifetime-1..N`` each open a binding at once (a Binding request to the server); binding i is then
left idle for the i-th wait of a geometric ladder (:func:`lifetime_waits`: ``start`` x ``step``^k up to
``maximum``), and socket ``lifetime-probe`` asks the server to answer to that binding's mapped port
(RESPONSE-PORT, RFC 5780 §7.5). An answer arriving on ``lifetime-i`` means the binding survived. Each
binding is probed once (an answer refreshes it); the ladder runs in parallel, as §4.6 allows, and stops
probing longer waits at the first expired binding. Idle times run from the binding's answer to the
probe's send (the one really measured, also when the driver woke late); the NAT sees the probe's answer
about one round trip later. The result is a bracket: the longest idle time survived and the shortest
one that expired.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.sansio.natgraph import ERROR, EXPIRED, NO_BINDING, OUTLIVED
from toolkit.sansio.stunprobes import Probe, ProbeRunner
from toolkit.sansio.trace import Tracer
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

PROBE = "lifetime-probe"  # the socket the RESPONSE-PORT probes leave from


@dataclass(slots=True)
class Binding:
    """A lifetime-ladder binding: opened at once, probed after ``wait`` seconds idle.

    ``idle`` is the idle time the probe really tested: from the binding's answer to the probe's
    first send (a driver that wakes late makes it longer than ``wait``); results use it."""

    socket: str
    wait: float
    mapped: Endpoint | None = None
    opened_at: float = 0.0
    probe_at: float | None = None
    idle: float = 0.0
    alive: bool | None = None
    settled: bool = False
    opener: Probe | None = field(default=None, repr=False)  # the request that opens the binding
    probe: Probe | None = field(default=None, repr=False)  # the RESPONSE-PORT probe


def lifetime_waits(start: float, step: float, maximum: float) -> tuple[float, ...]:
    """The ladder of idle times: ``start``, ``start*step``, ... and ``maximum`` last."""
    if not 0 < start <= maximum or step <= 1:
        raise ValueError(f"lifetime ladder needs 0 < start <= maximum and step > 1 (got {start}, {step}, {maximum})")
    waits: list[float] = []
    t = start
    while t < maximum - 1e-9:
        waits.append(round(t, 3))
        t *= step
    return (*waits, maximum)


class LifetimeLadder(ProbeRunner):
    """Runs the ladder against ``server`` (set by the subclass) over ``waits``; notes go to ``_notes``.

    The subclass starts it with :meth:`_begin_lifetime`, hands every finished probe tagged with a
    :class:`Binding` to :meth:`_on_lifetime`, and ends the run in :meth:`_finish_run` with the edge label
    (``expired``, ``outlived``, ``no binding`` or ``error``); :meth:`lifetime_bounds` is the result."""

    server: Endpoint

    def __init__(
        self,
        *,
        waits: tuple[float, ...],
        rng: Callable[[int], bytes],
        timing: Timing = DEFAULT,
        software: str | None = "natkit",
        tracer: Tracer | None = None,
        node: str = "nat-type",
    ) -> None:
        super().__init__(rng=rng, timing=timing, software=software, tracer=tracer, node=node)
        self._waits = waits
        self._bindings: list[Binding] = []
        self._notes: list[str] = []

    @abc.abstractmethod
    def _finish_run(self, label: str, now: float) -> None:
        """Provided by the subclass."""

    def lifetime_bounds(self) -> tuple[float | None, float | None]:
        """(the longest idle time a binding survived, the shortest after which one was gone), None if none."""
        alive = [b.idle for b in self._bindings if b.alive is True]
        dead = [b.idle for b in self._bindings if b.alive is False]
        return (max(alive) if alive else None, min(dead) if dead else None)

    # --- the ladder ----------------------------------------------------------------------------------

    def _begin_lifetime(self, now: float) -> None:
        for i, wait in enumerate(self._waits, 1):
            binding = Binding(f"lifetime-{i}", wait)
            self._bindings.append(binding)
            binding.opener = self._begin(f"lifetime binding {i}", binding.socket, self.server, now, tag=binding)

    def _extra_timer(self) -> float | None:
        due = [b.probe_at for b in self._bindings if b.probe_at is not None and b.probe is None and not b.settled]
        return min(due) if due else None

    def _timer_due(self, now: float) -> None:
        for i, b in enumerate(self._bindings, 1):
            if b.probe_at is not None and b.probe_at <= now and b.probe is None and not b.settled:
                assert b.mapped is not None
                name = f"lifetime probe {i} after {b.wait:g} s"
                b.idle = round(now - b.opened_at, 3)
                port = b.mapped.port  # the server answers to (source IP of the probe, this port)
                b.probe = self._begin(name, PROBE, self.server, now, response_port=port, answer_socket=b.socket, tag=b)

    def _on_lifetime(self, probe: Probe, binding: Binding, now: float) -> None:
        r, failed = probe.txn.result, probe.txn.failed
        if probe is binding.opener:
            if r is None:
                self._record(probe, "no binding: the request was not answered")
                binding.settled = True
            else:
                binding.mapped, binding.opened_at = r.mapped, now
                binding.probe_at = now + binding.wait
                self._record(probe, f"binding open; probe after {binding.wait:g} s idle")
        else:
            binding.settled = True
            if r is not None and probe.answered_on != binding.socket:
                failed, r = None, None  # answered to the probe's own port
                self._notes.append("the server ignored RESPONSE-PORT: lifetime unknown")
            if r is not None:
                binding.alive = True
                self._record(probe, f"the binding was alive after {binding.idle:g} s idle", wait=binding.idle)
            elif failed is not None and failed.kind == "timeout":
                binding.alive = False
                self._record(probe, f"the binding was gone after {binding.idle:g} s idle", wait=binding.idle)
                self._cancel_longer(binding.wait)
            else:
                self._record(probe, "the server refused or ignored RESPONSE-PORT", wait=binding.idle)
                if failed is not None:
                    self._notes.append(f"the server refused RESPONSE-PORT ({failed.describe()}): lifetime unknown")
                self._cancel_longer(-1.0)
                self._finish_lifetime(ERROR, now)
                return
        if all(b.settled for b in self._bindings):
            self._finish_lifetime(None, now)

    def _cancel_longer(self, wait: float) -> None:
        """Stop every binding that waits longer than ``wait``: it would expire too."""
        for b in self._bindings:
            if b.wait > wait and not b.settled:
                b.settled = True
                if b.probe is not None and self._cancel(b.probe):
                    self._record(
                        b.probe, "not needed: a shorter wait already expired", outcome="cancelled", wait=b.idle
                    )
                elif b.opener is not None:
                    self._cancel(b.opener)

    def _finish_lifetime(self, label: str | None, now: float) -> None:
        survived, expired = self.lifetime_bounds()
        if survived is not None and expired is not None and survived > expired:
            self._notes.append("a binding outlived a shorter-lived one: the NAT's timer is not exact")
        if label is None:
            label = EXPIRED if expired is not None else OUTLIVED if survived is not None else NO_BINDING
        self._finish_run(label, now)


__all__ = ["PROBE", "Binding", "LifetimeLadder", "lifetime_waits"]
