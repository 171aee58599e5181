"""The handshake half of the sans-IO WireGuard device: its state, index table, mac1/mac2 and cookies, Noise.

Follows the WireGuard whitepaper §5.3 (cookies, under load), §5.4 (Noise IKpsk2 handshake) and
protocols.md §8.3-§8.4, behaving like wireguard-go ``device/receive.go`` (``RoutineHandshake``),
``send.go`` (``SendHandshakeInitiation``, ``SendHandshakeResponse``, ``SendHandshakeCookie``) and
``noise-protocol.go`` (replay and flood checks, ``BeginSymmetricSession``). The Noise messages
themselves are :mod:`toolkit.crypto.noise`; mac1/mac2 and cookies :mod:`toolkit.crypto.cookie`.

:class:`HandshakeCore` holds the device's whole state and the bookkeeping every path uses (local
indices, drops, traces, outgoing datagrams, events); :class:`toolkit.sansio.wireguard.WireGuardDevice`
subclasses it with the public API, the transport path and the timers. The split only keeps files
short: the two are one object.

Local indices (wireguard-go ``indextable.go``): random unused 32-bit values from the rng. An index
names either a pending initiation of a peer (the initiation's sender index, which the response echoes
as its receiver index) or a keypair (the index transport packets to this device carry). When the
response arrives, the initiation's index is handed over to the new keypair.
"""

from __future__ import annotations

import abc
import ipaddress
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from toolkit.codec import wireguard as wg
from toolkit.crypto import noise
from toolkit.crypto.cookie import CookieChecker, src_bytes
from toolkit.crypto.keys import clamp, public_key
from toolkit.errors import CryptoError, DecodeError
from toolkit.sansio.allowedips import AllowedIPs
from toolkit.sansio.trace import TraceKind, TraceRecord
from toolkit.sansio.wgevents import (
    CookieReceived,
    HandshakeCompleted,
    HandshakeInitiated,
    PeerEndpointChanged,
    WireGuardEvent,
)
from toolkit.sansio.wgpeer import Keypair, Peer
from toolkit.timing import Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

LOAD_THRESHOLD = 128  # handshake messages per second (wireguard-go: QueueHandshakeSize / 8)
UNDER_LOAD_AFTER = 1.0  # seconds a device stays under load once detected (wireguard-go UnderLoadAfterTime)
EVENT_LIMIT = 4096  # undrained events beyond this push out the oldest


@dataclass(slots=True)
class IndexEntry:
    """What a local index names: a pending initiation of ``peer`` (keypair None) or one of its keypairs."""

    peer: Peer
    keypair: Keypair | None


class HandshakeCore(abc.ABC):
    """Device state, bookkeeping and the handshake messages (see the module docstring)."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        *,
        rng: Callable[[int], bytes],
        epoch: float,
        timing: Timing,
        tracer: Callable[[TraceRecord], None] | None,
        name: str | None,
        load_threshold: int,
    ) -> None:
        self._rng = rng
        self.epoch = epoch
        self.timing = timing
        self.tracer = tracer
        self.load_threshold = load_threshold
        self.force_under_load = False
        self.counters: Counter[str] = Counter()
        self._private = private_key
        self._public = public_key(private_key)
        self.name = name if name is not None else self._public.short()
        self._cookie_checker = CookieChecker(self._public, rng, refresh_time=timing.cookie_refresh_time)
        self._peers: dict[NodePublicKey, Peer] = {}
        self._allowed: AllowedIPs[NodePublicKey] = AllowedIPs()
        self._index: dict[int, IndexEntry] = {}
        self._out: list[tuple[bytes, Endpoint]] = []
        self._received: list[bytes] = []
        self._events: deque[WireGuardEvent] = deque(maxlen=EVENT_LIMIT)
        self._handshake_times: deque[float] = deque()
        self._under_load_until = float("-inf")
        self._now = 0.0  # the last `now` seen: "at once" for configuration changes

    @property
    def private_key(self) -> NodePrivateKey:
        return self._private

    @property
    def public_key(self) -> NodePublicKey:
        return self._public

    def under_load(self, now: float) -> bool:
        """Whether handshake messages must carry a valid mac2 (the rule: :mod:`toolkit.sansio.wireguard`)."""
        times = self._handshake_times
        while times and times[0] <= now - 1.0:
            times.popleft()
        return self.force_under_load or len(times) >= self.load_threshold or now < self._under_load_until

    @abc.abstractmethod
    def _send_keepalive(self, peer: Peer, now: float) -> None:
        """Send the staged packets, or an empty keepalive (the transport path: WireGuardDevice)."""

    # --- bookkeeping ------------------------------------------------------------------------------
    def _jitter(self) -> float:
        """Uniform in [0, rekey_timeout_jitter_max) from the rng (wireguard-go ``fastrandn(334)`` ms)."""
        return int.from_bytes(self._rng(4), "little") / 2**32 * self.timing.rekey_timeout_jitter_max

    def _new_index(self) -> int:
        """A random unused 32-bit local index (a degenerate rng falls back to the next free value)."""
        index = 0
        for _ in range(32):
            index = int.from_bytes(self._rng(4), "little")
            if index not in self._index:
                return index
        while index in self._index:
            index = (index + 1) & 0xFFFFFFFF
        return index

    def _free(self, keypairs: Iterable[Keypair]) -> None:
        """Release the local indices of keypairs that left their slots."""
        for kp in keypairs:
            entry = self._index.get(kp.local_index)
            if entry is not None and entry.keypair is kp:
                del self._index[kp.local_index]

    def _forget_handshake(self, peer: Peer) -> None:
        """Drop a pending initiation: its index and its state."""
        if peer.handshake_index is not None:
            entry = self._index.get(peer.handshake_index)
            if entry is not None and entry.peer is peer and entry.keypair is None:
                del self._index[peer.handshake_index]
        peer.handshake_index = None
        peer.initiator = None

    def _set_endpoint(self, peer: Peer, src: Endpoint, now: float) -> None:
        """Roaming (whitepaper §2.1): the source of an authenticated packet becomes the peer's endpoint."""
        if peer.endpoint != src:
            old, peer.endpoint = peer.endpoint, src
            self._events.append(PeerEndpointChanged(peer.public_key, old, src, now))
            self._trace("transition", now, peer=peer, detail=f"endpoint {old} -> {src}", reason="roamed", endpoint=src)

    def _drop(
        self,
        reason: str,
        now: float,
        *,
        peer: Peer | None = None,
        raw: bytes = b"",
        endpoint: Endpoint | None = None,
        detail: str = "",
    ) -> None:
        """Count a drop under ``reason`` (a key of DROP_REASONS) and trace it."""
        self.counters[reason] += 1
        if self.tracer is not None:
            detail = detail or describe(raw)
            self._trace("dropped", now, peer=peer, detail=detail, reason=reason, raw=raw, endpoint=endpoint)

    def _trace(
        self,
        kind: TraceKind,
        now: float,
        *,
        peer: Peer | None = None,
        detail: str = "",
        reason: str | None = None,
        raw: bytes = b"",
        endpoint: Endpoint | None = None,
    ) -> None:
        if self.tracer is not None:
            key = peer.public_key if peer is not None else None
            self.tracer(TraceRecord(now, self.name, key, kind, detail, reason, raw, endpoint))

    def _send(self, peer: Peer, data: bytes, now: float) -> None:
        """Queue a datagram for the peer's endpoint and count its bytes (wireguard-go ``SendBuffers``)."""
        if peer.endpoint is None:
            self._drop("no-endpoint", now, peer=peer, raw=data)
            return
        self._out.append((data, peer.endpoint))
        peer.tx_bytes += len(data)
        if self.tracer is not None:
            self._trace("sent", now, peer=peer, detail=describe(data), raw=data, endpoint=peer.endpoint)

    # --- receiving handshake messages -------------------------------------------------------------
    def _admit_handshake(self, data: bytes, src: Endpoint, now: float) -> bool:
        """mac1, then (under load) mac2: protocols.md §8.4. Answers a Cookie Reply when mac2 is missing."""
        times = self._handshake_times
        times.append(now)
        if len(times) > 4 * max(self.load_threshold, 1):
            times.popleft()
        under_load = self.under_load(now)
        if len(times) >= self.load_threshold:  # load detected: it lasts UNDER_LOAD_AFTER longer
            self._under_load_until = now + UNDER_LOAD_AFTER
        if not self._cookie_checker.check_mac1(data):
            self._drop("bad-mac1", now, raw=data, endpoint=src)
            return False
        source = src_bytes(src)
        if under_load and not self._cookie_checker.check_mac2(data, source, now):
            reply = self._cookie_checker.make_cookie_reply(data, source, now=now)
            self._out.append((reply, src))
            self.counters["cookie-reply-sent"] += 1
            self._trace("sent", now, detail=describe(reply), raw=reply, endpoint=src)
            self._drop("cookie-required", now, raw=data, endpoint=src)
            return False
        return True

    def _receive_initiation(self, data: bytes, src: Endpoint, now: float) -> None:
        """A valid initiation from a known peer with a newer timestamp gets a response (whitepaper §5.4.2-3)."""
        try:
            remote, timestamp, state = noise.consume_initiation(self._private, data, verify_mac1=False)
        except (CryptoError, DecodeError) as exc:
            self._drop("bad-initiation", now, raw=data, endpoint=src, detail=str(exc))
            return
        peer = self._peers.get(remote)
        if peer is None:
            self._drop("unknown-peer", now, raw=data, endpoint=src, detail=f"initiation from {remote.short()}")
            return
        if peer.last_timestamp is not None and timestamp <= peer.last_timestamp:  # big-endian TAI64N
            self._drop("stale-timestamp", now, peer=peer, raw=data, endpoint=src)
            return
        flood = self.timing.handshake_flood_interval
        if peer.last_initiation_consumed is not None and now <= peer.last_initiation_consumed + flood:
            self._drop("handshake-flood", now, peer=peer, raw=data, endpoint=src)
            return
        peer.last_timestamp = timestamp
        peer.last_initiation_consumed = now
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_received()
        self._set_endpoint(peer, src, now)
        peer.rx_bytes += len(data)
        self._trace("received", now, peer=peer, detail=describe(data), raw=data, endpoint=src)
        self._send_response(peer, state, now)

    def _send_response(self, peer: Peer, state: noise.ResponderState, now: float) -> None:
        """Answer, and keep the new keypair in ``next`` until the initiator confirms it (§5.4.6)."""
        peer.last_sent_handshake = now
        self._forget_handshake(peer)  # our own pending initiation loses (wireguard-go CreateMessageResponse)
        index = self._new_index()
        ephemeral = clamp(self._rng(noise.KEY_LEN))
        try:
            data, keys = noise.create_response(
                state, ephemeral=ephemeral, sender_index=index, now=now, psk=peer.psk, macs=peer.cookies
            )
        except CryptoError as exc:  # a low-order ephemeral
            self._drop("bad-initiation", now, peer=peer, detail=str(exc))
            return
        keypair = Keypair(keys, now, ephemeral, peer.preshared_key)
        self._index[index] = IndexEntry(peer, keypair)
        self._free(peer.keypairs.install_responder(keypair))
        peer.timers.session_derived(now)
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_sent()
        self._send(peer, data, now)
        self._events.append(HandshakeCompleted(peer.public_key, "responder", index, keys.remote_index, now))
        self._trace("transition", now, peer=peer, detail="response sent, keypair in next", reason="responded")

    def _receive_response(self, msg: wg.Response, data: bytes, src: Endpoint, now: float) -> None:
        """The response to our pending initiation: the new keypair becomes current at once (§5.4.3)."""
        entry = self._index.get(msg.receiver_index)
        if entry is None or entry.keypair is not None or entry.peer.initiator is None:
            self._drop("unknown-index", now, raw=data, endpoint=src)
            return
        peer, state = entry.peer, entry.peer.initiator
        try:
            keys = noise.consume_response(state, data, now=now, verify_mac1=False)
        except (CryptoError, DecodeError) as exc:
            self._drop("bad-response", now, peer=peer, raw=data, endpoint=src, detail=str(exc))
            return
        self._set_endpoint(peer, src, now)
        peer.rx_bytes += len(data)
        self._trace("received", now, peer=peer, detail=describe(data), raw=data, endpoint=src)
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_received()
        peer.initiator, peer.handshake_index = None, None
        keypair = Keypair(keys, now, state.ephemeral_private, peer.preshared_key)
        self._index[keys.local_index] = IndexEntry(peer, keypair)  # the initiation's index now names the keypair
        self._free(peer.keypairs.install_initiator(keypair))
        peer.timers.session_derived(now)
        peer.timers.handshake_complete()
        peer.last_handshake_wall = self.epoch + now
        self._events.append(HandshakeCompleted(peer.public_key, "initiator", keys.local_index, keys.remote_index, now))
        self._trace("transition", now, peer=peer, detail="response consumed, keypair current", reason="completed")
        self._send_keepalive(peer, now)  # staged packets, or a keepalive so the responder confirms the keys

    def _receive_cookie_reply(self, msg: wg.CookieReply, data: bytes, src: Endpoint, now: float) -> None:
        """A peer under load answered with a cookie: keep it for mac2 of our next handshake message."""
        entry = self._index.get(msg.receiver_index)
        if entry is None:
            self._drop("unknown-index", now, raw=data, endpoint=src)
            return
        peer = entry.peer
        try:
            peer.cookies.consume_cookie_reply(data, now)
        except (CryptoError, DecodeError) as exc:
            self._drop("bad-cookie", now, peer=peer, raw=data, endpoint=src, detail=str(exc))
            return
        self._trace("received", now, peer=peer, detail=describe(data), raw=data, endpoint=src)
        self._events.append(CookieReceived(peer.public_key, now))

    # --- sending initiations ----------------------------------------------------------------------
    def _send_initiation(self, peer: Peer, now: float, *, retry: bool) -> None:
        """Start a handshake, at most one initiation per REKEY_TIMEOUT (wireguard-go ``SendHandshakeInitiation``)."""
        if not retry:
            peer.timers.handshake_attempts = 0
        if peer.last_sent_handshake is not None and now < peer.last_sent_handshake + self.timing.rekey_timeout:
            return
        if peer.endpoint is None:
            self._drop("no-endpoint", now, peer=peer, detail="handshake initiation")
            return
        peer.last_sent_handshake = now
        self._forget_handshake(peer)
        index = self._new_index()
        try:
            data, state = noise.create_initiation(
                self._private,
                peer.public_key,
                ephemeral=self._rng(noise.KEY_LEN),
                now_wall=self.epoch + now,
                sender_index=index,
                psk=peer.psk,
                macs=peer.cookies,
                now=now,
            )
        except CryptoError as exc:  # the peer's key is a low-order point
            self._drop("bad-peer-key", now, peer=peer, detail=str(exc))
            return
        peer.initiator, peer.handshake_index = state, index
        self._index[index] = IndexEntry(peer, None)
        peer.timers.authenticated_traversal(now, peer.persistent_keepalive)
        peer.timers.any_authenticated_sent()
        self._send(peer, data, now)
        peer.timers.handshake_initiated(now)
        attempt = peer.timers.handshake_attempts + 1
        self._events.append(HandshakeInitiated(peer.public_key, index, attempt, now))
        self._trace("transition", now, peer=peer, detail=f"initiation sent (attempt {attempt})", reason="initiated")


def describe(data: bytes) -> str:
    """A one-line summary of a WireGuard message for traces (the codec's ``summary``)."""
    try:
        return wg.decode(data).summary()
    except DecodeError as exc:
        return f"{len(data)} bytes: {exc}"


def ip_text(raw: bytes) -> str:
    """An address from 4 or 16 packet bytes, as text."""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        return raw.hex()


__all__ = ["EVENT_LIMIT", "LOAD_THRESHOLD", "UNDER_LOAD_AFTER", "HandshakeCore", "IndexEntry", "describe", "ip_text"]
