"""The node's WireGuard glue: one :class:`~toolkit.sansio.wireguard.WireGuardDevice` peer per netmap peer,
each at a per-peer *placeholder* endpoint that the node maps to the real path (protocols.md §4.3).

magicsock hands wireguard-go an opaque ``conn.Endpoint`` per peer and decides itself, per packet, where
it goes (``endpoint.send``: the trusted UDP address, or it and DERP). natkit does the same with plain
endpoints: WireGuard sees peer *n* at ``127.3.3.41:<n>`` (next to magicsock's DERP magic address
``127.3.3.40``), and the node turns each datagram for a placeholder into UDP and/or DERP sends
(``PeerFlow.note_send``). Received datagrams are fed with the placeholder as their source when the
sender is known (a source that sent us an authenticated disco message, or a DERP source key), so
WireGuard's roaming (whitepaper §2.1) never replaces the placeholder. A datagram from an unknown source
is still fed, like magicsock's ``lazyEndpoint``: if it authenticates, its source is learnt for the peer
and the placeholder is put back at once (:meth:`WireGuardGlue.receive`).

Tracing: the device's records carry the placeholder; the glue rewrites them to the real address: a
received record gets the source the datagram came from, and a sent record is held back until the node
knows the path and re-emitted once per real send (:meth:`WireGuardGlue.sent_records`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import replace

from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.sansio.wireguard import PeerEndpointChanged, PeerStatus, WireGuardDevice
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

PLACEHOLDER_IP = ipaddress.IPv4Address("127.3.3.41")
MAX_LEARNT = 4096  # remembered real addresses of peers; the oldest go first


def is_placeholder(endpoint: Endpoint) -> bool:
    return endpoint.ip == PLACEHOLDER_IP


class WireGuardGlue:
    """A WireGuard device whose peers live at placeholders; see the module docstring."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        rng: Callable[[int], bytes],
        *,
        epoch: float = 0.0,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        node: str = "node",
    ) -> None:
        self.tracer = tracer
        self.device = WireGuardDevice(
            private_key, rng=rng, epoch=epoch, timing=timing, tracer=self._trace if tracer else None, name=node
        )
        self._placeholders: dict[NodePublicKey, Endpoint] = {}
        self._peers: dict[Endpoint, NodePublicKey] = {}
        self._next = 1
        self.learnt: dict[Endpoint, NodePublicKey] = {}  # real UDP addresses known to be a peer's, oldest first
        self._src: Endpoint | None = None  # the real source of the datagram being received
        self._stash: dict[bytes, list[TraceRecord]] = {}

    # --- peers ---------------------------------------------------------------------------------------

    def upsert_peer(self, key: NodePublicKey, allowed_ips: Iterable[str]) -> Endpoint:
        """Add the peer (or replace its allowed IPs); returns its placeholder."""
        ph = self._placeholders.get(key)
        if ph is None:
            while Endpoint(PLACEHOLDER_IP, self._next) in self._peers:
                self._next = self._next % 0xFFFF + 1
            ph = Endpoint(PLACEHOLDER_IP, self._next)
            self._next = self._next % 0xFFFF + 1
            self._placeholders[key], self._peers[ph] = ph, key
        self.device.add_peer(key, allowed_ips=list(allowed_ips), endpoint=ph)
        return ph

    def remove_peer(self, key: NodePublicKey) -> None:
        ph = self._placeholders.pop(key, None)
        if ph is not None:
            del self._peers[ph]
        self.learnt = {src: k for src, k in self.learnt.items() if k != key}
        self.device.remove_peer(key)

    def placeholder(self, key: NodePublicKey) -> Endpoint | None:
        return self._placeholders.get(key)

    def peer_at(self, endpoint: Endpoint) -> NodePublicKey | None:
        """The peer whose placeholder is ``endpoint``, or who was learnt at that real address."""
        return self._peers.get(endpoint) or self.learnt.get(endpoint)

    def learn(self, src: Endpoint, key: NodePublicKey) -> None:
        """``src`` is the peer's: it sent an authenticated disco message from there, or we send to it."""
        self.learnt.pop(src, None)
        self.learnt[src] = key
        while len(self.learnt) > MAX_LEARNT:
            del self.learnt[next(iter(self.learnt))]

    def status(self) -> dict[NodePublicKey, PeerStatus]:
        return {s.public_key: s for s in self.device.peer_status()}

    # --- data path -----------------------------------------------------------------------------------

    def send_packet(self, packet: bytes, now: float) -> None:
        self.device.send_packet(packet, now)

    def receive(self, data: bytes, src: Endpoint, peer: NodePublicKey | None, now: float) -> None:
        """A WireGuard datagram from ``src`` (a UDP address or a DERP magic address); ``peer`` if known."""
        ph = self._placeholders.get(peer) if peer is not None else None
        self._src = src
        try:
            self.device.receive_datagram(data, ph if ph is not None else src, now)
        finally:
            self._src = None
        self._keep_placeholders()

    def handle_timer(self, now: float) -> None:
        self.device.handle_timer(now)

    def datagrams(self) -> list[tuple[bytes, Endpoint]]:
        """WireGuard's datagrams (to a placeholder, or to a learnt source), after putting placeholders back."""
        self._keep_placeholders()
        return self.device.datagrams_to_send()

    def sent_records(self, data: bytes) -> list[TraceRecord]:
        """The device's held-back "sent" records of ``data`` (empty without a tracer)."""
        return self._stash.pop(bytes(data), [])

    def emit(self, record: TraceRecord) -> None:
        if self.tracer is not None:
            self.tracer(record)

    # --- internals -----------------------------------------------------------------------------------

    def _keep_placeholders(self) -> None:
        """Drain the device's events: a peer that roamed to a real address goes back to its placeholder."""
        while (event := self.device.next_event()) is not None:
            if isinstance(event, PeerEndpointChanged) and not is_placeholder(event.new):
                ph = self._placeholders.get(event.peer)
                if ph is not None:
                    self.learn(event.new, event.peer)
                    self.device.set_peer_endpoint(event.peer, ph)

    def _trace(self, record: TraceRecord) -> None:
        ep = record.endpoint
        if ep is not None and is_placeholder(ep):
            if record.kind == "sent":
                self._stash.setdefault(bytes(record.raw), []).append(record)
                return
            record = replace(record, endpoint=self._src)
        self.emit(record)


__all__ = ["MAX_LEARNT", "PLACEHOLDER_IP", "WireGuardGlue", "is_placeholder"]
