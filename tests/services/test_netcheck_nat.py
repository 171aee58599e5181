"""netcheck behind a real Linux NAT: MappingVariesByDestIP from kernel conntrack (root, network namespaces).

    client ns  10.0.1.2 --- 10.0.1.1 [router ns: nftables masquerade] 198.51.100.1 --- server ns
                                                                         198.51.100.2 (region 1, coturn)
                                                                         198.51.100.3 (region 2, coturn)

The router forwards LAN -> WAN, accepts only established/related traffic from the WAN and drops
unsolicited WAN input, as home routers do (design.md §5). ``masquerade`` keeps the client's port for every
destination (endpoint-independent mapping: MappingVariesByDestIP false); ``masquerade random`` and
``masquerade fully-random`` pick a new port per destination on this kernel (endpoint-dependent,
"hard" NAT: true). ``natkit netcheck`` runs as a process inside the client namespace.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.coturn import Coturn, start_coturn
from tests.support import ROOT, require_root, require_tool

WAN = "198.51.100.1"
SERVERS = ("198.51.100.2", "198.51.100.3")

ROUTER_RULES = """
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade MODE
  }
}
table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan0" ct state established,related accept
    iifname "wan0" drop
  }
}
"""


def sh(*argv: str, netns: str | None = None, stdin: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, *argv], check=True, input=stdin, text=True, capture_output=True)


@contextlib.contextmanager
def nat_lab(mode: str) -> Iterator[dict[str, str]]:
    """client, router and server namespaces wired as in the module docstring; removed also on failure."""
    tag = uuid.uuid4().hex[:6]
    names = {role: f"natkit-nc{role[0]}-{tag}" for role in ("client", "router", "server")}
    made: list[str] = []
    try:
        for ns in names.values():
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        c, r, s = names["client"], names["router"], names["server"]
        sh("ip", "link", "add", "eth0", "netns", c, "type", "veth", "peer", "name", "lan0", "netns", r)
        sh("ip", "link", "add", "wan0", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", s)
        for ns, dev, addrs in ((c, "eth0", ["10.0.1.2/24"]), (r, "lan0", ["10.0.1.1/24"]), (r, "wan0", [f"{WAN}/24"])):
            for addr in addrs:
                sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        for addr in SERVERS:
            sh("ip", "-n", s, "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "-n", s, "link", "set", "eth0", "up")
        sh("ip", "-n", c, "route", "add", "default", "via", "10.0.1.1")
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=r)
        sh("nft", "-f", "-", netns=r, stdin=ROUTER_RULES.replace("MODE", mode))
        yield names
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "delete", ns], check=False)


def derp_map(server: Coturn) -> str:
    regions = {
        str(i): {
            "RegionID": i,
            "RegionCode": f"s{i}",
            "RegionName": f"Server {i}",
            "Nodes": [{"Name": f"{i}a", "RegionID": i, "HostName": ip, "IPv4": ip, "IPv6": "none", "STUNPort": server.port}],
        }
        for i, ip in enumerate(SERVERS, start=1)
    }  # fmt: skip
    return json.dumps({"Regions": regions})


def netcheck_in(netns: str, map_file: Path) -> dict[str, object]:
    argv = ["ip", "netns", "exec", netns, sys.executable, "-m", "toolkit", "netcheck"]
    argv += ["--derp-map", str(map_file), "--format", "json"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize(("mode", "varies"), [("", False), ("random", True), ("fully-random", True)])
def test_mapping_varies_by_dest_ip_behind_kernel_nat(tmp_path: Path, mode: str, varies: bool) -> None:
    require_root()
    require_tool("nft", "nftables")
    require_tool("ip", "iproute2")
    with nat_lab(mode) as ns:
        with contextlib.contextmanager(start_coturn)(tmp_path, SERVERS, netns=ns["server"]) as server:
            map_file = tmp_path / "derpmap.json"
            map_file.write_text(derp_map(server))
            report = netcheck_in(ns["client"], map_file)
    assert report["UDP"] is True and report["IPv4"] is True
    assert report["MappingVariesByDestIP"] is varies
    assert str(report["GlobalV4"]).startswith(f"{WAN}:")  # the router's WAN address, not 10.0.1.2
    assert sorted(report["RegionV4Latency"]) == ["1", "2"]  # type: ignore[call-overload]
    counters = report["GlobalV4Counters"]
    assert isinstance(counters, dict) and len(counters) == (2 if varies else 1)
    assert all(key.startswith(f"{WAN}:") for key in counters)
