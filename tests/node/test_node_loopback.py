"""``natkit node --no-tun`` without root: real STUN, DERP and control servers and two node processes on
127.0.0.1 (no NAT: the STUN-seen endpoint is the socket itself). The local API, the trace socket and
the parts that need no lab: interface addresses, the API's refusals, the trace sink's backlog."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, NatkitService, free_tcp_port, free_udp_port, natkit_service
from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.node.nodeaddrs import addresses_from_ip_json, local_endpoints, usable_address
from toolkit.node.nodeapi import request
from toolkit.node.nodetrace import follow_unix
from toolkit.sansio.tracejson import parse_line

AUTHKEY = "loopback-key"


def _natkit(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Servers and two nodes (alice: trace file, bob: trace socket); the API socket paths by name."""
    tmp = tmp_path_factory.mktemp("loopback")
    stun, derp, control = free_udp_port(), free_tcp_port(), free_tcp_port()
    region = DERPRegion(
        1,
        "lo",
        "loopback",
        (
            DERPNode("1a", 1, "lo", ipv4="127.0.0.1", ipv6="none", stun_port=-1, derp_port=derp, scheme="http"),
            DERPNode("1b", 1, "lo", ipv4="127.0.0.1", ipv6="none", stun_port=stun, stun_only=True),
        ),
    )
    (tmp / "derpmap.json").write_bytes(DERPMap(regions={1: region}).to_json())
    db, url = str(tmp / "control.db"), f"http://127.0.0.1:{control}"
    with (
        natkit_service("stun-server", "--listen", f"127.0.0.1:{stun}", "--no-tcp"),
        natkit_service("derp-server", "--listen", f"127.0.0.1:{derp}"),
        natkit_service("control-server", "--listen", f"127.0.0.1:{control}", "--db", db, "--authkey", AUTHKEY,
                       "--derp-map", str(tmp / "derpmap.json")),
    ):  # fmt: skip
        apis = {name: tmp / f"{name}.sock" for name in ("alice", "bob")}
        traces = {"alice": str(tmp / "alice.jsonl"), "bob": f"unix:{tmp / 'bob-trace.sock'}"}
        started: list[NatkitService] = []
        try:
            for name in ("alice", "bob"):
                args = ["node", "--no-tun", "--name", name, "--control", url, "--authkey", AUTHKEY, "--port", "0"]
                args += ["--api", str(apis[name]), "--state-dir", str(tmp / name), "--trace", traces[name]]
                started.append(NatkitService(args, None, 30))
            yield {**apis, "bob-trace": tmp / "bob-trace.sock", "alice-trace": tmp / "alice.jsonl"}
        finally:
            for service in started:
                service.stop()


def test_ping_over_loopback_and_status(nodes: dict[str, Path]) -> None:
    result = _natkit("ping", "bob", "--count", "20", "--api", str(nodes["alice"]))
    assert result.returncode == 0, result.stdout + result.stderr
    last = result.stdout.splitlines()[-1]
    bob_self = json.loads(_natkit("status", "--json", "--api", str(nodes["bob"])).stdout)["self"]
    assert last.startswith("pong from bob (100.64.0.") and " via DERP" not in last, result.stdout
    via = last.split(" via ")[1].split(" in ")[0]
    assert via in bob_self["endpoints"], f"the direct pong comes from one of bob's endpoints {bob_self}"
    status = json.loads(_natkit("status", "--json", "--api", str(nodes["alice"])).stdout)
    (bob,) = status["peers"]
    assert bob["name"] == "bob" and bob["endpoint"] in bob_self["endpoints"]
    text = _natkit("status", "--api", str(nodes["alice"])).stdout
    assert text.splitlines()[0].split()[1] == "alice" and " bob " in text


def test_api_answers_and_refusals(nodes: dict[str, Path]) -> None:
    (status,) = list(request(nodes["bob"], {"op": "status"}))
    assert status["self"]["name"] == "bob"
    (refused,) = list(request(nodes["bob"], {"op": "explode"}))
    assert refused["usage"] is True and "unknown op" in refused["error"]
    (refused,) = list(request(nodes["bob"], {"op": "ping", "peer": "alice", "count": 0}))
    assert "'count'" in refused["error"]
    with socket.socket(socket.AF_UNIX) as raw:  # garbage, then a good request on the same connection
        raw.connect(str(nodes["bob"]))
        raw.sendall(b"not json\n" + json.dumps({"op": "status"}).encode() + b"\n")
        answers = raw.makefile("rb")
        bad, good = json.loads(answers.readline()), json.loads(answers.readline())
    assert bad["usage"] is True and "one JSON object per line" in bad["error"]
    assert good["self"]["name"] == "bob"


def test_ping_without_until_direct_sends_count(nodes: dict[str, Path]) -> None:
    answers = list(request(nodes["bob"], {"op": "ping", "peer": "alice", "count": 2, "until_direct": False,
                                          "interval": 0.1}))  # fmt: skip
    assert [a.get("done") for a in answers][-1] is True and len(answers) == 3, answers
    assert answers[-1]["pongs"] == 2


def test_trace_socket_replays_the_backlog_then_streams(nodes: dict[str, Path]) -> None:
    async def first(n: int) -> list[object]:
        out = []
        async for record in follow_unix(nodes["bob-trace"]):
            out.append(record)
            if len(out) == n:
                break
        return out

    records = asyncio.run(asyncio.wait_for(first(5), 10))
    assert len(records) == 5 and all(getattr(r, "node", "").startswith("bob") for r in records)
    lines = nodes["alice-trace"].read_text().splitlines()
    assert lines and all(parse_line(line).node.startswith("alice") for line in lines)


def test_trace_target_in_use_is_a_usage_error(nodes: dict[str, Path], tmp_path: Path) -> None:
    result = _natkit("node", "--no-tun", "--name", "carol", "--control", "http://127.0.0.1:1", "--authkey", "k",
                     "--trace", f"unix:{nodes['bob-trace']}", "--api", str(tmp_path / "c.sock"),
                     "--state-dir", str(tmp_path / "c"), "--port", "0")  # fmt: skip
    assert result.returncode == 2 and "another process listens there" in result.stderr, result.stderr


IP_JSON = [
    {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [{"family": "inet", "local": "127.0.0.1"}]},
    {
        "ifname": "eth0",
        "flags": ["BROADCAST", "UP", "LOWER_UP"],
        "addr_info": [
            {"family": "inet", "local": "192.168.1.10"},
            {"family": "inet", "local": "169.254.3.4"},
            {"family": "inet6", "local": "2001:db8::10"},
            {"family": "inet6", "local": "fd00::2"},
            {"family": "inet6", "local": "fe80::1"},
            {"family": "inet6", "local": "2001:db8::99", "tentative": True},
            {"family": "inet6", "local": "fd7a:115c:a1e0::5"},
        ],
    },
    {"ifname": "natkit0", "flags": ["UP"], "addr_info": [{"family": "inet", "local": "100.64.0.1"}]},
    {"ifname": "eth1", "flags": ["BROADCAST"], "addr_info": [{"family": "inet", "local": "10.0.0.1"}]},
]


def test_interface_addresses_keep_what_peers_can_reach() -> None:
    ips = addresses_from_ip_json(IP_JSON, exclude_links=["natkit0"])
    assert [str(ip) for ip in ips] == ["2001:db8::10", "fd00::2", "192.168.1.10"]
    eps = local_endpoints(41641, addresses=ips, ipv6=False)
    assert [str(e) for e in eps] == ["192.168.1.10:41641"]
    assert not usable_address(ipaddress.ip_address("fe80::1")) and usable_address(ipaddress.ip_address("203.0.113.7"))


def test_local_endpoints_of_this_namespace_have_the_port() -> None:
    eps = local_endpoints(1234)
    assert all(e.port == 1234 and not e.ip.is_loopback for e in eps)
