"""The sans-IO WireGuard device: peers, cryptokey routing, handshakes, keypairs, transport, timers.

Follows the WireGuard whitepaper (§2 cryptokey routing, §5.4 handshake, §5.4.6 key confirmation,
§6 timers) and protocols.md §8, behaving like wireguard-go's ``device`` package (``send.go``,
``receive.go``, ``timers.go``, ``peer.go``) so that it interoperates with it. design.md §2: this core
never reads a clock or a random source and never touches a socket or a TUN. Inputs are
:meth:`~WireGuardDevice.receive_datagram` (a UDP payload and its source),
:meth:`~WireGuardDevice.send_packet` (an IP packet read from the TUN) and
:meth:`~WireGuardDevice.handle_timer`; outputs are pulled with :meth:`~WireGuardDevice.datagrams_to_send`,
:meth:`~WireGuardDevice.packets_received`, :meth:`~WireGuardDevice.get_timer` and
:meth:`~WireGuardDevice.next_event` (events: :mod:`toolkit.sansio.wgevents`).

Module map: the device's state, handshake messages and cookies in :mod:`toolkit.sansio.wghandshake`;
the send and transport-receive paths in :mod:`toolkit.sansio.wgtransport`; keypair slots and
per-peer memory in :mod:`toolkit.sansio.wgpeer`; timer rules in :mod:`toolkit.sansio.wgtimers`; this
module adds the public API: configuration, inputs, outputs, introspection and the timer actions.

Decisions where wireguard-go leaves room or does I/O:

* ``now`` is monotonic seconds; wall time (TAI64N, "latest handshake", session export) is ``epoch + now``.
* Under load (protocols.md §8.4): the device counts handshake messages (initiations and responses of
  the right size) received in the last second; at ``load_threshold`` or more (default 128, the depth
  at which wireguard-go's handshake queue declares load) it is under load, and stays so for one more
  second (wireguard-go ``UnderLoadAfterTime``). ``force_under_load = True`` forces it (tests,
  teaching). Under load a handshake message with a valid mac1 but no valid mac2 gets a Cookie Reply
  instead of being processed. wireguard-go's per-IP token bucket under load is not modelled.
* A packet from the TUN for a peer with no known endpoint is dropped at once (``no-endpoint``) rather
  than staged for a handshake that cannot be sent.
* A persistent keepalive turned on for a peer with a known endpoint is due at once (wireguard-go sends
  one immediately); configuration calls take no ``now``, so it is due at the last ``now`` seen.
* Bad network input never raises: it is dropped, counted in ``counters`` under a reason from
  :data:`DROP_REASONS`, and traced with that reason. The only other counter is ``cookie-reply-sent``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Literal

from toolkit.codec import wireguard as wg
from toolkit.crypto import noise
from toolkit.crypto.cookie import CookieChecker
from toolkit.crypto.keys import public_key
from toolkit.errors import DecodeError, UsageError
from toolkit.sansio.allowedips import parse_prefix
from toolkit.sansio.trace import TraceRecord
from toolkit.sansio.wgevents import (
    CookieReceived,
    HandshakeCompleted,
    HandshakeGaveUp,
    HandshakeInitiated,
    KeypairConfirmed,
    KeysZeroed,
    PeerEndpointChanged,
    PeerRemoved,
    PeerStatus,
    SessionKeyRecord,
    WireGuardEvent,
)
from toolkit.sansio.wghandshake import LOAD_THRESHOLD, ip_text
from toolkit.sansio.wgpeer import Peer
from toolkit.sansio.wgtimers import PeerTimers, TimerName
from toolkit.sansio.wgtransport import TransportCore, destination
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

DEFAULT_MTU = 1420  # wg-quick's default
MAX_MESSAGE_SIZE = 65535  # protocols.md §8.5: MaxSegmentSize
MAX_CONTENT_SIZE = MAX_MESSAGE_SIZE - wg.TRANSPORT_MIN_LEN  # the largest inner packet

DROP_REASONS: dict[str, str] = {
    "truncated": "shorter than its message type needs (< 4 bytes, a short handshake message, transport < 32)",
    "bad-length": "a handshake message longer than its fixed size",
    "unknown-type": "not a WireGuard message type (01..04 then three zero bytes)",
    "oversized": "a datagram over 65535 bytes, or an inner packet over 65503 bytes",
    "bad-mac1": "mac1 of a handshake message is not for this device's key",
    "cookie-required": "under load and no valid mac2: a Cookie Reply was sent instead",
    "bad-initiation": "an initiation that does not decrypt (wrong key, altered bytes, low-order point)",
    "unknown-peer": "an initiation from a static key that is not a configured peer",
    "stale-timestamp": "an initiation whose TAI64N is not newer than the last accepted one (a replay)",
    "handshake-flood": "a second initiation from the peer within handshake_flood_interval",
    "unknown-index": "no pending handshake or keypair of this device has the message's receiver index",
    "bad-response": "a response that does not decrypt against the pending initiation",
    "bad-cookie": "a Cookie Reply that does not open",
    "expired-keypair": "transport data for a keypair older than REJECT_AFTER_TIME",
    "bad-tag": "transport data whose Poly1305 tag does not verify",
    "replay": "a transport counter already received or behind the replay window",
    "bad-ip-packet": "an inner packet that is not a well-formed IPv4/IPv6 packet",
    "allowed-ips": "an inner packet whose source address is not in the sending peer's AllowedIPs",
    "no-route": "a packet from the TUN whose destination is in no peer's AllowedIPs",
    "no-endpoint": "a packet or handshake for a peer whose endpoint is unknown",
    "staged-overflow": "the oldest packet waiting for a handshake, pushed out of the 128-packet queue",
    "gave-up": "packets waiting for a handshake that never completed (REKEY_ATTEMPT_TIME)",
    "keys-zeroed": "packets waiting when the peer's keys were erased",
    "bad-peer-key": "a peer public key that gives an all-zero X25519 secret (cannot handshake)",
}
_SLOTS: tuple[Literal["previous", "current", "next"], ...] = ("previous", "current", "next")


class WireGuardDevice(TransportCore):
    """A WireGuard interface without I/O (contract: wg_contract; behaviour: the module docstring)."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        *,
        rng: Callable[[int], bytes],
        epoch: float,
        timing: Timing = DEFAULT,
        tracer: Callable[[TraceRecord], None] | None = None,
        mtu: int = DEFAULT_MTU,
        name: str | None = None,
        load_threshold: int = LOAD_THRESHOLD,
    ) -> None:
        super().__init__(
            private_key, rng=rng, epoch=epoch, timing=timing, tracer=tracer, name=name, load_threshold=load_threshold
        )
        self.mtu = mtu

    def set_private_key(self, key: NodePrivateKey) -> None:
        """Change the static key (wireguard-go ``SetPrivateKey``): a peer with the new public key is
        removed, and every peer's sessions stop sending so the next packet starts a fresh handshake."""
        if key == self._private:
            return
        self._private, self._public = key, public_key(key)
        self._cookie_checker = CookieChecker(self._public, self._rng, refresh_time=self.timing.cookie_refresh_time)
        self.remove_peer(self._public)
        for peer in self._peers.values():  # wireguard-go ExpireCurrentKeypairs
            self._forget_handshake(peer)
            peer.last_sent_handshake = None
            for kp in (peer.keypairs.current, peer.keypairs.next):
                if kp is not None:
                    kp.send_counter = self.timing.reject_after_messages

    # --- peers ----------------------------------------------------------------------------------
    @property
    def peers(self) -> Mapping[NodePublicKey, Peer]:
        """The peers by public key (a read-only view, for introspection and tests)."""
        return MappingProxyType(self._peers)

    def add_peer(
        self,
        public_key: NodePublicKey,
        *,
        preshared_key: bytes | None = None,
        allowed_ips: Iterable[str] = (),
        endpoint: Endpoint | None = None,
        persistent_keepalive: int | None = None,
    ) -> None:
        """Add a peer, or update one: ``preshared_key`` (None or zeros: none), ``allowed_ips`` (replaced
        as a whole) and ``persistent_keepalive`` (seconds; None or 0: off) are set as given;
        ``endpoint`` None keeps the known one. Raises :class:`UsageError` for a bad prefix, key or interval."""
        if preshared_key is not None and len(preshared_key) != noise.KEY_LEN:
            raise UsageError(f"a preshared key has {noise.KEY_LEN} bytes, got {len(preshared_key)}")
        if persistent_keepalive is not None and not 0 <= persistent_keepalive <= 0xFFFF:
            raise UsageError(f"persistent keepalive must be 0..65535 seconds, got {persistent_keepalive}")
        nets = [parse_prefix(p) for p in allowed_ips]  # all parsed before anything changes
        peer = self._peers.get(public_key)
        if peer is None:
            peer = self._peers[public_key] = Peer(public_key, PeerTimers(self.timing, self._jitter))
        was_on = bool(peer.persistent_keepalive)
        peer.preshared_key = bytes(preshared_key) if preshared_key is not None and any(preshared_key) else None
        if endpoint is not None:
            peer.endpoint = endpoint
        self._allowed.remove_by_peer(public_key)
        for net in nets:
            self._allowed.insert(net, public_key)
        peer.persistent_keepalive = persistent_keepalive or None
        if peer.persistent_keepalive is None:
            peer.timers.delete(TimerName.PERSISTENT_KEEPALIVE)
        elif not was_on and peer.endpoint is not None:
            peer.timers.mod(TimerName.PERSISTENT_KEEPALIVE, self._now)  # wireguard-go: one keepalive at once

    def remove_peer(self, public_key: NodePublicKey) -> None:
        """Remove a peer with its routes, sessions and timers; an unknown key is ignored."""
        peer = self._peers.pop(public_key, None)
        if peer is None:
            return
        self._free(peer.keypairs.clear())
        self._forget_handshake(peer)
        self._allowed.remove_by_peer(public_key)
        peer.timers.stop()
        peer.flush_staged()
        self._events.append(PeerRemoved(public_key))

    def set_peer_endpoint(self, public_key: NodePublicKey, endpoint: Endpoint) -> None:
        """Point a peer at ``endpoint`` (configuration, or a path chosen by a higher layer)."""
        peer = self._peers.get(public_key)
        if peer is None:
            raise UsageError(f"no peer {public_key.short()} on this device")
        peer.endpoint = endpoint

    # --- inputs ---------------------------------------------------------------------------------
    def send_packet(self, ip_packet: bytes, now: float) -> None:
        """An IP packet read from the TUN: route it by destination (cryptokey routing), send or stage it."""
        self._now = now
        packet = bytes(ip_packet)
        if len(packet) > MAX_CONTENT_SIZE:
            self._drop("oversized", now, raw=packet, detail=f"{len(packet)}-byte packet from the TUN")
            return
        dst = destination(packet)
        if dst is None:
            self._drop("bad-ip-packet", now, raw=packet, detail="packet from the TUN")
            return
        key = self._allowed.lookup(dst)
        peer = self._peers.get(key) if key is not None else None
        if peer is None:
            self._drop("no-route", now, raw=packet, detail=f"no peer for {ip_text(dst)}")
            return
        if peer.endpoint is None:
            self._drop("no-endpoint", now, peer=peer, raw=packet, detail="packet from the TUN")
            return
        if not peer.stage(packet):
            self._drop("staged-overflow", now, peer=peer, detail="oldest staged packet")
        self._send_staged(peer, now)

    def receive_datagram(self, data: bytes, src: Endpoint, now: float) -> None:
        """A UDP payload from ``src``. Never raises on bad input: drops, counts and traces it."""
        self._now = now
        data = bytes(data)
        if len(data) > MAX_MESSAGE_SIZE:
            self._drop("oversized", now, raw=data, endpoint=src, detail=f"{len(data)}-byte datagram")
            return
        try:
            msg = wg.decode(data)
        except DecodeError as exc:
            self._drop(exc.reason, now, raw=data, endpoint=src, detail=str(exc))
            return
        if isinstance(msg, wg.Transport):
            self._receive_transport(msg, data, src, now)
        elif isinstance(msg, wg.CookieReply):
            self._receive_cookie_reply(msg, data, src, now)
        elif self._admit_handshake(data, src, now):
            if isinstance(msg, wg.Initiation):
                self._receive_initiation(data, src, now)
            else:
                self._receive_response(msg, data, src, now)

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``, earliest first."""
        self._now = now
        for _ in range(64 + 8 * len(self._peers)):  # an expiry re-arms only into the future
            due: tuple[float, TimerName, Peer] | None = None
            for peer in self._peers.values():
                earliest = peer.timers.earliest()
                if earliest is not None and earliest[0] <= now and (due is None or earliest[0] < due[0]):
                    due = (earliest[0], earliest[1], peer)
            if due is None:
                return
            _, name, peer = due
            self._trace("transition", now, peer=peer, detail=f"timer {name.value} expired", reason=name.value)
            peer.timers.expire(name, now, _PeerActions(self, peer))

    # --- outputs (pull) -------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[tuple[bytes, Endpoint]]:
        """UDP payloads and where to send them, in order; the list is handed over and cleared."""
        out, self._out = self._out, []
        return out

    def packets_received(self) -> list[bytes]:
        """Decrypted inner IP packets (trimmed to their IP length) for the TUN; handed over and cleared."""
        out, self._received = self._received, []
        return out

    def get_timer(self) -> float | None:
        """The next ``now`` at which :meth:`handle_timer` is due, or None when no timer is armed."""
        deadlines = [e[0] for p in self._peers.values() if (e := p.timers.earliest()) is not None]
        return min(deadlines) if deadlines else None

    def next_event(self) -> WireGuardEvent | None:
        """The oldest event not pulled yet, or None."""
        return self._events.popleft() if self._events else None

    # --- introspection --------------------------------------------------------------------------
    def peer_status(self) -> list[PeerStatus]:
        """Every peer as ``wg show`` prints it, in the order they were added."""
        return [
            PeerStatus(
                public_key=key,
                preshared_key=peer.preshared_key,
                endpoint=peer.endpoint,
                allowed_ips=[str(net) for net in self._allowed.entries(key)],
                last_handshake=peer.last_handshake_wall,
                rx_bytes=peer.rx_bytes,
                tx_bytes=peer.tx_bytes,
                persistent_keepalive=peer.persistent_keepalive,
            )
            for key, peer in self._peers.items()
        ]

    def session_keys(self) -> list[SessionKeyRecord]:
        """Every live transport session: the previous, current and next keypairs of every peer."""
        records = []
        for key, peer in self._peers.items():
            kps = peer.keypairs
            for slot, kp in zip(_SLOTS, (kps.previous, kps.current, kps.next), strict=True):
                if kp is not None:
                    records.append(
                        SessionKeyRecord(
                            peer=key,
                            local_index=kp.local_index,
                            remote_index=kp.remote_index,
                            send_key=kp.keys.send_key,
                            recv_key=kp.keys.recv_key,
                            created=self.epoch + kp.created,
                            is_initiator=kp.is_initiator,
                            slot=slot,
                            local_static_private=self._private.raw,
                            remote_static_public=key.raw,
                            local_ephemeral_private=kp.ephemeral_private,
                            preshared_key=kp.preshared_key,
                        )
                    )
        return records

    def __repr__(self) -> str:
        return f"WireGuardDevice({self.name}, {len(self._peers)} peers)"

    # --- timer actions (wireguard-go timers.go expired*) ------------------------------------------
    def _give_up(self, peer: Peer, now: float) -> None:
        dropped = peer.flush_staged()
        if dropped:
            self.counters["gave-up"] += dropped
        attempts = peer.timers.handshake_attempts + 1
        self._events.append(HandshakeGaveUp(peer.public_key, attempts, dropped, now))
        self._trace(
            "transition", now, peer=peer, detail=f"handshake gave up after {attempts} attempts", reason="gave-up"
        )

    def _zero_key_material(self, peer: Peer, now: float) -> None:
        self._free(peer.keypairs.clear())
        self._forget_handshake(peer)
        dropped = peer.flush_staged()
        if dropped:
            self.counters["keys-zeroed"] += dropped
        self._events.append(KeysZeroed(peer.public_key, now))
        self._trace("transition", now, peer=peer, detail="all keys zeroed", reason="zeroed")


class _PeerActions:
    """The :class:`~toolkit.sansio.wgtimers.TimerActions` of one peer, bound to its device."""

    __slots__ = ("device", "peer")

    def __init__(self, device: WireGuardDevice, peer: Peer) -> None:
        self.device = device
        self.peer = peer

    def send_keepalive(self, now: float) -> None:
        self.device._send_keepalive(self.peer, now)

    def send_initiation(self, now: float, *, retry: bool) -> None:
        self.device._send_initiation(self.peer, now, retry=retry)

    def give_up(self, now: float) -> None:
        self.device._give_up(self.peer, now)

    def zero_key_material(self, now: float) -> None:
        self.device._zero_key_material(self.peer, now)


__all__ = [  # the events and records are re-exported so a driver needs one import
    "DEFAULT_MTU",
    "DROP_REASONS",
    "MAX_CONTENT_SIZE",
    "MAX_MESSAGE_SIZE",
    "CookieReceived",
    "HandshakeCompleted",
    "HandshakeGaveUp",
    "HandshakeInitiated",
    "KeypairConfirmed",
    "KeysZeroed",
    "PeerEndpointChanged",
    "PeerRemoved",
    "PeerStatus",
    "SessionKeyRecord",
    "TraceRecord",
    "WireGuardDevice",
    "WireGuardEvent",
]
