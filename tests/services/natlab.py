"""Real kernel NAT in network namespaces, for tests of natkit's services across it (root, iproute2, nftables).

    client ns  10.77.0.2/24 ─ lan │ router ns │ wan 203.0.113.1/24 ─┐
                                  nft masquerade                    │ br0 in the server ns:
    client ns  10.78.0.2/24 ─ lan │ router ns │ wan 203.0.113.2/24 ─┤ 203.0.113.10 + .11/24
     (``lans=2`` only)            nft masquerade                    │ STUN server, RFC 5780 mode

Each router masquerades what leaves ``wan`` (``masquerade``, ``masquerade random`` or ``masquerade
fully-random``) and, like a home router, drops unsolicited input from the WAN: only
ESTABLISHED,RELATED comes in (design.md §5). ``hairpin=True`` adds the port-forward style hairpin
rules a router needs to loop LAN traffic to its own WAN address back in: DNAT to the client and
masquerade towards the LAN. ``udp_timeout`` sets each router namespace's own
``net.netfilter.nf_conntrack_udp_timeout`` (a per-namespace sysctl), the idle lifetime of a UDP
binding that has seen one answer. ``lans=2`` puts a second client behind a second router of its own;
the routers' WAN ends meet on a bridge in the server namespace, as two homes meet on the internet.

``stun`` picks the STUN server started in the server namespace on both server addresses:
``"coturn"`` (Debian's turnserver, ports P and P + 1), ``"natkit"`` (``natkit stun-server --listen
A:3478 --listen B:3479``, RFC 5780 mode) or ``None``. Namespaces are named ``natkit-t-<random>-*``;
everything (processes, namespaces) is removed on exit, also when the test fails.
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

from tests.coturn import start_coturn
from tests.support import ROOT, NatkitService, natkit_service, require_root, require_tool, wait_until

CLIENT, ROUTER_LAN, ROUTER_WAN = "10.77.0.2", "10.77.0.1", "203.0.113.1"  # LAN 0
SERVER_IPS = ("203.0.113.10", "203.0.113.11")
NATKIT_STUN_PORTS = (3478, 3479)  # A:P and B:Q of natkit's RFC 5780 server; the server namespace is ours alone

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
class Lan:
    """One home: a client namespace behind its own router namespace."""

    client: str
    router: str
    client_ip: str
    router_lan_ip: str
    wan_ip: str


def lan_addresses(i: int) -> tuple[str, str, str]:
    """(client, router LAN side, router WAN side) of LAN ``i``: 10.77.0.2, 10.77.0.1, 203.0.113.1 for LAN 0."""
    return f"10.{77 + i}.0.2", f"10.{77 + i}.0.1", f"203.0.113.{1 + i}"


@dataclass(frozen=True)
class StunInfo:
    """The STUN server in the server namespace: which one, its primary and alternate port."""

    kind: str  # "coturn" or "natkit"
    port: int
    alt_port: int

    def check_software(self, software: str | None) -> None:
        """Assert that a report's SOFTWARE came from this server (so a parametrized test hit the right one)."""
        want = "Coturn" if self.kind == "coturn" else "natkit"
        assert software is not None and software.startswith(want), f"{self.kind} server said SOFTWARE {software!r}"


@dataclass(frozen=True)
class NatLab:
    lans: tuple[Lan, ...]
    server: str
    stun_server: StunInfo | None
    tmp: Path

    @property
    def client(self) -> str:
        return self.lans[0].client

    @property
    def router(self) -> str:
        return self.lans[0].router

    @property
    def stun(self) -> str:
        assert self.stun_server is not None, "this lab runs no STUN server"
        return f"{SERVER_IPS[0]}:{self.stun_server.port}"

    def natkit(self, *args: str, timeout: float = 60, lan: int = 0) -> subprocess.CompletedProcess[str]:
        """``python -m toolkit ARGS`` inside the client namespace of LAN ``lan``."""
        argv = ["ip", "netns", "exec", self.lans[lan].client, sys.executable, "-m", "toolkit", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)

    def nat_type(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        """Run ``natkit nat-type --format json`` with fast retransmissions; the parsed report."""
        fast = ("--rto", "0.05", "--rc", "3", "--rm", "4")
        p = self.natkit("nat-type", self.stun, "--format", "json", *fast, *args, timeout=timeout)
        assert p.returncode == 0, f"exit {p.returncode}: {p.stderr}"
        report: dict[str, Any] = json.loads(p.stdout)
        assert self.stun_server is not None
        self.stun_server.check_software(report["server_software"])
        return report

    def service(self, *args: str) -> contextlib.AbstractContextManager[NatkitService]:
        """``natkit ARGS`` (a ``*-server`` command) in the server namespace, until the with-block ends."""
        return natkit_service(*args, netns=self.server)


def _make_lan(i: int, tag: str, server: str, made: list[str], masquerade: str, hairpin: bool) -> Lan:
    client_ip, lan_ip, wan_ip = lan_addresses(i)
    c, r = f"natkit-t-{tag}-c{i}", f"natkit-t-{tag}-r{i}"
    for ns in (c, r):
        _run("ip", "netns", "add", ns)
        made.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
    # The veth pairs are created inside the namespaces: no name ever appears in the root namespace.
    # Interface indexes are per namespace; both ends of a pair get different ones, because the kernel
    # handles the carrier change of a veth whose index equals its peer's as non-urgent (linkwatch:
    # ifindex == iflink), up to a second late, and until then the device drops what it should send.
    veth = ("type", "veth", "peer", "name")
    _run("ip", "-n", r, "link", "add", "lan", "index", "11", *veth, "eth0", "index", "12", "netns", c)
    _run("ip", "-n", r, "link", "add", "wan", "index", "13", *veth, f"r{i}", "index", f"{20 + i}", "netns", server)
    _run("ip", "-n", server, "link", "set", f"r{i}", "master", "br0")
    _run("ip", "-n", c, "addr", "add", f"{client_ip}/24", "dev", "eth0")
    _run("ip", "-n", r, "addr", "add", f"{lan_ip}/24", "dev", "lan")
    _run("ip", "-n", r, "addr", "add", f"{wan_ip}/24", "dev", "wan")
    for ns, dev in ((c, "eth0"), (r, "lan"), (r, "wan"), (server, f"r{i}")):
        _run("ip", "-n", ns, "link", "set", dev, "up")
    _run("ip", "-n", c, "route", "add", "default", "via", lan_ip)
    _run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    rules = _RULES.format(
        masquerade=masquerade,
        hairpin_dnat=f'iifname "lan" ip daddr {wan_ip} dnat to {client_ip}' if hairpin else "",
        hairpin_snat=f'oifname "lan" ip saddr {client_ip}/24 masquerade' if hairpin else "",
    )
    subprocess.run(["ip", "netns", "exec", r, "nft", "-f", "-"], input=rules.encode(), check=True, timeout=30)
    return Lan(c, r, client_ip, lan_ip, wan_ip)


def _wait_up(netns: str, dev: str, timeout: float = 5.0) -> None:
    """Wait until ``dev``'s operational state is UP: the kernel has taken the carrier change into account."""
    argv = ["ip", "-n", netns, "-o", "link", "show", "dev", dev]
    ok = wait_until(lambda: " state UP " in subprocess.run(argv, capture_output=True, text=True).stdout, timeout)
    assert ok, f"{dev} in {netns} is not UP after {timeout} s"


@contextlib.contextmanager
def _stun_server(kind: str | None, tmp: Path, server: str) -> Iterator[StunInfo | None]:
    if kind is None:
        yield None
    elif kind == "coturn":
        with contextlib.contextmanager(start_coturn)(tmp, SERVER_IPS, netns=server) as coturn:
            yield StunInfo("coturn", coturn.port, coturn.alt_port)
    elif kind == "natkit":
        listen = [f"--listen={ip}:{port}" for ip, port in zip(SERVER_IPS, NATKIT_STUN_PORTS, strict=True)]
        with natkit_service("stun-server", *listen, netns=server) as svc:
            assert "RFC 5780 mode" in svc.start_line, svc.start_line
            yield StunInfo("natkit", *NATKIT_STUN_PORTS)
    else:
        raise ValueError(f"unknown STUN server {kind!r}: coturn, natkit or None")


@contextlib.contextmanager
def nat_lab(
    tmp: Path,
    masquerade: str = "masquerade",
    *,
    hairpin: bool = False,
    udp_timeout: int | None = None,
    stun: str | None = "coturn",
    lans: int = 1,
) -> Iterator[NatLab]:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    tag = uuid.uuid4().hex[:8]
    s = f"natkit-t-{tag}-s"
    made: list[str] = []
    try:
        _run("ip", "netns", "add", s)
        made.append(s)
        _run("ip", "-n", s, "link", "set", "lo", "up")
        _run("ip", "-n", s, "link", "add", "br0", "type", "bridge")
        for ip in SERVER_IPS:
            _run("ip", "-n", s, "addr", "add", f"{ip}/24", "dev", "br0")
        _run("ip", "-n", s, "link", "set", "br0", "up")
        homes = tuple(_make_lan(i, tag, s, made, masquerade, hairpin) for i in range(lans))
        if udp_timeout is not None:  # conntrack is loaded now (the nat table needs it): the sysctl exists
            setting = f"net.netfilter.nf_conntrack_udp_timeout={udp_timeout}"
            for home in homes:
                _run("ip", "netns", "exec", home.router, "sysctl", "-qw", setting)
        for i, h in enumerate(homes):
            for ns, dev in ((h.client, "eth0"), (h.router, "lan"), (h.router, "wan"), (s, f"r{i}")):
                _wait_up(ns, dev)
        _wait_up(s, "br0")
        with _stun_server(stun, tmp, s) as info:
            yield NatLab(homes, s, info, tmp)
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def sysctl(netns: str | None, name: str) -> str:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run([*prefix, "sysctl", "-n", name], capture_output=True, text=True, check=True).stdout.strip()
