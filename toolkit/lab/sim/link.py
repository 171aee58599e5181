"""Link properties of the simulator: one-way latency, jitter, loss and bandwidth, per interface.

Each interface owns the egress side of its link to its segment (:class:`Link`), as a NIC and its
queue do. A packet handed to :meth:`Link.transmit` at time ``now``:

1. is dropped with probability ``loss`` (a Bernoulli draw from the link's own seeded stream);
2. waits for the transmitter: serialisation starts when the previous packet has left
   (``busy_until``) and takes ``len * 8 / bandwidth`` seconds (no bandwidth: instant). A packet
   that would wait longer than ``queue_delay`` seconds is dropped (a drop-tail queue, sized in
   time so it scales with the bandwidth);
3. then travels ``latency`` seconds (+ a uniform ``0..jitter``) to the far end. Deliveries keep
   their order (a FIFO wire): jitter stretches gaps but never reorders packets of one link.

:meth:`Link.transmit` returns the arrival time, or None with the drop reason in
:attr:`Link.last_drop`; counters count both. Random draws come from the stream the scheduler
hands out for ``link:<machine>/<interface>``, so the same seed loses the same packets.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from toolkit.errors import UsageError


@dataclass(frozen=True, slots=True)
class LinkParams:
    """One direction of a link: ``latency`` / ``jitter`` / ``queue_delay`` in seconds, ``loss`` 0..1,
    ``bandwidth`` in bit/s (None: unlimited)."""

    latency: float = 0.0
    loss: float = 0.0
    bandwidth: float | None = None
    jitter: float = 0.0
    queue_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0 or self.queue_delay < 0:
            raise UsageError(f"link: latency, jitter and queue delay must be >= 0 ({self})")
        if not 0.0 <= self.loss <= 1.0:
            raise UsageError(f"link: loss {self.loss!r} is not a probability in 0..1")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise UsageError(f"link: bandwidth {self.bandwidth!r} must be > 0 bit/s (or none for unlimited)")


class Link:
    """The egress half of one interface's link (see the module docstring)."""

    __slots__ = ("_last_arrival", "busy_until", "counters", "last_drop", "params", "rng")

    def __init__(self, params: LinkParams, rng: random.Random) -> None:
        self.params = params
        self.rng = rng
        self.busy_until = 0.0
        self._last_arrival = 0.0
        self.last_drop: str | None = None
        self.counters: Counter[str] = Counter()

    def transmit(self, size: int, now: float) -> float | None:
        """When a packet of ``size`` bytes sent at ``now`` arrives, or None if it is lost."""
        p = self.params
        if p.loss and self.rng.random() < p.loss:
            self._drop("loss")
            return None
        start = now
        if p.bandwidth is not None:
            start = max(now, self.busy_until)
            if start - now > p.queue_delay:
                self._drop("queue-full")
                return None
            self.busy_until = start + size * 8 / p.bandwidth
            start = self.busy_until
        arrival = start + p.latency
        if p.jitter:
            arrival += self.rng.random() * p.jitter
            arrival = max(arrival, self._last_arrival)  # a FIFO wire: no reordering
            self._last_arrival = arrival
        self.counters["sent"] += 1
        self.counters["bytes"] += size
        return arrival

    def _drop(self, reason: str) -> None:
        self.last_drop = reason
        self.counters[reason] += 1


__all__ = ["Link", "LinkParams"]
