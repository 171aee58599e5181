"""The lab addressing plan: which prefix each segment gets and how addresses are handed out.

One plan for every lab, so an address tells a student where a packet comes from (issue 5):

* **internet** (one segment, always named ``internet``) carries two documentation prefixes
  (RFC 5737): ``203.0.113.0/24`` for the WAN side of routers (handed out from ``.1``) and
  ``198.51.100.0/24`` for public hosts such as STUN, DERP and control servers (from ``.10``).
  Every interface on the internet has both prefixes on-link, so every internet-attached router and
  host reaches every other one directly, without a router in between.
* **LAN N** (kind ``lan``, N = 1..255) is ``192.168.N.0/24``; its router's LAN side is ``.1``, hosts
  and downstream routers' WAN sides get ``.10``, ``.11``, ...
* **carrier N** (kind ``carrier``, the network between a carrier-grade NAT and the home routers
  behind it; RFC 6598 shared address space) is ``100.64.N.0/24``, numbered like a LAN.
* **IPv6** (RFC 3849 documentation prefix ``2001:db8::/32``, not NATed, plain routing as in
  Tailscale's vnet, protocols.md §6.2): internet ``2001:db8::/64``, LAN N ``2001:db8:N::/64``,
  carrier N ``2001:db8:100:N::/64``. A v6 address repeats the v4 address' last digits *as written*
  so both read alike: ``192.168.1.10`` is ``2001:db8:1::10``, ``100.64.2.10`` is
  ``2001:db8:100:2::10``; on the internet the last two octets: ``198.51.100.10`` is
  ``2001:db8::100:10`` and ``203.0.113.1`` is ``2001:db8::113:1``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from enum import StrEnum

from toolkit.errors import UsageError

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network
IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network

INTERNET = "internet"
ROUTER_PREFIX = IPv4Network("203.0.113.0/24")  # RFC 5737 TEST-NET-3: routers' WAN sides
PUBLIC_PREFIX = IPv4Network("198.51.100.0/24")  # RFC 5737 TEST-NET-2: public hosts (servers)
INTERNET_V6 = IPv6Network("2001:db8::/64")
FIRST_HOST = 10  # hosts on a LAN/carrier start at .10; the segment's router is .1
FIRST_PUBLIC_HOST = 10
FIRST_ROUTER = 1


class SegmentKind(StrEnum):
    INTERNET = "internet"
    LAN = "lan"
    CARRIER = "carrier"


def v4_prefixes(kind: SegmentKind, index: int) -> tuple[IPv4Network, ...]:
    """The IPv4 prefixes of a segment (the internet has two, see the module docstring)."""
    if kind is SegmentKind.INTERNET:
        return (ROUTER_PREFIX, PUBLIC_PREFIX)
    if not 1 <= index <= 255:
        raise UsageError(f"{kind.value} index {index} is not in 1..255")
    if kind is SegmentKind.LAN:
        return (IPv4Network(f"192.168.{index}.0/24"),)
    return (IPv4Network(f"100.64.{index}.0/24"),)


def v6_prefix(kind: SegmentKind, index: int) -> IPv6Network:
    """The IPv6 /64 of a segment."""
    if kind is SegmentKind.INTERNET:
        return INTERNET_V6
    if kind is SegmentKind.LAN:
        return IPv6Network(f"2001:db8:{index}::/64")
    return IPv6Network(f"2001:db8:100:{index}::/64")


def v6_for(kind: SegmentKind, v4: IPv4Address) -> IPv6Address:
    """The IPv6 address that goes with ``v4`` on a segment of this kind (same digits, as written)."""
    octets = str(v4).split(".")
    if kind is SegmentKind.INTERNET:
        return IPv6Address(f"2001:db8::{octets[2]}:{octets[3]}")
    if kind is SegmentKind.LAN:
        return IPv6Address(f"2001:db8:{octets[2]}::{octets[3]}")
    return IPv6Address(f"2001:db8:100:{octets[2]}::{octets[3]}")


def gateway_v4(kind: SegmentKind, index: int) -> IPv4Address | None:
    """The address of the router that serves a LAN or carrier segment (``.1``); None for the internet."""
    if kind is SegmentKind.INTERNET:
        return None
    return v4_prefixes(kind, index)[0].network_address + 1


class Allocator:
    """Hands out free addresses of one segment in order, skipping those already taken."""

    def __init__(self, kind: SegmentKind, index: int, taken: Iterable[IPv4Address] = ()) -> None:
        self.kind = kind
        self.prefixes = v4_prefixes(kind, index)
        self.taken: set[IPv4Address] = set(taken)

    def contains(self, address: IPv4Address) -> bool:
        """True for a usable host address of the segment (not the network or broadcast address)."""
        return any(
            address in net and address not in (net.network_address, net.broadcast_address) for net in self.prefixes
        )

    def take(self, address: IPv4Address) -> bool:
        """Reserve ``address``; False if it is already taken."""
        if address in self.taken:
            return False
        self.taken.add(address)
        return True

    def _pool(self, router: bool) -> Iterator[IPv4Address]:
        if self.kind is SegmentKind.INTERNET:
            net, first = (ROUTER_PREFIX, FIRST_ROUTER) if router else (PUBLIC_PREFIX, FIRST_PUBLIC_HOST)
        else:
            net, first = self.prefixes[0], FIRST_HOST
        for n in range(first, net.num_addresses - 1):
            yield net.network_address + n

    def next(self, *, router: bool = False) -> IPv4Address:
        """The next free address: for a router's WAN side on the internet from 203.0.113.1, else from .10."""
        for address in self._pool(router):
            if self.take(address):
                return address
        raise UsageError(f"segment prefix {self.prefixes[0]} has no free address left")


def parse_v4(text: object, what: str) -> IPv4Address:
    """An IPv4 address from a string, or a :class:`UsageError` naming ``what``."""
    try:
        return IPv4Address(str(text))
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an IPv4 address") from None


def parse_v6(text: object, what: str) -> IPv6Address:
    """An IPv6 address from a string, or a :class:`UsageError` naming ``what``."""
    try:
        return IPv6Address(str(text))
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an IPv6 address") from None


__all__ = [
    "INTERNET",
    "INTERNET_V6",
    "PUBLIC_PREFIX",
    "ROUTER_PREFIX",
    "Allocator",
    "SegmentKind",
    "gateway_v4",
    "parse_v4",
    "parse_v6",
    "v4_prefixes",
    "v6_for",
    "v6_prefix",
]
