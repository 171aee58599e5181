"""Values and events of :mod:`toolkit.sansio.peerflow` (the seed flowchart walked for one peer).

* :class:`FlowMoved` - the flow took an edge of :data:`toolkit.sansio.peergraph.TRANSITIONS`.
* :class:`PathValidated` - ValidatePath measured a candidate: latency (its pong), loss (the burst of
  ``Timing.validate_probes`` pings padded to 1280 bytes on the wire) and path MTU (the largest answered
  probe, protocols.md §4.12), and PathGood's verdict.
* :class:`Burst` - the bookkeeping of one validation burst to one endpoint (TxIDs, sizes, answers, losses).
* :func:`is_private_endpoint` - natkit's "not a public IP" rule of CheckDirect and of ``path_kind == "local"``.
* :data:`FlowEvent` - what ``PeerFlow.next_event`` returns: PeerPath's events, passed through, and the two above.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from toolkit.sansio.peergraph import State
from toolkit.sansio.peerpath_types import Event, ping_wire_size
from toolkit.types import Endpoint, TxID

PathKind: TypeAlias = Literal["direct", "local", "derp"]

# CheckDirect (natkit's rule): RFC 1918, RFC 6598 shared address space (CGNAT), RFC 4193 ULA, link local
# (RFC 3927, RFC 4291 fe80::/10) and loopback are not reachable from another network.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


def is_private_endpoint(endpoint: Endpoint) -> bool:
    """True when ``endpoint`` is in a private, CGNAT, ULA, link-local or loopback range."""
    ip = endpoint.ip
    return any(ip.version == net.version and ip in net for net in _NOT_PUBLIC)


@dataclass(frozen=True, slots=True)
class FlowMoved:
    """The flow took the edge ``src`` -(``label``)-> ``dst`` (a peergraph transition)."""

    src: State
    label: str
    dst: State


@dataclass(frozen=True, slots=True)
class PathValidated:
    """ValidatePath's measurement of ``endpoint`` and PathGood's verdict (``reason`` says why not)."""

    endpoint: Endpoint
    latency: float
    loss: float
    mtu: int
    good: bool
    reason: str


FlowEvent: TypeAlias = Event | FlowMoved | PathValidated


@dataclass
class Burst:
    """One validation burst to ``endpoint``: the loss probes (padded to 1280 on the wire) and MTU probes."""

    endpoint: Endpoint
    sent_at: float
    sizes: dict[TxID, int] = field(default_factory=dict)  # wire size of each ping
    loss_probes: set[TxID] = field(default_factory=set)
    answered: dict[TxID, float] = field(default_factory=dict)  # latency
    lost: set[TxID] = field(default_factory=set)
    deadline: float | None = None  # set by the first pong from the endpoint

    def note_first_pong(self, now: float, latency: float, wait_min: float) -> None:
        """The endpoint answered after ``latency``: the burst's answers are due one round trip after it left,
        give them ``max(2 x latency, wait_min)`` more (a queue on the way or a busy peer delays the padded
        pings behind the first pong; a burst answered in full ends the wait at once)."""
        if self.deadline is None:
            self.deadline = max(now, self.sent_at + latency) + max(2 * latency, wait_min)

    def complete(self, now: float) -> bool:
        resolved = len(self.answered) + len(self.lost) >= len(self.sizes)
        return resolved or (self.deadline is not None and now >= self.deadline)

    def measure(self, first_latency: float) -> tuple[float, int, float]:
        """(loss, path MTU, latency): unanswered loss probes count as lost; the MTU is the largest answered
        probe, or the unpadded ping's size when none was; the latency the best of the first pong and the burst."""
        lost = sum(1 for t in self.loss_probes if t not in self.answered)
        loss = lost / len(self.loss_probes) if self.loss_probes else 0.0
        unpadded = ping_wire_size(0, ipv6=self.endpoint.is_ipv6)
        mtu = max([self.sizes[t] for t in self.answered] + [unpadded])
        latency = min([first_latency, *self.answered.values()])
        return loss, mtu, latency


__all__ = ["Burst", "FlowEvent", "FlowMoved", "PathKind", "PathValidated", "is_private_endpoint"]
