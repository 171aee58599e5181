"""A real kernel NAT in three network namespaces, for `natkit nat-type` tests (root, iproute2, nftables).

    client ns  10.77.0.2/24 ─ lan │ router ns │ wan 203.0.113.1/24 ─ 203.0.113.10 + .11/24  server ns
                                  nft masquerade                        coturn, RFC 5780 mode

The router masquerades what leaves ``wan`` (``masquerade``, ``masquerade random`` or ``masquerade
fully-random``) and, like a home router, drops unsolicited input from the WAN: only
ESTABLISHED,RELATED comes in (design.md §5). ``hairpin=True`` adds the port-forward style hairpin
rules a router needs to loop LAN traffic to its own WAN address back in: DNAT to the client and
masquerade towards the LAN. ``udp_timeout`` sets the router namespace's own
``net.netfilter.nf_conntrack_udp_timeout`` (a per-namespace sysctl), the idle lifetime of a UDP
binding that has seen one answer. Everything is removed on exit, also when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.coturn import Coturn, start_coturn
from tests.support import ROOT, require_root, require_tool

CLIENT, ROUTER_LAN, ROUTER_WAN = "10.77.0.2", "10.77.0.1", "203.0.113.1"
SERVER_IPS = ("203.0.113.10", "203.0.113.11")

_RULES = """
table ip nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat;
    {hairpin_dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat;
    oifname "wan" {masquerade}
    {hairpin_snat}
  }}
}}
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname {{ "lo", "lan" }} accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan" accept
  }}
}}
"""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class NatLab:
    client: str
    router: str
    server: str
    coturn: Coturn

    @property
    def stun(self) -> str:
        return f"{SERVER_IPS[0]}:{self.coturn.port}"

    def natkit(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``python -m toolkit ARGS`` inside the client namespace."""
        argv = ["ip", "netns", "exec", self.client, sys.executable, "-m", "toolkit", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)

    def nat_type(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        """Run ``natkit nat-type --format json`` with fast retransmissions; the parsed report."""
        fast = ("--rto", "0.05", "--rc", "3", "--rm", "4")
        p = self.natkit("nat-type", self.stun, "--format", "json", *fast, *args, timeout=timeout)
        assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
        report: dict[str, Any] = json.loads(p.stdout)
        return report


@contextlib.contextmanager
def nat_lab(
    tmp: Path, masquerade: str = "masquerade", *, hairpin: bool = False, udp_timeout: int | None = None
) -> Iterator[NatLab]:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    tag = uuid.uuid4().hex[:8]
    c, r, s = (f"natkit-t-{tag}-{x}" for x in ("c", "r", "s"))
    made: list[str] = []
    try:
        for ns in (c, r, s):
            _run("ip", "netns", "add", ns)
            made.append(ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        # the veth pairs are created inside the namespaces: no name ever appears in the root namespace
        _run("ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", c)
        _run("ip", "-n", r, "link", "add", "wan", "type", "veth", "peer", "name", "eth0", "netns", s)
        _run("ip", "-n", c, "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        _run("ip", "-n", r, "addr", "add", f"{ROUTER_LAN}/24", "dev", "lan")
        _run("ip", "-n", r, "addr", "add", f"{ROUTER_WAN}/24", "dev", "wan")
        for ip in SERVER_IPS:
            _run("ip", "-n", s, "addr", "add", f"{ip}/24", "dev", "eth0")
        for ns, dev in ((c, "eth0"), (r, "lan"), (r, "wan"), (s, "eth0")):
            _run("ip", "-n", ns, "link", "set", dev, "up")
        _run("ip", "-n", c, "route", "add", "default", "via", ROUTER_LAN)
        _run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        rules = _RULES.format(
            masquerade=masquerade,
            hairpin_dnat=f'iifname "lan" ip daddr {ROUTER_WAN} dnat to {CLIENT}' if hairpin else "",
            hairpin_snat=f'oifname "lan" ip saddr {CLIENT}/24 masquerade' if hairpin else "",
        )
        subprocess.run(["ip", "netns", "exec", r, "nft", "-f", "-"], input=rules.encode(), check=True, timeout=30)
        if udp_timeout is not None:  # conntrack is loaded now (the nat table needs it): the sysctl exists
            _run("ip", "netns", "exec", r, "sysctl", "-qw", f"net.netfilter.nf_conntrack_udp_timeout={udp_timeout}")
        coturn = start_coturn(tmp, SERVER_IPS, netns=s)
        try:
            yield NatLab(c, r, s, next(coturn))
        finally:
            coturn.close()
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def sysctl(netns: str | None, name: str) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "sysctl", "-n", name], capture_output=True, text=True, check=True).stdout.strip()
