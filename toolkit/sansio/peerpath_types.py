"""Values and events of :mod:`toolkit.sansio.peerpath`, magicsock's per-peer path selection (protocols.md §4.2-§4.9).

* :class:`Candidate` is ``endpointState`` (§4.2): why an endpoint is known (control, a ping the peer
  sent from it, its CallMeMaybe), when we last pinged it, and its last ``pong_history_count`` pongs.
* :class:`SentPing` is a ``sentPing`` entry: where a ping went, when, and why (:class:`Purpose`).
* :class:`Outgoing` is a disco message for the caller to seal and send, :class:`SendPlan` where a
  WireGuard packet goes (§4.3). A destination ``127.3.3.40:<region>`` means "over DERP".
* :class:`State` and :data:`TRANSITIONS`: the coarse path state (DERP only, UDP and DERP while the
  best address is re-validated, direct) as data, for the core, the widgets and the tests.
* The events are past-tense frozen dataclasses (design.md §6), pulled with ``PeerPath.next_event``.
  :class:`DiscoveryStarted` and :class:`HeartbeatSent` are *activity* notes for a wrapper (PeerFlow), pulled
  with ``PeerPath.take_activity``; they stay out of the event queue.
* :func:`ping_wire_size` / :func:`padding_for_wire_mtu`: the size of a disco Ping on the wire and the padding
  that makes a path-MTU probe of a given wire MTU (protocols.md §1.2, §4.12).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import TypeAlias

from toolkit.codec.disco import CallMeMaybe, Ping, Pong
from toolkit.sansio.betteraddr import AddrQuality
from toolkit.sansio.derphome import region_of
from toolkit.timing import Timing
from toolkit.types import Endpoint, TxID

SAFE_WIRE_MTU = 1280  # tstun.SafeWireMTU: what an unpadded ping proves (pingSizeToPktLen(0))
#: tstun.WireMTUsToProbe (protocols.md §4.12): 1360 = 1280 + wgHeaderLen 80.
WIRE_MTUS_TO_PROBE = (1280, 1360, 1400, 1500, 8000, 9000)
# protocols.md §1.1/§1.2: magic 6 + sender key 32 + nonce 24 + Poly1305 tag 16 + type/version 2 + TxID 12
_DISCO_PING_BASE = 6 + 32 + 24 + 16 + 2 + 12
_NODE_KEY_LEN = 32


def ping_wire_size(padding: int, *, ipv6: bool, with_key: bool = True) -> int:
    """The IP packet size of a disco Ping with ``padding`` (IP header 20 or 40, UDP 8; 124-byte payload unpadded)."""
    return (40 if ipv6 else 20) + 8 + _DISCO_PING_BASE + (_NODE_KEY_LEN if with_key else 0) + padding


def padding_for_wire_mtu(mtu: int, *, ipv6: bool, with_key: bool = True) -> int:
    """The padding that makes a Ping exactly ``mtu`` bytes on the wire (protocols.md §4.12: mtu - IP - 8)."""
    return max(0, mtu - ping_wire_size(0, ipv6=ipv6, with_key=with_key))


class State(enum.Enum):
    DERP = "DERP only"
    VALIDATING = "UDP and DERP"  # a best address whose trust ran out
    DIRECT = "direct"


PONG, BETTER, TRUST_EXPIRED = "pong", "better path", "no pong within trust time"
TIMED_OUT, REMOVED, BAD, RESET = "ping to best timed out", "candidate removed", "send failed", "connectivity changed"
REJECTED = "failed validation"  # natkit: the flow's ValidatePath said No (PeerPath.reject)
#: Every transition (from, label, to) of the coarse path state (protocols.md §4.3, §4.7, §4.8).
TRANSITIONS: tuple[tuple[State, str, State], ...] = (
    (State.DERP, PONG, State.DIRECT),
    (State.VALIDATING, PONG, State.DIRECT),
    (State.DIRECT, BETTER, State.DIRECT),
    (State.DIRECT, TRUST_EXPIRED, State.VALIDATING),
    (State.VALIDATING, TIMED_OUT, State.DERP),
    *((s, label, State.DERP) for s in (State.DIRECT, State.VALIDATING) for label in (REMOVED, BAD, RESET, REJECTED)),
)


class Purpose(enum.Enum):
    DISCOVERY = "discovery"
    HEARTBEAT = "heartbeat"
    CLI = "cli"
    VALIDATE = "validate"  # natkit: a PeerFlow validation burst (loss, path MTU)


# --- events (design.md §6: past tense) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CandidateAdded:
    endpoint: Endpoint
    source: str  # "control", "ping" or "call-me-maybe"


@dataclass(frozen=True, slots=True)
class CandidateRemoved:
    endpoint: Endpoint
    reason: str


@dataclass(frozen=True, slots=True)
class PingReceived:
    txid: TxID
    src: Endpoint


@dataclass(frozen=True, slots=True)
class PongReceived:
    """Our ping ``txid`` to ``to`` was answered from ``src`` after ``latency``; the peer saw us as ``pong_src``."""

    txid: TxID
    to: Endpoint
    src: Endpoint
    latency: float
    pong_src: Endpoint
    purpose: Purpose
    padding: int = 0  # the ping's padding (a path-MTU probe when > 0)


@dataclass(frozen=True, slots=True)
class PingTimedOut:
    txid: TxID
    to: Endpoint
    purpose: Purpose


@dataclass(frozen=True, slots=True)
class PathUpgraded:
    """The best address changed to ``best`` (``previous`` None: the first direct path)."""

    previous: AddrQuality | None
    best: AddrQuality
    why: str


@dataclass(frozen=True, slots=True)
class PathTrustExpired:
    best: AddrQuality


@dataclass(frozen=True, slots=True)
class PathLost:
    best: AddrQuality
    reason: str


@dataclass(frozen=True, slots=True)
class HeartbeatStopped:
    idle_for: float


@dataclass(frozen=True, slots=True)
class EndpointsRefreshWanted:
    """A CallMeMaybe waits for fresh own endpoints: re-STUN, then call ``PeerPath.set_my_endpoints``."""


# --- activity notes (PeerPath.take_activity; for a wrapper such as PeerFlow) -------------------------


@dataclass(frozen=True, slots=True)
class DiscoveryStarted:
    """A discovery round pinged ``targets``; ``cause``: "send", "heartbeat", "call-me-maybe" or the caller's."""

    targets: tuple[Endpoint, ...]
    cause: str

    @property
    def count(self) -> int:
        return len(self.targets)


@dataclass(frozen=True, slots=True)
class HeartbeatSent:
    """The heartbeat (§4.5) pinged ``to`` (the address packets go to)."""

    to: Endpoint


Activity: TypeAlias = DiscoveryStarted | HeartbeatSent


Event: TypeAlias = (
    CandidateAdded
    | CandidateRemoved
    | PingReceived
    | PongReceived
    | PingTimedOut
    | PathUpgraded
    | PathTrustExpired
    | PathLost
    | HeartbeatStopped
    | EndpointsRefreshWanted
)


# --- values ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A disco message for the caller to seal and send to ``to`` (``127.3.3.40:<region>`` = over DERP)."""

    message: Ping | Pong | CallMeMaybe
    to: Endpoint
    purpose: Purpose | None = None

    @property
    def via_derp(self) -> bool:
        return region_of(self.to) is not None


@dataclass(frozen=True, slots=True)
class SendPlan:
    """Where a WireGuard packet goes (protocols.md §4.3): ``udp``, ``derp`` (a magic address) or both."""

    udp: Endpoint | None
    derp: Endpoint | None

    @property
    def both(self) -> bool:
        return self.udp is not None and self.derp is not None


@dataclass(frozen=True, slots=True)
class PongRecord:
    latency: float
    at: float
    src: Endpoint  # where the pong came from
    pong_src: Endpoint  # how the peer saw us


@dataclass(frozen=True, slots=True)
class SentPing:
    to: Endpoint
    at: float
    purpose: Purpose
    padding: int = 0


@dataclass
class Candidate:
    """``endpointState``: why we know the endpoint, when we pinged it, its last 64 pongs."""

    from_control: bool = False
    last_got_ping: float | None = None  # set only for endpoints learnt from a ping
    last_got_ping_txid: TxID | None = None
    call_me_maybe_at: float | None = None
    last_ping: float | None = None
    pongs: deque[PongRecord] = field(default_factory=deque)

    def should_delete(self, now: float, timing: Timing) -> bool:
        if self.call_me_maybe_at is not None:
            return False  # CallMeMaybe endpoints never expire (replaced by the next CallMeMaybe)
        if self.last_got_ping is None:
            return not self.from_control
        return now - self.last_got_ping > timing.session_active_timeout

    def add_pong(self, pong: PongRecord, keep: int) -> None:
        """Append to the ring of the last ``keep`` pongs (``pongHistoryCount``, 64)."""
        self.pongs.append(pong)
        while len(self.pongs) > keep:
            self.pongs.popleft()

    def clear_probes(self) -> None:
        """``endpointState.clear``: forget pongs and the last ping, keep where the endpoint came from."""
        self.pongs.clear()
        self.last_ping = None
        self.last_got_ping_txid = None

    @property
    def latency(self) -> float | None:
        return self.pongs[-1].latency if self.pongs else None


__all__ = [
    "BAD", "BETTER", "PONG", "REJECTED", "REMOVED", "RESET", "SAFE_WIRE_MTU", "TIMED_OUT", "TRANSITIONS",
    "TRUST_EXPIRED", "WIRE_MTUS_TO_PROBE", "Activity", "DiscoveryStarted", "HeartbeatSent", "State",
    "padding_for_wire_mtu", "ping_wire_size",
    "Candidate", "CandidateAdded", "CandidateRemoved", "EndpointsRefreshWanted", "Event", "HeartbeatStopped",
    "Outgoing", "PathLost", "PathTrustExpired", "PathUpgraded", "PingReceived", "PingTimedOut", "PongReceived",
    "PongRecord", "Purpose", "SendPlan", "SentPing",
]  # fmt: skip
