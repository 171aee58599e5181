"""A :class:`~toolkit.lab.nat.NatBehavior` as an nftables ruleset for a Linux router (design.md §5).

What the kernel can do, measured by tests/lab/netns (``natkit nat-type`` through the real ruleset):

* **mapping** (RFC 4787 §4.1). ``masquerade`` gives each new conntrack entry the private source
  port when that 5-tuple is free, so every flow of one private ``ip:port`` leaves from the same
  public port: endpoint-independent mapping with port preservation. ``masquerade fully-random``
  draws a fresh random port for each new entry, i.e. for each remote ``ip:port``: address-and-port-
  dependent mapping with random allocation (Tailscale's "hard"). Nothing in netfilter maps per
  remote IP only (address-dependent), keeps the port while mapping per destination
  (``symmetric-preserving``), or hands out ports in sequence (``symmetric-sequential``), or keeps one
  random port for all destinations: those raise :class:`~toolkit.errors.UsageError` naming the preset
  and the missing feature (the ``sim`` backend has them).
* **filtering** (RFC 4787 §5). Conntrack alone is address-and-port-dependent: only replies to a
  5-tuple that went out come back (``ct state established,related accept``). The other two need
  state conntrack does not keep, so the ruleset keeps it in dynamic sets, written by a chain that
  runs after source NAT (priority ``srcnat + 10``) and so sees the public port:

  - map ``mappings``: public port -> private ``ip . port`` of every UDP flow leaving the WAN;
  - set ``permits``: public port . remote IP (address-dependent filtering only).

  An inbound UDP packet that starts a new flow is DNATed to ``mappings[dport]`` when the port is
  mapped (endpoint-independent filtering, "full cone") or when ``dport . saddr`` is in ``permits``
  (address-dependent filtering, "restricted cone"); ``ct status dnat accept`` lets it through.
  Elements live ``mapping_timeout`` seconds after the last outbound packet (RFC 4787 §4.3).
* **mapping timeout**: the router namespace's ``nf_conntrack_udp_timeout`` and ``_stream`` sysctls
  (per network namespace), plus the set timeouts above (:func:`conntrack_sysctls`).
* **WAN input** (design.md §5): ``drop`` accepts only ``ct state established,related`` (and ICMPv6
  neighbour discovery) on the router's input and forward hooks; ``accept`` (the broken router) lets
  unsolicited input reach the router, where it creates conntrack entries that collide with later
  mappings.
* **hairpinning** (RFC 4787 §6): LAN traffic to the router's public address is DNATed through
  ``mappings`` and source-NATed to the public address, so the receiver sees the sender's public
  ``ip:port`` (REQ-9). Hairpinned packets are not filtered.
* **one_to_one**: the first LAN host is SNATed/DNATed 1:1 to the WAN address (all ports, no
  filtering); other LAN hosts are masqueraded.
* **block_udp**: forwarded UDP from the LAN is dropped (TCP still works: DERP over TCP).

IPv6 is routed, not NATed (protocols.md §6.2); a NAT router still filters it like v4:
connection tracking for address-and-port-dependent filtering, sets ``open6`` (private ``ip . port``)
and ``permits6`` (private ``ip . port`` . remote IP) for the other two.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from toolkit.errors import UsageError
from toolkit.lab.addressing import IPv4Address, IPv4Network
from toolkit.lab.nat import Filtering, Mapping, NatBehavior, PortAllocation, WanInput
from toolkit.lab.topology import LAN_IFACE, WAN_IFACE, Router, Topology

TABLE = "natkit"


def inexpressible(nat: NatBehavior) -> str | None:
    """Why nftables cannot realise ``nat`` (the missing kernel feature), or None if it can."""
    m, a = nat.mapping, nat.allocation
    if m is Mapping.ADDRESS_DEPENDENT:
        return "address-dependent mapping (masquerade maps per private endpoint or per 5-tuple, never per remote IP)"
    if a is PortAllocation.SEQUENTIAL:
        return "sequential port allocation (the kernel keeps the port or picks one at random)"
    if m is Mapping.ADDRESS_AND_PORT_DEPENDENT and a is PortAllocation.PRESERVE:
        return (
            "port-preserving address-and-port-dependent mapping (masquerade keeps the port for every"
            " destination, which is endpoint-independent; fully-random never keeps it)"
        )
    if m is Mapping.ENDPOINT_INDEPENDENT and a is PortAllocation.RANDOM:
        return "endpoint-independent mapping with a random port (masquerade random draws a port per 5-tuple)"
    if nat.one_to_one and (
        m is not Mapping.ENDPOINT_INDEPENDENT or nat.filtering is not Filtering.ENDPOINT_INDEPENDENT
    ):
        return "1:1 NAT with a mapping or filtering other than endpoint-independent"
    return None


def check_expressible(nat: NatBehavior) -> None:
    """A :class:`UsageError` naming the preset and the missing kernel feature, if nftables cannot do ``nat``."""
    why = inexpressible(nat)
    if why is not None:
        raise UsageError(
            f"NAT preset {nat.name!r} cannot run on the netns or docker backend: nftables has no {why}; use the sim backend"
        )


@dataclass(frozen=True, slots=True)
class RouterRules:
    """What a router's ruleset needs: its NAT (None: a plain router), WAN address, LAN prefixes, 1:1 host."""

    nat: NatBehavior | None
    wan_v4: IPv4Address
    lan_nets: tuple[IPv4Network, ...]
    one_to_one_host: IPv4Address | None = None
    wan: str = WAN_IFACE
    lan: str = LAN_IFACE


def rules_for(topo: Topology, router: Router) -> RouterRules:
    """The :class:`RouterRules` of ``router``: its LAN prefix plus prefixes routed behind plain routers."""
    lan_nets = list(topo.segment(router.lan).v4)
    for route in topo.routes(router.name):
        if route.interface == LAN_IFACE and isinstance(route.prefix, IPv4Network) and route.prefix.prefixlen:
            lan_nets.append(route.prefix)
    host = None
    if router.nat is not None and router.nat.one_to_one:
        hosts = topo.hosts_on(router.lan)
        if not hosts:
            raise UsageError(f"router {router.name!r}: a 1:1 NAT needs a host on its LAN {router.lan!r}")
        host = hosts[0].v4
    return RouterRules(router.nat, router.wan_v4, tuple(lan_nets), host)


def conntrack_sysctls(nat: NatBehavior | None) -> dict[str, str]:
    """Per-namespace sysctls after the ruleset is loaded: conntrack's UDP timeouts = the mapping timeout."""
    if nat is None:
        return {}
    seconds = str(max(1, math.ceil(nat.mapping_timeout)))
    return {"net.netfilter.nf_conntrack_udp_timeout": seconds, "net.netfilter.nf_conntrack_udp_timeout_stream": seconds}


def _set_names(elements: Iterable[object]) -> str:
    return ", ".join(str(e) for e in elements)


def ruleset(rules: RouterRules) -> str:
    """The ``nft -f`` text for one router namespace (one ``inet natkit`` table, replaced if present)."""
    nat = rules.nat
    head = f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"  # idempotent: create, drop, define
    if nat is None:  # a plain router: forwards everything, filters nothing
        return head
    check_expressible(nat)
    wan, lan, w = f'"{rules.wan}"', f'"{rules.lan}"', rules.wan_v4
    f = nat.filtering
    ms = max(1, round(nat.mapping_timeout * 1000))
    want_map = not nat.one_to_one and (f is not Filtering.ADDRESS_AND_PORT_DEPENDENT or nat.hairpinning)
    want_permits = not nat.one_to_one and f is Filtering.ADDRESS_DEPENDENT
    udp4 = "meta nfproto ipv4 meta l4proto udp"
    udp6 = "meta nfproto ipv6 meta l4proto udp"
    lans = f"{{ {_set_names(rules.lan_nets)} }}"
    masq = "masquerade fully-random" if nat.mapping is Mapping.ADDRESS_AND_PORT_DEPENDENT else "masquerade"
    sets, pre, post, track, fwd, inp = [], [], [], [], [], []
    dyn = f"flags dynamic, timeout; timeout {ms}ms;"
    if want_map:
        sets.append(f"map mappings {{ type inet_service : ipv4_addr . inet_service; {dyn} }}")
        # RFC 4787 §4.1: remember which private endpoint each public port belongs to
        track.append(
            f"oifname {wan} {udp4} ct direction original"
            " update @mappings { udp sport : ct original ip saddr . ct original proto-src }"
        )
        track.append(
            f"oifname {wan} {udp4} ct direction reply"
            " update @mappings { udp sport : ct reply ip saddr . ct reply proto-src }"
        )
    if want_permits:
        sets.append(f"set permits {{ type inet_service . ipv4_addr; {dyn} }}")
        track.append(f"oifname {wan} {udp4} update @permits {{ udp sport . ip daddr }}")
    if nat.one_to_one:
        h = rules.one_to_one_host
        assert h is not None, "a 1:1 NAT needs its LAN host"
        pre.append(f"iifname {wan} ip daddr {w} dnat ip to {h}")
        post.append(f"oifname {wan} ip saddr {h} snat ip to {w}")
    elif f is Filtering.ENDPOINT_INDEPENDENT:  # RFC 4787 §5: anyone may use a live mapping
        pre.append(f"iifname {wan} ip daddr {w} {udp4} dnat ip to udp dport map @mappings")
    elif f is Filtering.ADDRESS_DEPENDENT:  # RFC 4787 §5: any port of a remote IP the mapping sent to
        pre.append(
            f"iifname {wan} ip daddr {w} {udp4} udp dport . ip saddr @permits dnat ip to udp dport map @mappings"
        )
    post.append(f"oifname {wan} meta nfproto ipv4 {masq}")
    if nat.hairpinning:  # RFC 4787 §6 REQ-9: loop back in, from the sender's public address
        if nat.one_to_one:
            pre.append(f"iifname {lan} ip daddr {w} dnat ip to {rules.one_to_one_host}")
        else:
            pre.append(f"iifname {lan} ip daddr {w} {udp4} dnat ip to udp dport map @mappings")
        post.append(f"oifname {lan} ip saddr {lans} ct status dnat snat ip to {w}")
    # IPv6: routed, filtered like v4 (module docstring)
    if f is Filtering.ENDPOINT_INDEPENDENT:
        sets.append(f"set open6 {{ type ipv6_addr . inet_service; {dyn} }}")
        fwd.append(f"iifname {lan} oifname {wan} {udp6} update @open6 {{ ip6 saddr . udp sport }}")
    elif f is Filtering.ADDRESS_DEPENDENT:
        sets.append(f"set permits6 {{ type ipv6_addr . inet_service . ipv6_addr; {dyn} }}")
        fwd.append(f"iifname {lan} oifname {wan} {udp6} update @permits6 {{ ip6 saddr . udp sport . ip6 daddr }}")
    if nat.block_udp:
        fwd.insert(0, f"iifname {lan} meta l4proto udp drop")
    fwd += ["ct state established,related accept", "ct status dnat accept", f"iifname {lan} accept"]
    if f is Filtering.ENDPOINT_INDEPENDENT:
        fwd.append(f"iifname {wan} {udp6} ip6 daddr . udp dport @open6 accept")
    elif f is Filtering.ADDRESS_DEPENDENT:
        fwd.append(f"iifname {wan} {udp6} ip6 daddr . udp dport . ip6 saddr @permits6 accept")
    inp += [
        "ct state established,related accept",
        f'iifname {{ "lo", {lan} }} accept',
        # IPv6 neighbour discovery must reach the router or nothing v6 works (RFC 4861)
        "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept",
    ]
    policy = "accept" if nat.wan_input is WanInput.ACCEPT else "drop"
    body = [f"  {s}" for s in sets]
    body += _chain("prerouting", "type nat hook prerouting priority dstnat; policy accept;", pre)
    body += _chain("postrouting", "type nat hook postrouting priority srcnat; policy accept;", post)
    if track:
        body += _chain("track", "type filter hook postrouting priority srcnat + 10; policy accept;", track)
    body += _chain("input", f"type filter hook input priority filter; policy {policy};", inp)
    body += _chain("forward", f"type filter hook forward priority filter; policy {policy};", fwd)
    return head + f"table inet {TABLE} {{\n" + "\n".join(body) + "\n}\n"


def _chain(name: str, hook: str, rules: list[str]) -> list[str]:
    return [f"  chain {name} {{", f"    {hook}", *(f"    {r}" for r in rules), "  }"]


__all__ = ["TABLE", "RouterRules", "check_expressible", "conntrack_sysctls", "inexpressible", "rules_for", "ruleset"]
