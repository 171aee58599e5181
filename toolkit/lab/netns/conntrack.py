"""A NAT router's mappings from its connection-tracking table (``/proc/net/nf_conntrack``, ``conntrack -L``).

Each conntrack entry holds an *original* tuple (as the first packet was seen) and a *reply* tuple
(what an answer must look like, after NAT). An entry is a NAT mapping when the reply tuple is not
the mirror image of the original (netfilter conntrack, ``nf_conntrack_tuple``):

* outbound (source NAT, masquerade): original ``LAN:p -> R:r``, reply ``R:r -> WAN:P``: private
  ``LAN:p`` appears as public ``WAN:P`` towards ``R:r``;
* inbound (destination NAT: full cone, restricted cone, 1:1, hairpin): original ``R:r -> WAN:P``,
  reply ``LAN:p -> R:r``.

An endpoint-independent NAT reuses one public port for every destination, so its entries with the
same private and public endpoint are one mapping (``remote`` None, RFC 4787 §4.1); an
address-and-port-dependent NAT's mapping is per destination (``remote`` set).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from toolkit.lab.backend import NatMapping
from toolkit.node.tun import run_in_netns
from toolkit.types import Endpoint


@dataclass(frozen=True, slots=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One conntrack entry: protocol, seconds left, original and reply tuples, flags."""

    proto: str
    timeout: float
    original: Tuple
    reply: Tuple
    flags: frozenset[str]

    @property
    def natted(self) -> bool:
        o, r = self.original, self.reply
        return (r.src, r.sport, r.dst, r.dport) != (o.dst, o.dport, o.src, o.sport)


def parse(text: str) -> list[Entry]:
    """Entries of ``/proc/net/nf_conntrack`` or ``conntrack -L`` text (UDP and TCP only)."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        proto = next((w for w in words[:4] if w in ("udp", "tcp")), None)
        if proto is None:
            continue
        at = words.index(proto)
        try:
            timeout = float(words[at + 2])
        except (IndexError, ValueError):
            continue
        tuples: list[dict[str, str]] = [{}, {}]
        flags = set()
        for word in words[at + 3 :]:
            if word.startswith("["):
                flags.add(word.strip("[]"))
                continue
            key, sep, value = word.partition("=")
            if not sep or key not in ("src", "dst", "sport", "dport"):
                continue
            slot = tuples[0] if key not in tuples[0] else tuples[1]
            slot.setdefault(key, value)
        try:
            o, r = (Tuple(t["src"], t["dst"], int(t["sport"]), int(t["dport"])) for t in tuples)
        except (KeyError, ValueError):
            continue
        entries.append(Entry(proto, timeout, o, r, frozenset(flags)))
    return entries


def mappings(entries: list[Entry], per_destination: bool) -> list[NatMapping]:
    """The NAT mappings among ``entries`` (see the module docstring), sorted, merged when not per destination."""
    merged: dict[tuple[str, Endpoint, Endpoint, Endpoint | None], float] = {}
    for e in entries:
        if not e.natted:
            continue
        o, r = e.original, e.reply
        if (r.src, r.sport) != (o.dst, o.dport):  # destination NAT: the inside host answers
            private, public, remote = _ep(r.src, r.sport), _ep(o.dst, o.dport), _ep(o.src, o.sport)
        else:  # source NAT
            private, public, remote = _ep(o.src, o.sport), _ep(r.dst, r.dport), _ep(o.dst, o.dport)
        key = (e.proto, private, public, remote if per_destination else None)
        merged[key] = max(merged.get(key, 0.0), e.timeout)
    out = [NatMapping(p, priv, pub, rem, left) for (p, priv, pub, rem), left in merged.items()]
    return sorted(out, key=lambda m: (m.proto, str(m.private), str(m.public), str(m.remote)))


def _ep(ip: str, port: int) -> Endpoint:
    return Endpoint(ip_address(ip), port)


def read_table(netns: str) -> str:
    """The conntrack table of ``netns`` as text: ``/proc/thread-self/net/nf_conntrack``, else ``conntrack -L``."""

    def read() -> str:
        try:  # /proc/net follows the *thread's* namespace only through thread-self
            return Path("/proc/thread-self/net/nf_conntrack").read_text()
        except FileNotFoundError:
            pass
        try:
            done = subprocess.run(["conntrack", "-L"], capture_output=True, text=True, timeout=10, check=False)
        except FileNotFoundError:
            return ""  # no procfs view and no conntrack-tools: an empty table
        return done.stdout

    return run_in_netns(netns, read)


__all__ = ["Entry", "Tuple", "mappings", "parse", "read_table"]
