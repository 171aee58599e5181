"""A node's own endpoints: local interface addresses plus STUN-discovered ones, and the re-STUN schedule.

Follows magicsock's ``updateEndpoints`` / ``ReSTUN`` (protocols.md §4.1, §5.2) in a reduced form:

* A *round* sends one Binding request (Tailscale's 40-byte ``tailnode`` request, protocols.md §3.1) to
  every STUN endpoint of the DERP map (``DERPNode.stun_endpoints()``, v4 and v6) from the node's one
  socket, each a :class:`~toolkit.sansio.stunclient.StunTransaction` (RFC 8489 §6.2.1 retransmits).
  The round ends when every transaction is done or ``Timing.netcheck_report_timeout`` after it started
  (the unanswered ones are abandoned), like a netcheck report.
* Own endpoints = the STUN-mapped addresses (in server order, deduplicated), then the local ones.
  While a round runs, each answer is added to the previous round's addresses; at its end the STUN part
  becomes exactly this round's answers (a NAT that changed its mapping loses the old one).
* Re-STUN: after each round, again after a random delay in ``[restun_min, restun_max]`` (magicsock's
  ``periodicReSTUN``; natkit re-STUNs also when idle), and on demand (:meth:`OwnEndpoints.restun`,
  when a peer wants fresh endpoints for a CallMeMaybe); a demand during a round is folded into it.
* :meth:`OwnEndpoints.take_refresh` tells the node when to hand the endpoints to its peers again
  (``PeerPath.set_my_endpoints`` marks them fresh): after each STUN answer, at each round's end and
  when the local addresses change. :attr:`OwnEndpoints.version` counts real changes (``EndpointsChanged``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from toolkit.codec import stun
from toolkit.errors import BadValueError, DecodeError
from toolkit.sansio.control_netmap import parse_endpoints, parse_key
from toolkit.sansio.stunclient import StunTransaction
from toolkit.sansio.trace import Tracer
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePublicKey, TxID

_STUN_TXID = slice(8, 20)  # RFC 8489 §5: the 96-bit transaction id after the magic cookie


class OwnEndpoints:
    """The node's endpoints and its STUN rounds (sans-IO: ``now`` and randomness come from the caller)."""

    def __init__(
        self,
        rng: Callable[[int], bytes],
        *,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        node: str = "node",
    ) -> None:
        self._rng, self.timing, self.tracer, self.node = rng, timing, tracer, node
        self.servers: tuple[Endpoint, ...] = ()
        self.local: tuple[Endpoint, ...] = ()
        self.stun: tuple[Endpoint, ...] = ()  # the STUN part of the endpoints now published
        self.endpoints: tuple[Endpoint, ...] = ()
        self.version = 0  # bumped on every change of ``endpoints``
        self.rounds = 0
        self.counters: Counter[str] = Counter()
        self._round: dict[TxID, StunTransaction] = {}
        self._answers: list[Endpoint] = []
        self._round_end: float | None = None
        self._next_restun: float | None = None
        self._refresh = False
        self._out: list[tuple[bytes, Endpoint]] = []

    # --- queries and outputs -----------------------------------------------------------------------

    @property
    def in_round(self) -> bool:
        return self._round_end is not None

    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        for tx in self._round.values():
            self._out += tx.datagrams_to_send()
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        due = [t for tx in self._round.values() if (t := tx.get_timer()) is not None]
        due += [t for t in (self._round_end, self._next_restun) if t is not None]
        return min(due, default=None)

    def take_refresh(self) -> bool:
        """True once after the endpoints were (re)confirmed: hand them to every peer again."""
        fresh, self._refresh = self._refresh, False
        return fresh

    # --- inputs ------------------------------------------------------------------------------------

    def set_servers(self, servers: Iterable[Endpoint], now: float) -> None:
        """The STUN servers (from the DERP map); a new set starts a round at once."""
        wanted = tuple(dict.fromkeys(servers))
        if wanted == self.servers:
            return
        self.servers = wanted
        self._abandon()
        self.restun(now, "stun servers changed")

    def set_local(self, endpoints: Iterable[Endpoint], now: float) -> None:
        """The node's interface addresses with its UDP port (from the driver)."""
        local = tuple(dict.fromkeys(endpoints))
        if local != self.local:
            had = bool(self.local)
            self.local = local
            self._publish()
            if had:  # magicsock re-STUNs on a link change
                self.restun(now, "local addresses changed")

    def restun(self, now: float, why: str) -> None:
        """Start a STUN round now unless one runs (then this demand is served by it)."""
        if self.in_round:
            self.counters["restun-folded"] += 1
            return
        self.counters[f"restun {why}"] += 1
        self.rounds += 1
        self._answers = []
        self._next_restun = None
        if not self.servers:
            self._end_round(now)
            return
        for server in self.servers:
            txid = TxID(self._rng(12))
            self._round[txid] = StunTransaction(
                server, txid, stun.tailnode_request(txid), self.timing, now, tracer=self.tracer, node=self.node
            )
        self._round_end = now + self.timing.netcheck_report_timeout

    def receive_stun(self, data: bytes, src: Endpoint, now: float) -> bool:
        """A STUN datagram on the node's socket; False if it answers none of our transactions."""
        tx = self._round.get(TxID(bytes(data[_STUN_TXID]))) if len(data) >= 20 else None
        if tx is None or not tx.receive_datagram(data, src, now):
            return False
        self._settle(tx, now)
        return True

    def handle_timer(self, now: float) -> None:
        for tx in list(self._round.values()):
            tx.handle_timer(now)
            if tx.done:
                self._settle(tx, now)
        if self._round_end is not None and now >= self._round_end:
            self._end_round(now)
        if self._next_restun is not None and now >= self._next_restun:
            self.restun(now, "periodic")

    # --- internals ---------------------------------------------------------------------------------

    def _settle(self, tx: StunTransaction, now: float) -> None:
        if tx.done and self._round.pop(tx.txid, None) is not None:
            self._out += tx.datagrams_to_send()
            if tx.result is not None and tx.result.mapped is not None:
                self.counters["stun-answered"] += 1
                self._answers.append(tx.result.mapped)
                self.stun = tuple(dict.fromkeys((*self._answers, *self.stun)))
                self._publish()
            else:
                self.counters["stun-failed"] += 1
        if not self._round and self.in_round:
            self._end_round(now)

    def _end_round(self, now: float) -> None:
        self.counters["stun-abandoned"] += len(self._round)
        self._abandon()
        self.stun = tuple(dict.fromkeys(self._answers))
        self._publish()
        span = self.timing.restun_max - self.timing.restun_min
        self._next_restun = now + self.timing.restun_min + span * int.from_bytes(self._rng(2), "big") / 0xFFFF

    def _abandon(self) -> None:
        self._round.clear()
        self._round_end = None

    def _publish(self) -> None:
        self._refresh = True
        endpoints = tuple(dict.fromkeys((*self.stun, *self.local)))
        if endpoints != self.endpoints:
            self.endpoints = endpoints
            self.version += 1


# --- the endpoint cache (persisted by drivers between runs) -------------------------------------------

CACHE_VERSION = 1
MAX_CACHED = 16  # endpoints kept per peer


def cache_to_json(cache: Mapping[NodePublicKey, Iterable[Endpoint]]) -> dict[str, Any]:
    """``{"Version": 1, "Peers": {"nodekey:<hex>": ["203.0.113.7:41641", ...]}}``."""
    peers = {str(key): [str(ep) for ep in list(eps)[:MAX_CACHED]] for key, eps in cache.items()}
    return {"Version": CACHE_VERSION, "Peers": peers}


def cache_from_json(obj: object) -> tuple[dict[NodePublicKey, tuple[Endpoint, ...]], int]:
    """The cache and how many entries were unusable (skipped); never raises on a bad object."""
    if not isinstance(obj, dict) or obj.get("Version") != CACHE_VERSION or not isinstance(obj.get("Peers"), dict):
        return {}, 1
    out: dict[NodePublicKey, tuple[Endpoint, ...]] = {}
    bad = 0
    for key_text, items in obj["Peers"].items():
        try:
            key = parse_key("Peers", key_text, NodePublicKey)
            eps = parse_endpoints(str(key_text), items)
        except (BadValueError, DecodeError):
            bad += 1
            continue
        out[key] = eps[:MAX_CACHED]
    return out, bad


__all__ = ["CACHE_VERSION", "OwnEndpoints", "cache_from_json", "cache_to_json"]
