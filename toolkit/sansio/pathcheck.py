"""ValidatePath's measurements for :class:`~toolkit.sansio.peerflow.PeerFlow`: validation bursts and PathGood.

A burst to one endpoint is ``Timing.validate_probes`` disco pings padded to 1280 bytes on the wire (the loss
probes; protocols.md §4.12's safe wire MTU) and one ping per size of :data:`MTU_PROBES` (the path-MTU probes),
sent through :meth:`PeerPath.probe`, so PeerPath still owns every ping. :class:`PathCheck` keeps the recent
bursts per endpoint, records their pongs and timeouts (from PeerPath's events), picks the burst that measures
an endpoint and judges it (:meth:`PathCheck.judge`): loss ≤ ``validate_max_loss``, latency ≤
``path_max_latency``, path MTU (the largest answered probe) ≥ 1280.

natkit probes up to Ethernet's 1500 bytes, not the table's jumbo sizes (8000, 9000): the node's socket does
not set DF, so a larger IPv4 datagram would be fragmented on the way and prove nothing.
"""

from __future__ import annotations

from toolkit.sansio.peerflow_types import Burst, PathValidated
from toolkit.sansio.peerpath import PeerPath
from toolkit.sansio.peerpath_types import (
    SAFE_WIRE_MTU,
    PingTimedOut,
    PongReceived,
    padding_for_wire_mtu,
    ping_wire_size,
)
from toolkit.timing import Timing
from toolkit.types import Endpoint, TxID

MTU_PROBES = (1500,)  # beside the loss probes at SAFE_WIRE_MTU


class PathCheck:
    """The validation bursts of one peer's candidates (recent ones per endpoint, oldest first)."""

    def __init__(self, path: PeerPath, timing: Timing) -> None:
        self.path, self.timing = path, timing
        self.bursts: dict[Endpoint, list[Burst]] = {}
        self._burst_of: dict[TxID, Endpoint] = {}

    def burst_for(self, ep: Endpoint | None) -> Burst | None:
        """The burst that measures ``ep``: the oldest one with an answer (the path was open when it left; an
        earlier one may have hit a closed NAT), else the newest."""
        bursts = self.bursts.get(ep, []) if ep is not None else []
        return next((b for b in bursts if b.answered), bursts[-1] if bursts else None)

    def send(self, ep: Endpoint, now: float, *, fresh: bool = False) -> Burst:
        """Send a burst to ``ep`` now (one per endpoint and instant unless ``fresh``: the ping-back's burst
        follows a ping that proved the peer's NAT open, even in the instant of a round's burst on a link
        without latency); bursts older than ``ping_timeout`` go."""
        recent = [b for b in self.bursts.get(ep, []) if now - b.sent_at < self.timing.ping_timeout]
        if recent and recent[-1].sent_at == now and not fresh:
            return recent[-1]
        burst = Burst(ep, now)
        v6 = ep.is_ipv6
        sizes = [(SAFE_WIRE_MTU, True)] * self.timing.validate_probes + [(m, False) for m in MTU_PROBES]
        for size, for_loss in sizes:
            txid = self.path.probe(ep, now, padding=padding_for_wire_mtu(size, ipv6=v6))
            burst.sizes[txid] = max(size, ping_wire_size(0, ipv6=v6))
            if for_loss:
                burst.loss_probes.add(txid)
            self._burst_of[txid] = ep
        for old in self.bursts.get(ep, []):
            if old not in recent:
                for txid in old.sizes:
                    self._burst_of.pop(txid, None)
        self.bursts[ep] = [*recent, burst]
        return burst

    def pong(self, event: PongReceived, now: float) -> None:
        """A direct pong from ``event.to``: an answer if it is a burst's, and the clock for every burst's wait."""
        for burst in self.bursts.get(event.to, []):
            if event.txid in burst.sizes:
                burst.answered[event.txid] = event.latency
            burst.note_first_pong(now, event.latency, self.timing.validate_wait_min)

    def timed_out(self, event: PingTimedOut) -> None:
        ep = self._burst_of.pop(event.txid, None)
        for burst in self.bursts.get(ep, []) if ep is not None else []:
            if event.txid in burst.sizes:
                burst.lost.add(event.txid)

    def judge(self, ep: Endpoint, first_latency: float) -> PathValidated:
        """PathGood's verdict on ``ep`` from its burst and the latency of its first pong."""
        t = self.timing
        burst = self.burst_for(ep)
        if burst is None:  # pragma: no cover - ValidatePath always sends one
            loss, mtu, latency = 1.0, 0, first_latency
        else:
            loss, mtu, latency = burst.measure(first_latency)
        why = []
        if loss > t.validate_max_loss:
            why.append(f"loss {loss:.0%} > {t.validate_max_loss:.0%}")
        if latency > t.path_max_latency:
            why.append(f"latency {latency * 1000:.0f}ms > {t.path_max_latency * 1000:.0f}ms")
        if mtu < SAFE_WIRE_MTU:
            why.append(f"path MTU {mtu} < {SAFE_WIRE_MTU}")
        return PathValidated(ep, latency, loss, mtu, not why, "; ".join(why) or "good")


__all__ = ["MTU_PROBES", "PathCheck"]
