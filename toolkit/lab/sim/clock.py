"""The simulator's virtual clock, event scheduler and seeded randomness.

Nothing in the ``sim`` backend reads the wall clock or an unseeded random source: time is a float
that only moves when :meth:`Scheduler.run_until` (or :meth:`Scheduler.run`) pops the next event,
and every random choice (NAT port allocation, ephemeral ports, link loss and jitter, transaction
ids of the sans-IO cores) comes from :meth:`Scheduler.rng_for`. Same seed, same event order, same
packets, byte for byte (issue 5).

Events at the same instant run in the order they were scheduled (a sequence number breaks ties),
so the order never depends on hashing or on object identity. Cancelled events stay in the heap
and are skipped when popped (lazy deletion keeps :meth:`Timer.cancel` O(1)).

Random streams: one seed, one :class:`random.Random` per named purpose (``"nat:router1"``,
``"link:internet"``, ...), each seeded from ``f"{seed}/{purpose}"``. Python seeds a ``Random``
from a ``str`` through SHA-512, independent of ``PYTHONHASHSEED``, so a stream depends only on the
seed and its name: adding a lossy link to a lab does not change the ports its NATs pick.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

Callback = Callable[..., object]


class Timer:
    """A scheduled call; :meth:`cancel` before it runs and it never runs."""

    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callback, args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    """A virtual clock with an event heap, and the lab's seeded random streams.

    ``now`` starts at ``start`` (0.0). :meth:`call_at` / :meth:`call_later` schedule callbacks;
    :meth:`run_until` runs every event due up to a time and leaves ``now`` there; :meth:`run`
    runs until no event is left (or ``limit`` events ran, a guard against endless timer loops).
    """

    def __init__(self, seed: int | str = 0, start: float = 0.0) -> None:
        self.seed = seed
        self.now = start
        self.events_run = 0
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self._streams: dict[str, random.Random] = {}

    # --- randomness ------------------------------------------------------------------------------

    def rng_for(self, purpose: str) -> random.Random:
        """The random stream for ``purpose`` (created on first use, seeded from the seed and the name)."""
        stream = self._streams.get(purpose)
        if stream is None:
            stream = self._streams[purpose] = random.Random(f"{self.seed}/{purpose}")
        return stream

    def rand_bytes(self, purpose: str) -> Callable[[int], bytes]:
        """An ``rng(n) -> bytes`` callable for a sans-IO core (transaction ids, keys), from one stream."""
        return self.rng_for(purpose).randbytes

    # --- scheduling ------------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callback, *args: Any) -> Timer:
        """Run ``callback(*args)`` at virtual time ``when`` (now, if ``when`` is in the past)."""
        when = max(when, self.now)
        timer = Timer(when, callback, args)
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, timer))
        return timer

    def call_later(self, delay: float, callback: Callback, *args: Any) -> Timer:
        return self.call_at(self.now + delay, callback, *args)

    def next_time(self) -> float | None:
        """When the next live event is due (None if none is)."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def step(self) -> bool:
        """Run the next live event; False when there is none."""
        heap = self._heap
        while heap:
            when, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            self.now = when
            self.events_run += 1
            timer.callback(*timer.args)
            return True
        return False

    def run_until(self, when: float) -> None:
        """Run every event due at or before ``when``, then set ``now`` to ``when``."""
        heap = self._heap
        pop = heapq.heappop
        while heap and heap[0][0] <= when:
            at, _, timer = pop(heap)
            if timer.cancelled:
                continue
            self.now = at
            self.events_run += 1
            timer.callback(*timer.args)
        self.now = max(self.now, when)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run(self, limit: int = 10_000_000) -> int:
        """Run until no event is left; returns how many ran. Raises RuntimeError after ``limit`` events."""
        ran = 0
        while self.step():
            ran += 1
            if ran >= limit:
                raise RuntimeError(f"simulation still busy after {limit} events at t={self.now:.3f}")
        return ran

    def run_while(self, busy: Callable[[], bool], timeout: float) -> bool:
        """Run events while ``busy()`` holds, for at most ``timeout`` virtual seconds; True if it stopped
        holding, False when the deadline or the end of all events came first (``now`` stays put)."""
        deadline = self.now + timeout
        while busy():
            nxt = self.next_time()
            if nxt is None or nxt > deadline:
                return False
            self.step()
        return True

    @property
    def pending(self) -> int:
        """How many live events wait in the heap."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)


__all__ = ["Scheduler", "Timer"]
