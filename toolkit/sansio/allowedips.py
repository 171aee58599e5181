"""Cryptokey routing: WireGuard's AllowedIPs table, a longest-prefix match from IP prefixes to peers.

Follows the WireGuard whitepaper §2 ("cryptokey routing") and wireguard-go ``device/allowedips.go``
semantics: each prefix belongs to exactly one peer; inserting a prefix that another peer holds moves
it; a lookup returns the peer of the longest prefix containing the address. The table serves both
directions: *sending*, the destination address of an IP packet from the TUN picks the peer;
*receiving*, the source address of a decrypted packet must map back to the peer it came from, or
the packet is dropped.

IPv4 and IPv6 are separate tables (an IPv4-mapped IPv6 address is an IPv6 address here, as in
wireguard-go). Prefixes are stored masked (``10.1.2.3/8`` is ``10.0.0.0/8``, as ``wg`` shows it).

Speed: one dict per (family, prefix length) keyed by the address's top ``length`` bits as an int; a
lookup probes the lengths in use from longest to shortest, so a table of /32 routes costs one dict
probe per packet. wireguard-go uses a binary trie; the answers are the same.

Peers are any hashable values compared with ``==`` (a :class:`~toolkit.types.NodePublicKey`, or a
peer object with identity hashing). Bad addresses raise :class:`toolkit.errors.BadValueError` (from
packet bytes) or :class:`toolkit.errors.UsageError` (an unparsable prefix from a config).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Hashable, Iterator
from typing import Generic, TypeAlias, TypeVar

from toolkit.errors import BadValueError, UsageError

P = TypeVar("P", bound=Hashable)
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
PrefixLike: TypeAlias = str | Network | Address

_BITS = {4: 32, 6: 128}


def parse_prefix(prefix: PrefixLike) -> Network:
    """A masked network from ``"10.0.0.0/8"``, ``"fd00::1"`` (a /128), a network or an address."""
    if isinstance(prefix, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return prefix  # ipaddress keeps networks masked
    try:
        return ipaddress.ip_network(prefix, strict=False)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{prefix!r} is not an IP prefix (write 10.0.0.0/8 or fd00::/64): {exc}") from None


def _address(ip: bytes | bytearray | memoryview | Address | str) -> tuple[int, int]:
    """(version, integer value) of an address given as 4/16 packet bytes, an ip_address or a string."""
    if isinstance(ip, bytes | bytearray | memoryview):
        if len(ip) == 4:
            return 4, int.from_bytes(ip, "big")
        if len(ip) == 16:
            return 6, int.from_bytes(ip, "big")
        raise BadValueError(f"an IP address has 4 or 16 bytes, got {len(ip)}")
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip)
        except ValueError as exc:
            raise BadValueError(f"{ip!r} is not an IP address") from exc
    return ip.version, int(ip)


class AllowedIPs(Generic[P]):
    """Longest-prefix-match table of IPv4 and IPv6 prefixes, each owned by one peer."""

    def __init__(self) -> None:
        # version -> prefix length -> (address >> (bits - length)) -> peer
        self._tables: dict[int, dict[int, dict[int, P]]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}  # lengths in use, longest first
        self._by_peer: dict[P, set[Network]] = {}

    @staticmethod
    def _key(net: Network) -> tuple[int, int, int]:
        bits = _BITS[net.version]
        return net.version, net.prefixlen, int(net.network_address) >> (bits - net.prefixlen)

    def insert(self, prefix: PrefixLike, peer: P) -> Network:
        """Route ``prefix`` to ``peer``, taking it from the peer that held it, if any; returns the masked prefix."""
        net = parse_prefix(prefix)
        version, length, key = self._key(net)
        table = self._tables[version].get(length)
        if table is None:
            table = self._tables[version][length] = {}
            self._lengths[version] = sorted(self._tables[version], reverse=True)
        old = table.get(key)
        if old is not None and old != peer:
            self._forget(old, net)
        table[key] = peer
        self._by_peer.setdefault(peer, set()).add(net)
        return net

    def _forget(self, peer: P, net: Network) -> None:
        nets = self._by_peer.get(peer)
        if nets is not None:
            nets.discard(net)
            if not nets:
                del self._by_peer[peer]

    def remove(self, prefix: PrefixLike) -> P | None:
        """Remove ``prefix`` (whoever holds it); returns its peer, or None if it was not in the table."""
        net = parse_prefix(prefix)
        version, length, key = self._key(net)
        table = self._tables[version].get(length)
        if table is None or key not in table:
            return None
        peer = table.pop(key)
        if not table:
            del self._tables[version][length]
            self._lengths[version] = sorted(self._tables[version], reverse=True)
        self._forget(peer, net)
        return peer

    def remove_by_peer(self, peer: P) -> int:
        """Remove every prefix of ``peer``; returns how many there were."""
        nets = list(self._by_peer.get(peer, ()))
        for net in nets:
            self.remove(net)
        return len(nets)

    def lookup(self, ip: bytes | bytearray | memoryview | Address | str) -> P | None:
        """The peer of the longest prefix containing ``ip`` (4 or 16 raw bytes, an ip_address or text), or None."""
        version, value = _address(ip)
        bits = _BITS[version]
        tables = self._tables[version]
        for length in self._lengths[version]:
            peer = tables[length].get(value >> (bits - length))
            if peer is not None:
                return peer
        return None

    def entries(self, peer: P) -> list[Network]:
        """The prefixes of ``peer``: IPv4 first, then by address and length (the order ``wg show`` uses)."""
        return sorted(self._by_peer.get(peer, ()), key=lambda n: (n.version, n.network_address, n.prefixlen))

    def peers(self) -> list[P]:
        """Every peer holding at least one prefix."""
        return list(self._by_peer)

    def items(self) -> Iterator[tuple[Network, P]]:
        """Every (prefix, peer) pair, in no particular order."""
        for peer, nets in self._by_peer.items():
            for net in nets:
                yield net, peer

    def clear(self) -> None:
        """Remove everything."""
        for version in (4, 6):
            self._tables[version].clear()
            self._lengths[version] = []
        self._by_peer.clear()

    def __len__(self) -> int:
        return sum(len(t) for tables in self._tables.values() for t in tables.values())

    def __repr__(self) -> str:
        return f"AllowedIPs({len(self)} prefixes, {len(self._by_peer)} peers)"


__all__ = ["AllowedIPs", "Network", "PrefixLike", "parse_prefix"]
