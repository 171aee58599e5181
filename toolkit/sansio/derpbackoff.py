"""A DERP client's reconnect backoff (its send limit is :class:`~toolkit.sansio.tokenbucket.TokenBucket`).

:class:`ReconnectBackoff` says how long to wait before dialing again after a connection broke or a
dial failed. Without a hint it backs off exponentially, ``derp_reconnect_min`` doubling up to
``derp_reconnect_max``, each delay multiplied by a jitter factor in [0.5, 1.5) (capped at the
maximum), like Tailscale's ``backoff`` package that magicsock's DERP code uses. A Restarting frame
(§2.3) overrides that: the next dial waits exactly ``reconnect_in``, and for ``try_for`` seconds
after it failed dials are retried every ``derp_reconnect_min`` before the normal backoff resumes.
A successful connection resets the backoff.

Nothing here reads a clock or a random source: ``now`` and the jitter draw ``u`` in [0, 1) come from
the caller (design.md §2).
"""

from __future__ import annotations

from toolkit.timing import Timing


class ReconnectBackoff:
    """The delay before the next dial; see the module docstring for the rules."""

    def __init__(self, timing: Timing) -> None:
        self.minimum = timing.derp_reconnect_min
        self.maximum = timing.derp_reconnect_max
        self.failures = 0
        self._hint: tuple[float, float] | None = None
        self._fast_until: float | None = None

    def connected(self) -> None:
        """A connection completed its handshake: start over at the minimum."""
        self.failures = 0
        self._fast_until = None

    def restarting(self, reconnect_in: float, try_for: float) -> None:
        """The server sent Restarting: the next delay is ``reconnect_in``, then fast retries for ``try_for``."""
        self._hint = (max(0.0, reconnect_in), max(0.0, try_for))

    @property
    def restart_hint(self) -> tuple[float, float] | None:
        """The pending ``(reconnect_in, try_for)`` of a Restarting frame, until the next delay uses it."""
        return self._hint

    def next_delay(self, now: float, u: float) -> float:
        """Seconds to wait before the next dial, decided at ``now``; ``u`` is a uniform draw in [0, 1)."""
        if self._hint is not None:
            reconnect_in, try_for = self._hint
            self._hint = None
            self.failures = 0
            self._fast_until = now + reconnect_in + try_for
            return reconnect_in
        if self._fast_until is not None:
            if now < self._fast_until:
                return self.minimum
            self._fast_until = None
        base = min(self.maximum, self.minimum * (2.0 ** min(self.failures, 32)))
        self.failures += 1
        return min(self.maximum, base * (0.5 + u))


__all__ = ["ReconnectBackoff"]
