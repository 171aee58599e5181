"""WireGuard's per-peer timers as data: five deadlines, the rules that arm them, what their expiry does.

Follows the WireGuard whitepaper §6.2-§6.5 and protocols.md §8.5 (wireguard-go ``device/timers.go``,
which copies the kernel's ``timers.c``). Nothing here reads a clock: each timer is a deadline in the
driver's monotonic seconds, armed and disarmed by the hooks below, which the device calls at the
moments the whitepaper names; :meth:`PeerTimers.expire` says what an expired timer does, through a
small :class:`TimerActions` interface the device implements (send a keepalive, send an initiation,
give up, zero the keys). All durations come from :class:`toolkit.timing.Timing`.

The five timers (wireguard-go's names in brackets):

=====================  ===========================================================================
retransmit-handshake   armed when an initiation is sent, REKEY_TIMEOUT + jitter; disarmed when a
[retransmitHandshake]  handshake completes. Expiry: send the initiation again, at most
                       ``max_timer_handshakes`` (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT = 18) retries
                       after the first try, then give up: drop the staged packets and zero the keys
                       3 x REJECT_AFTER_TIME later (whitepaper §6.4).
send-keepalive         armed KEEPALIVE_TIMEOUT after authenticated *data* is received, unless
[sendKeepalive]        already armed (then one more keepalive is owed); disarmed by sending any
                       authenticated packet. Expiry: send an empty keepalive (§6.5 "passive keepalive").
new-handshake          armed KEEPALIVE + REKEY_TIMEOUT + jitter after *data* is sent, unless already
[newHandshake]         armed; disarmed by receiving any authenticated packet. Expiry: the peer went
                       quiet, start a new handshake (§6.2).
zero-key-material      armed 3 x REJECT_AFTER_TIME after a session is derived (or when giving up and
[zeroKeyMaterial]      not armed yet). Expiry: erase every keypair and handshake (§6.3).
persistent-keepalive   re-armed to the user's interval on every authenticated packet sent or
[persistentKeepalive]  received. Expiry: send a keepalive (keeps NAT mappings open).
=====================  ===========================================================================

Jitter is drawn by the device from its rng (uniform in ``[0, rekey_timeout_jitter_max)``, like
wireguard-go's ``fastrandn(334)`` milliseconds).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Protocol

from toolkit.timing import Timing


class TimerName(StrEnum):
    """The five per-peer timers, in the order they fire when due at the same instant."""

    RETRANSMIT_HANDSHAKE = "retransmit-handshake"
    SEND_KEEPALIVE = "send-keepalive"
    NEW_HANDSHAKE = "new-handshake"
    ZERO_KEY_MATERIAL = "zero-key-material"
    PERSISTENT_KEEPALIVE = "persistent-keepalive"


_ORDER = {name: i for i, name in enumerate(TimerName)}


class TimerActions(Protocol):
    """What an expired timer asks its peer's device to do (wireguard-go's ``expired*`` functions)."""

    def send_keepalive(self, now: float) -> None:
        """Send an empty transport packet, or the staged packets if any (``SendKeepalive``)."""

    def send_initiation(self, now: float, *, retry: bool) -> None:
        """Start (``retry=False``) or retransmit (``retry=True``) a handshake initiation."""

    def give_up(self, now: float) -> None:
        """The handshake did not complete: drop the staged packets (``FlushStagedPackets``)."""

    def zero_key_material(self, now: float) -> None:
        """Erase every keypair and the handshake state (``ZeroAndFlushAll``)."""


class PeerTimers:
    """The deadlines and counters of one peer's timers, and the whitepaper §6 rules that move them.

    ``jitter()`` returns a fresh retransmit jitter in seconds. Hooks take ``now`` (monotonic seconds).
    """

    __slots__ = (
        "_deadlines",
        "handshake_attempts",
        "jitter",
        "need_another_keepalive",
        "sent_last_minute_handshake",
        "timing",
    )

    def __init__(self, timing: Timing, jitter: Callable[[], float]) -> None:
        self.timing = timing
        self.jitter = jitter
        self._deadlines: dict[TimerName, float] = {}
        self.handshake_attempts = 0  # retries of the current initiation (wireguard-go handshakeAttempts)
        self.need_another_keepalive = False
        self.sent_last_minute_handshake = False  # §6.2 receive-side "last minute" rekey, once per session

    # --- the timers as deadlines ---
    def mod(self, name: TimerName, deadline: float) -> None:
        """Arm (or re-arm) ``name`` to expire at ``deadline``."""
        self._deadlines[name] = deadline

    def delete(self, name: TimerName) -> None:
        self._deadlines.pop(name, None)

    def pending(self, name: TimerName) -> bool:
        return name in self._deadlines

    def deadline(self, name: TimerName) -> float | None:
        return self._deadlines.get(name)

    def deadlines(self) -> dict[TimerName, float]:
        """A copy of the armed timers and their deadlines."""
        return dict(self._deadlines)

    def earliest(self) -> tuple[float, TimerName] | None:
        """The next timer to expire (ties broken in :class:`TimerName` order), or None."""
        if not self._deadlines:
            return None
        name = min(self._deadlines, key=lambda n: (self._deadlines[n], _ORDER[n]))
        return self._deadlines[name], name

    def stop(self) -> None:
        """Disarm everything (the peer is removed)."""
        self._deadlines.clear()

    # --- hooks: called by the device at the moments timers.go names ---
    def data_sent(self, now: float) -> None:
        """After authenticated data was sent: expect an answer within KEEPALIVE + REKEY_TIMEOUT (§6.2)."""
        if not self.pending(TimerName.NEW_HANDSHAKE):
            self.mod(TimerName.NEW_HANDSHAKE, now + self.timing.new_handshake_timeout + self.jitter())

    def data_received(self, now: float) -> None:
        """After authenticated data was received: owe a keepalive unless something is sent first (§6.5)."""
        if not self.pending(TimerName.SEND_KEEPALIVE):
            self.mod(TimerName.SEND_KEEPALIVE, now + self.timing.keepalive_timeout)
        else:
            self.need_another_keepalive = True

    def any_authenticated_sent(self) -> None:
        """After any authenticated packet (keepalive, data, handshake) was sent: no keepalive owed."""
        self.delete(TimerName.SEND_KEEPALIVE)

    def any_authenticated_received(self) -> None:
        """After any authenticated packet was received: the peer is alive, no new handshake needed."""
        self.delete(TimerName.NEW_HANDSHAKE)

    def handshake_initiated(self, now: float) -> None:
        """After an initiation was sent: retransmit it after REKEY_TIMEOUT + jitter (§6.4)."""
        self.mod(TimerName.RETRANSMIT_HANDSHAKE, now + self.timing.rekey_timeout + self.jitter())

    def handshake_complete(self) -> None:
        """After a response was consumed, or the responder got key confirmation."""
        self.delete(TimerName.RETRANSMIT_HANDSHAKE)
        self.handshake_attempts = 0
        self.sent_last_minute_handshake = False

    def session_derived(self, now: float) -> None:
        """After a new keypair was derived: erase all keys 3 x REJECT_AFTER_TIME from now unless renewed (§6.3)."""
        self.mod(TimerName.ZERO_KEY_MATERIAL, now + self.timing.zero_keys_after)

    def authenticated_traversal(self, now: float, persistent_keepalive: int | None) -> None:
        """Before an authenticated packet is sent or after one is received: restart the persistent keepalive."""
        if persistent_keepalive:
            self.mod(TimerName.PERSISTENT_KEEPALIVE, now + persistent_keepalive)

    # --- expiry ---
    def expire(self, name: TimerName, now: float, actions: TimerActions) -> None:
        """Disarm ``name`` and do what its expiry does (wireguard-go ``expired*``)."""
        self.delete(name)
        if name is TimerName.RETRANSMIT_HANDSHAKE:
            if self.handshake_attempts > self.timing.max_timer_handshakes:
                # whitepaper §6.4: give up after REKEY_ATTEMPT_TIME; keep no keepalive owed
                self.delete(TimerName.SEND_KEEPALIVE)
                actions.give_up(now)
                if not self.pending(TimerName.ZERO_KEY_MATERIAL):
                    self.mod(TimerName.ZERO_KEY_MATERIAL, now + self.timing.zero_keys_after)
            else:
                self.handshake_attempts += 1
                actions.send_initiation(now, retry=True)
        elif name is TimerName.SEND_KEEPALIVE:
            actions.send_keepalive(now)
            if self.need_another_keepalive:
                self.need_another_keepalive = False
                self.mod(TimerName.SEND_KEEPALIVE, now + self.timing.keepalive_timeout)
        elif name is TimerName.NEW_HANDSHAKE:
            actions.send_initiation(now, retry=False)
        elif name is TimerName.ZERO_KEY_MATERIAL:
            actions.zero_key_material(now)
        else:  # PERSISTENT_KEEPALIVE; the device disarms it when the interval is turned off
            actions.send_keepalive(now)

    def __repr__(self) -> str:
        armed = ", ".join(f"{n.value}@{t:.3f}" for n, t in sorted(self._deadlines.items(), key=lambda x: x[1]))
        return f"PeerTimers({armed or 'idle'}, attempts={self.handshake_attempts})"


__all__ = ["PeerTimers", "TimerActions", "TimerName"]
