"""The node's local endpoints: its interface addresses with the port of its UDP socket.

magicsock advertises, besides what STUN saw, every address of the host's interfaces with the port
of its socket (Tailscale ``netmon``/``interfaces.LocalAddresses``, protocols.md §4.2 "local
endpoints"): two peers on one LAN find each other on their private addresses, and a host with a
public address needs no STUN at all. natkit reads the addresses with ``ip -json address show``
(iproute2), in the namespace the node runs in, and keeps (see :func:`local_endpoints`):

* links that are up and not loopback, except the node's own TUN (its tunnel addresses are reached
  through the tunnel, never advertised as a way into it);
* IPv4 addresses that are not loopback (127/8) or link-local (169.254/16, RFC 3927);
* IPv6 addresses that are global unicast or unique local (fc00::/7, RFC 4193): not loopback, not
  link-local (fe80::/10: useless without a zone), not multicast, not Tailscale's own ULA range
  (fd7a:115c:a1e0::/48), and not still ``tentative`` or ``dadfailed`` (RFC 4862 §5.4: not usable yet).

The addresses are sorted IPv6 first (natkit prefers IPv6 when it works, issue 6), then by address,
so the list does not change order between two reads of an unchanged host.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Collection, Iterable
from typing import Any

from toolkit.types import Endpoint, IPAddress

TAILNET_V4 = ipaddress.ip_network("100.64.0.0/10")  # the CGNAT range Tailscale takes its 100.x.y.z from
TAILNET_V6 = ipaddress.ip_network("fd7a:115c:a1e0::/48")  # Tailscale's ULA range
_LINK_LOCAL_V4 = ipaddress.ip_network("169.254.0.0/16")
_ULA = ipaddress.ip_network("fc00::/7")
_GLOBAL_V6 = ipaddress.ip_network("2000::/3")
_UNUSABLE_FLAGS = ("tentative", "dadfailed")


def usable_address(ip: IPAddress) -> bool:
    """Whether ``ip`` is worth advertising as a way to reach this host (module docstring)."""
    if ip.version == 4:
        return not ip.is_loopback and ip not in _LINK_LOCAL_V4 and not ip.is_multicast and not ip.is_unspecified
    if ip in TAILNET_V6:
        return False
    return ip in _GLOBAL_V6 or ip in _ULA


def addresses_from_ip_json(links: Iterable[Any], *, exclude_links: Collection[str] = ()) -> list[IPAddress]:
    """The usable addresses in ``ip -json address show`` output (a list of links), IPv6 first, sorted."""
    found: set[IPAddress] = set()
    for link in links:
        if not isinstance(link, dict):
            continue
        flags = link.get("flags") or []
        if link.get("ifname") in exclude_links or "LOOPBACK" in flags or "UP" not in flags:
            continue
        for info in link.get("addr_info") or []:
            if not isinstance(info, dict) or any(info.get(flag) for flag in _UNUSABLE_FLAGS):
                continue
            try:
                ip = ipaddress.ip_address(str(info.get("local", "")))
            except ValueError:
                continue
            if usable_address(ip):
                found.add(ip)
    return sorted(found, key=lambda ip: (-ip.version, ip.packed))


def interface_addresses(*, exclude_links: Collection[str] = ()) -> list[IPAddress]:
    """The usable addresses of this namespace's interfaces; [] when ``ip`` is missing or fails."""
    try:
        done = subprocess.run(
            ["ip", "-json", "address", "show"], capture_output=True, text=True, check=False, timeout=5
        )
        links = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return []
    return addresses_from_ip_json(links if isinstance(links, list) else [], exclude_links=exclude_links)


def local_endpoints(
    port: int,
    *,
    exclude_links: Collection[str] = (),
    exclude_ips: Collection[IPAddress] = (),
    ipv6: bool = True,
    addresses: Iterable[IPAddress] | None = None,
) -> list[Endpoint]:
    """Every usable interface address with ``port``; ``ipv6=False`` when the socket is IPv4 only.

    ``exclude_ips``: the node's own tunnel addresses (also when the TUN is not up, or ``--no-tun``).
    ``addresses``: use these instead of reading the interfaces (tests).
    """
    ips = interface_addresses(exclude_links=exclude_links) if addresses is None else list(addresses)
    return [Endpoint(ip, port) for ip in ips if ip not in exclude_ips and (ipv6 or ip.version == 4)]


__all__ = [
    "TAILNET_V4",
    "TAILNET_V6",
    "addresses_from_ip_json",
    "interface_addresses",
    "local_endpoints",
    "usable_address",
]
