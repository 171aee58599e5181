"""The token bucket both ends of a DERP connection use (protocols.md §2.3, Go's ``x/time/rate``).

A server may announce a per-client send limit in ServerInfo (``TokenBucketBytesPerSecond``,
``TokenBucketBytesBurst``): :class:`~toolkit.sansio.derpserver.DerpServerCore` charges every SendPacket
to the sender's bucket and the client (:class:`~toolkit.sansio.derpclient.DerpClientConn`) keeps the
same bucket so it does not send what the server would drop; the server also paces its PeerGone(NotHere)
answers with one (1/s, burst 3). The bucket behaves like the ``golang.org/x/time/rate`` limiter Tailscale
uses: it starts full (``burst`` tokens), refills at ``rate`` tokens per second up to ``burst``, and
:meth:`TokenBucket.allow` spends ``n`` tokens only when they are all there (nothing is ever delayed:
whoever asks drops what does not fit). As in Go, a burst of 0 lets nothing through and a rate of 0 never
refills. ``now`` is the caller's clock (design.md §2); time going backwards refills nothing.
"""

from __future__ import annotations


class TokenBucket:
    """``rate`` tokens per second up to ``burst``, full at the start (``now``: when it starts, or the
    first :meth:`allow`). Raises ``ValueError`` for a negative rate or burst."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        if rate < 0 or burst < 0:
            raise ValueError(f"a token bucket needs rate >= 0 and burst >= 0, got rate={rate} burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)  # as of ``stamp``
        self.stamp = now

    def allow(self, n: float, now: float) -> bool:
        """Spend ``n`` tokens at ``now`` if the bucket holds them; False (nothing spent) otherwise."""
        stamp = self.stamp
        if stamp is None:
            self.stamp = now
        elif now > stamp:
            tokens = self.tokens + (now - stamp) * self.rate
            self.tokens = tokens if tokens < self.burst else self.burst
            self.stamp = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


__all__ = ["TokenBucket"]
