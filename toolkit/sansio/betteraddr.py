"""magicsock's ``betterAddr``: is one candidate path to a peer better than another (protocols.md §4.10)?

A path is an :class:`AddrQuality`: the peer's UDP endpoint, the round trip its last pong measured,
the wire MTU that pong proved (0 = not probed, protocols.md §4.12) and, for a path through a peer
relay, the Geneve VNI (protocols.md §1.5). "No path" (Go's zero ``addrQuality``, invalid) is ``None``.

:func:`better_addr` follows Tailscale's rules in their order (``wgengine/magicsock/endpoint.go``):

1. the same path (endpoint and VNI): ``a`` wins only with a larger wire MTU;
2. anything beats no path; no path never wins;
3. a direct path beats a Geneve-relayed one;
4. points: the faster path gets ``100 - 100 * fast / slow`` (how many percent faster it is, in integer
   arithmetic on nanoseconds, as Go does on ``time.Duration``); +50 for loopback, else +30 for
   link-local unicast, else +20 for a private address (RFC 1918, IPv6 ULA ``fc00::/7``); +10 for IPv6;
5. hysteresis: ``a`` with at most 1 point against ``b`` with 0 does not win (less than ~1% faster
   is not worth a switch), otherwise ``a`` wins with strictly more points.

Consequences (tested): IPv6 beats IPv4 unless IPv4 is more than ~10% faster; a LAN address beats a
public one unless the public one is more than ~20% faster. The relation is irreflexive and
antisymmetric (``better_addr(a, b)`` and ``better_addr(b, a)`` are never both true).

The address classes are Go's ``netip.Addr`` methods, not Python's ``ipaddress`` properties:
``is_private`` in Python also covers documentation, loopback and reserved ranges, which Go does not.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from toolkit.types import Endpoint, IPAddress

# Go's netip.Addr.IsPrivate (RFC 1918, RFC 4193), IsLinkLocalUnicast, IsLoopback.
_PRIVATE = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("172.16.0.0/12"),
    ipaddress.ip_network("192.168.0.0/16"),
    ipaddress.ip_network("fc00::/7"),
)
_LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

LOOPBACK_BONUS = 50
LINK_LOCAL_BONUS = 30
PRIVATE_BONUS = 20
IPV6_BONUS = 10


def _in(ip: IPAddress, nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    return any(ip.version == net.version and ip in net for net in nets)


def is_private(ip: IPAddress) -> bool:
    """Go's ``IsPrivate``: 10/8, 172.16/12, 192.168/16, fc00::/7."""
    return _in(ip, _PRIVATE)


def is_link_local_unicast(ip: IPAddress) -> bool:
    """Go's ``IsLinkLocalUnicast``: 169.254/16, fe80::/10."""
    return _in(ip, _LINK_LOCAL)


def is_loopback(ip: IPAddress) -> bool:
    """Go's ``IsLoopback``: 127/8, ::1."""
    return _in(ip, _LOOPBACK)


@dataclass(frozen=True, slots=True)
class AddrQuality:
    """A candidate path: ``endpoint``, its measured ``latency`` (seconds), proven wire ``mtu`` (0 = unknown)
    and the Geneve ``vni`` when it goes through a peer relay (None = direct)."""

    endpoint: Endpoint
    latency: float = 0.0
    mtu: int = 0
    vni: int | None = None

    def __post_init__(self) -> None:
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, got {self.latency}")
        if self.mtu < 0:
            raise ValueError(f"mtu must be >= 0, got {self.mtu}")

    @property
    def is_direct(self) -> bool:
        return self.vni is None

    def same_path(self, other: AddrQuality | None) -> bool:
        """Go's ``epAddr`` equality: the same endpoint and the same VNI (latency and MTU do not count)."""
        return other is not None and self.endpoint == other.endpoint and self.vni == other.vni

    def summary(self) -> str:
        via = f" vni={self.vni}" if self.vni is not None else ""
        mtu = f" mtu={self.mtu}" if self.mtu else ""
        return f"{self.endpoint}{via} {self.latency * 1000:.1f}ms{mtu}"


def latency_ns(seconds: float) -> int:
    """Seconds to integer nanoseconds, the unit of Go's ``time.Duration`` the points are computed in."""
    return round(seconds * 1_000_000_000)


def bonus(ip: IPAddress) -> int:
    """The address-class points of protocols.md §4.10 step 4: loopback, link-local or private, and IPv6."""
    points = 0
    if is_loopback(ip):
        points += LOOPBACK_BONUS
    elif is_link_local_unicast(ip):
        points += LINK_LOCAL_BONUS
    elif is_private(ip):
        points += PRIVATE_BONUS
    if ip.version == 6:
        points += IPV6_BONUS
    return points


def points(a: AddrQuality, b: AddrQuality) -> tuple[int, int]:
    """``(a_points, b_points)`` of protocols.md §4.10 step 4: the speed-up percentage plus the bonuses."""
    a_ns, b_ns = latency_ns(a.latency), latency_ns(b.latency)
    a_points = b_points = 0
    if a_ns > b_ns and a_ns > 0:
        b_points = 100 - (b_ns * 100) // a_ns
    elif b_ns > 0:
        a_points = 100 - (a_ns * 100) // b_ns
    return a_points + bonus(a.endpoint.ip), b_points + bonus(b.endpoint.ip)


def better_addr(a: AddrQuality | None, b: AddrQuality | None) -> bool:
    """Is path ``a`` better than path ``b``? (protocols.md §4.10; ``None`` is no path.)"""
    # 1. the same path: only a larger wire MTU is better
    if a is None and b is None:
        return False
    if a is not None and a.same_path(b):
        assert b is not None
        return a.mtu > b.mtu
    # 2. anything beats no path
    if b is None:
        return True
    if a is None:
        return False
    # 3. direct beats a Geneve relay
    if a.is_direct != b.is_direct:
        return a.is_direct
    # 4. points
    a_points, b_points = points(a, b)
    # 5. hysteresis: less than ~1% better is not better
    if a_points <= 1 and b_points == 0:
        return False
    return a_points > b_points


def why_better(a: AddrQuality | None, b: AddrQuality | None) -> str:
    """A one-line explanation of :func:`better_addr` for traces and notebooks."""
    if a is None or b is None or a.same_path(b):
        if a is not None and a.same_path(b):
            return f"same path, mtu {a.mtu} vs {b.mtu if b else 0}"
        return "no path on one side" if a is not None or b is not None else "no path on either side"
    if a.is_direct != b.is_direct:
        return "direct beats relayed"
    a_points, b_points = points(a, b)
    return f"{a_points} points vs {b_points}"


__all__ = [
    "IPV6_BONUS",
    "LINK_LOCAL_BONUS",
    "LOOPBACK_BONUS",
    "PRIVATE_BONUS",
    "AddrQuality",
    "better_addr",
    "bonus",
    "is_link_local_unicast",
    "is_loopback",
    "is_private",
    "latency_ns",
    "points",
    "why_better",
]
