"""A WireGuard peer's state: its keypairs (previous / current / next), handshake memory, staged packets.

Follows the WireGuard whitepaper §5.4.6 (key confirmation) and §6 and protocols.md §8.3/§8.5
(wireguard-go ``device/peer.go``, ``keypair.go`` and ``BeginSymmetricSession`` /
``ReceivedWithKeypair`` in ``noise-protocol.go``). These are plain mutable records driven by
:class:`toolkit.sansio.wireguard.WireGuardDevice`; nothing here sends, decides or reads a clock.

Keypair slots, as in wireguard-go:

* ``current`` encrypts outgoing packets and decrypts incoming ones.
* ``previous`` only decrypts: packets the peer sent with the old keys are still in flight after a rekey.
* ``next`` is the responder's fresh keypair. The responder may not send with it until the initiator
  proved it holds the same keys by sending a transport packet with them (key confirmation, whitepaper
  §5.4.6); that packet moves it to ``current`` and the old current to ``previous``.

When the initiator derives a keypair it becomes ``current`` at once (the response confirmed the
keys). Every keypair removed from a slot is returned to the caller, which frees its receiver index.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from toolkit.crypto.cookie import CookieGenerator
from toolkit.crypto.noise import ZERO_PSK, InitiatorState, SessionKeys
from toolkit.sansio.replay import ReplayFilter
from toolkit.sansio.wgtimers import PeerTimers
from toolkit.types import Endpoint, NodePublicKey

STAGED_LIMIT = 128  # wireguard-go QueueStagedSize: packets kept while waiting for a handshake


@dataclass(eq=False, slots=True)
class Keypair:
    """One transport session: keys and indices (from the handshake), send counter, replay window.

    ``created`` is the driver's monotonic ``now`` when the keys were derived. ``ephemeral_private``
    and ``preshared_key`` are kept only so the session can be exported for Wireshark's key log.
    Compared by identity: two keypairs are never "equal".
    """

    keys: SessionKeys
    created: float
    ephemeral_private: bytes = field(repr=False)
    preshared_key: bytes | None = field(repr=False, default=None)
    send_counter: int = 0  # the next counter to send (wireguard-go sendNonce)
    replay: ReplayFilter = field(default_factory=ReplayFilter, repr=False)

    @property
    def local_index(self) -> int:
        return self.keys.local_index

    @property
    def remote_index(self) -> int:
        return self.keys.remote_index

    @property
    def is_initiator(self) -> bool:
        return self.keys.is_initiator

    def age(self, now: float) -> float:
        return now - self.created


@dataclass(slots=True)
class Keypairs:
    """The previous / current / next slots of one peer and their rotations."""

    previous: Keypair | None = None
    current: Keypair | None = None
    next: Keypair | None = None

    def all(self) -> list[Keypair]:
        """The keypairs held, oldest slot first."""
        return [kp for kp in (self.previous, self.current, self.next) if kp is not None]

    def install_initiator(self, keypair: Keypair) -> list[Keypair]:
        """The initiator's new keypair becomes current; returns the keypairs dropped.

        An unconfirmed ``next`` (we had also answered the peer's initiation) becomes ``previous``
        instead of the old current, as wireguard-go does, so its first packets still decrypt.
        """
        dropped: list[Keypair] = []
        if self.previous is not None:
            dropped.append(self.previous)
        if self.next is not None:
            if self.current is not None:
                dropped.append(self.current)
            self.previous, self.next = self.next, None
        else:
            self.previous = self.current
        self.current = keypair
        return dropped

    def install_responder(self, keypair: Keypair) -> list[Keypair]:
        """The responder's new keypair waits in ``next`` for key confirmation; returns the keypairs dropped."""
        dropped = [kp for kp in (self.next, self.previous) if kp is not None]
        self.next = keypair
        self.previous = None
        return dropped

    def confirm(self, keypair: Keypair) -> list[Keypair] | None:
        """A packet arrived with ``keypair``: if it is ``next``, rotate it to current (whitepaper §5.4.6).

        Returns the keypairs dropped, or None when ``keypair`` was not waiting for confirmation.
        """
        if keypair is not self.next:
            return None
        dropped = [self.previous] if self.previous is not None else []
        self.previous, self.current, self.next = self.current, keypair, None
        return dropped

    def clear(self) -> list[Keypair]:
        """Drop every keypair; returns them."""
        dropped = self.all()
        self.previous = self.current = self.next = None
        return dropped


class Peer:
    """Everything a device keeps about one peer (wireguard-go ``Peer`` + its ``Handshake``)."""

    def __init__(
        self,
        public_key: NodePublicKey,
        timers: PeerTimers,
        *,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int | None = None,
    ) -> None:
        self.public_key = public_key
        self.preshared_key = preshared_key
        self.endpoint = endpoint
        self.persistent_keepalive = persistent_keepalive
        self.timers = timers
        self.cookies = CookieGenerator(public_key, refresh_time=timers.timing.cookie_refresh_time)
        self.keypairs = Keypairs()
        # handshake as initiator: the state between sending an initiation and consuming its response
        self.initiator: InitiatorState | None = None
        self.handshake_index: int | None = None
        # replay and flood protection as responder (whitepaper §5.1, protocols.md §8.3)
        self.last_timestamp: bytes | None = None  # newest TAI64N accepted (big-endian: bytes compare)
        self.last_initiation_consumed: float | None = None
        self.last_sent_handshake: float | None = None  # initiations are rate-limited to one per REKEY_TIMEOUT
        self.staged: deque[bytes] = deque()
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_wall: float | None = None  # wall seconds of the last completed handshake

    @property
    def psk(self) -> bytes:
        """The preshared key the handshake mixes in: 32 zero bytes when none is set (protocols.md §8.3)."""
        return self.preshared_key if self.preshared_key is not None else ZERO_PSK

    def stage(self, packet: bytes) -> bool:
        """Queue a packet until a keypair is usable; False when the oldest one had to be dropped."""
        self.staged.append(packet)
        if len(self.staged) > STAGED_LIMIT:
            self.staged.popleft()
            return False
        return True

    def flush_staged(self) -> int:
        """Drop every staged packet; returns how many there were."""
        n = len(self.staged)
        self.staged.clear()
        return n

    def __repr__(self) -> str:
        kps = self.keypairs
        slots = "/".join("-" if kp is None else f"{kp.local_index:#x}" for kp in (kps.previous, kps.current, kps.next))
        return f"Peer({self.public_key.short()}, endpoint={self.endpoint}, keypairs={slots})"


__all__ = ["STAGED_LIMIT", "Keypair", "Keypairs", "Peer"]
