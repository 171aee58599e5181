"""natkit's services against each other across real kernel NAT (issue 4): separate processes in namespaces.

The lab is tests/services/natlab.py: one or two client namespaces, each behind its own router
namespace that masquerades with nftables and drops unsolicited WAN input, and a server namespace
with 203.0.113.10 and .11 on a bridge the routers' WAN ends plug into::

    c0 10.77.0.2 ─ r0 (NAT) 203.0.113.1 ─┐
                                         ├─ br0: 203.0.113.10/.11 — natkit stun-server, derp-server, control-server
    c1 10.78.0.2 ─ r1 (NAT) 203.0.113.2 ─┘

Every server is ``python -m toolkit *-server`` in the server namespace; every client is a process in
a client namespace: the ``natkit`` CLI, or the small JSON-lines programs tests/services/netns_*.py
built on natkit's client classes. (``natkit nat-type`` against ``natkit stun-server`` versus coturn is
tests/services/test_nat_type_netns.py, parametrized over both servers.)

* netcheck: the DERP map comes from ``natkit control-server --derp-map`` over HTTP through the NAT; its
  two regions are two ``natkit stun-server`` processes on the two server addresses. Plain masquerade
  keeps the mapping for every destination (MappingVariesByDestIP false); ``random``/``fully-random``
  give a new port per destination (true).
* DERP: two peers behind two NATs exchange packets through ``natkit derp-server``; the server is
  killed (SIGKILL: a crash) or stopped (SIGTERM: Restarting sent first) and started again with the
  same ``--key-file``; both peers reconnect by themselves to the same server key and exchange again.
* control: two nodes learn their mapped endpoint from ``natkit stun-server``, register from behind
  their NATs and see each other's endpoints (and later a changed one) in their netmap streams.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.services.natlab import SERVER_IPS, NatLab, lan_addresses, nat_lab
from tests.services.netns_proc import Event, NetnsProgram, netns_program
from tests.support import NatkitService
from toolkit.crypto.keys import generate_node_key, public_key

SERVER_A, SERVER_B = SERVER_IPS
WAN0, WAN1 = lan_addresses(0)[2], lan_addresses(1)[2]
LAN0, LAN1 = lan_addresses(0)[0], lan_addresses(1)[0]
AUTHKEY = "lab-key"
DERP_PEER = "tests.services.netns_derppeer"
CONTROL_NODE = "tests.services.netns_controlnode"


def tcp_peers(netns: str, port: int) -> set[str]:
    """The remote IPs of the established TCP connections to local ``port`` in ``netns`` (``ss``)."""
    argv = ["ip", "netns", "exec", netns, "ss", "-Htn", "state", "established", f"( sport = :{port} )"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout
    return {line.split()[-1].rsplit(":", 1)[0] for line in out.splitlines() if line.strip()}


def stop_line(service: NatkitService) -> str:
    return next(line for line in service.output().splitlines() if ": stopped after " in line)


# --- netcheck ----------------------------------------------------------------------------------------


def derp_map(port: int) -> str:
    """Two STUN-only regions, one per server address (tailcfg.DERPMap JSON)."""
    regions = {
        str(i): {
            "RegionID": i,
            "RegionCode": f"lab{i}",
            "RegionName": f"Lab {i}",
            "Nodes": [{"Name": f"{i}a", "RegionID": i, "HostName": ip, "IPv4": ip, "IPv6": "none",
                       "STUNPort": port, "STUNOnly": True}],
        }
        for i, ip in enumerate(SERVER_IPS, start=1)
    }  # fmt: skip
    return json.dumps({"Regions": regions})


@pytest.mark.parametrize(
    ("masquerade", "varies"),
    [("masquerade", False), ("masquerade random", True), ("masquerade fully-random", True)],
)
def test_netcheck_behind_nat_with_natkit_stun_regions_and_the_map_from_control(
    tmp_path: Path, masquerade: str, varies: bool
) -> None:
    map_file = tmp_path / "derpmap.json"
    map_file.write_text(derp_map(3478))
    with nat_lab(tmp_path, masquerade, stun=None) as lab, contextlib.ExitStack() as stack:
        stuns = [
            stack.enter_context(lab.service("stun-server", f"--listen={ip}:3478", "--no-tcp")) for ip in SERVER_IPS
        ]
        control = stack.enter_context(
            lab.service("control-server", f"--listen={SERVER_A}:8081", "--db", str(tmp_path / "control.db"),
                        "--authkey", AUTHKEY, "--derp-map", str(map_file))
        )  # fmt: skip
        url = f"http://{SERVER_A}:8081/derpmap"
        p = lab.natkit("netcheck", "--derp-map", url, "--format", "json", timeout=30)
        assert p.returncode == 0, p.stderr
        report: dict[str, Any] = json.loads(p.stdout)
        assert [s.stop() for s in (*stuns, control)] == [0, 0, 0]
    assert report["UDP"] is True and report["IPv4"] is True
    assert report["MappingVariesByDestIP"] is varies
    assert str(report["GlobalV4"]).startswith(f"{WAN0}:")  # the router's WAN address, not 10.77.0.2
    assert sorted(report["RegionV4Latency"]) == ["1", "2"]  # both natkit STUN servers answered in time
    counters = report["GlobalV4Counters"]
    assert len(counters) == (2 if varies else 1) and all(key.startswith(f"{WAN0}:") for key in counters)
    for stun in stuns:  # each region's server answered netcheck's probes itself
        answered = re.search(r"answered (\d+)", stop_line(stun))
        assert answered is not None and int(answered.group(1)) >= 1, stop_line(stun)
    assert re.search(r"[1-9]\d* requests answered", stop_line(control)), stop_line(control)


# --- DERP ----------------------------------------------------------------------------------------------


def server_key(service: NatkitService) -> str:
    match = re.search(r"nodekey:[0-9a-f]{64}", service.start_line)
    assert match is not None, service.start_line
    return match.group(0)


def is_event(kind: str, data: str | None = None) -> Callable[[Event], bool]:
    """Events of this kind (and with this ``data``, if given)."""
    return lambda e: e.get("event") == kind and (data is None or e.get("data") == data)


def exchange(a: NetnsProgram, b: NetnsProgram, a_pub: str, b_pub: str, tag: str) -> None:
    """One packet each way through the relay; each arrives with the sender's key as its source."""
    for src, dst, src_pub, dst_pub in ((a, b, a_pub, b_pub), (b, a, b_pub, a_pub)):
        data = f"{tag}: {src_pub[8:16]} -> {dst_pub[8:16]}"
        src.send(cmd="send", to=dst_pub, data=data)
        src.wait_for(is_event("sent", data), what=f"sent {data!r}")
        got = dst.wait_for(is_event("packet", data), what=f"packet {data!r}")
        assert got["src"] == src_pub


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_derp_between_two_nats_survives_a_server_restart_with_the_same_key(tmp_path: Path, how: str) -> None:
    key_file = tmp_path / "derp.key"
    keys = [generate_node_key(), generate_node_key()]
    a_pub, b_pub = (str(public_key(k)) for k in keys)
    url = f"http://{SERVER_A}:3340/derp"
    derp_args = ("derp-server", f"--listen={SERVER_A}:3340", "--key-file", str(key_file))
    with nat_lab(tmp_path, stun=None, lans=2) as lab, contextlib.ExitStack() as stack:
        first = stack.enter_context(lab.service(*derp_args))
        key = server_key(first)
        a, b = (
            stack.enter_context(netns_program(lan.client, DERP_PEER, url, k.text()))
            for lan, k in zip(lab.lans, keys, strict=True)
        )
        for peer in (a, b):
            assert peer.wait_for(is_event("Connected"), what="a connection")["server_key"] == key
        # the relay sees each peer as its router's WAN address: the NATs are really in the way
        assert tcp_peers(lab.server, 3340) == {WAN0, WAN1}
        exchange(a, b, a_pub, b_pub, "before the restart")

        if how == "SIGKILL":  # a crash: the kernel closes the server's sockets, nobody says goodbye
            first.proc.send_signal(signal.SIGKILL)
            assert first.stop() == -signal.SIGKILL
        else:  # a clean stop: Restarting(reconnect in 1 s, try for 30 s) first
            assert first.stop() == 0
            for peer in (a, b):
                hint = peer.wait_for(is_event("RestartingReceived"), what="Restarting")
                assert (hint["reconnect_in"], hint["try_for"]) == (1.0, 30.0)
        for peer in (a, b):
            peer.wait_for(is_event("Closed"), what="the connection to close")

        second = stack.enter_context(lab.service(*derp_args))
        assert server_key(second) == key  # the same identity, from --key-file
        for peer in (a, b):
            again = peer.wait_for(is_event("Connected"), timeout=15, what="a second connection", nth=2)
            assert again["server_key"] == key
        assert tcp_peers(lab.server, 3340) == {WAN0, WAN1}
        exchange(a, b, a_pub, b_pub, "after the restart")

        assert [a.close(), b.close()] == [0, 0]
        for peer in (a, b):
            counters = peer.wait_for(is_event("counters"))
            assert (counters["packets_sent"], counters["packets_received"]) == (2, 2)
            assert counters["reconnects"] == 1
        assert second.stop() == 0
    assert "relayed 2 packets" in stop_line(second), stop_line(second)


# --- control -------------------------------------------------------------------------------------------


def peer_named(event: Event, hostname: str) -> dict[str, Any] | None:
    if event.get("event") != "netmap":
        return None
    return next((p for p in event["netmap"]["Peers"] if p["Hostname"] == hostname), None)


def sees(hostname: str, endpoints: list[str]) -> Callable[[Event], bool]:
    """A netmap in which peer ``hostname`` is online with exactly these endpoints."""

    def match(event: Event) -> bool:
        peer = peer_named(event, hostname)
        return peer is not None and peer["Online"] and peer["Endpoints"] == endpoints

    return match


def registered(node: NetnsProgram, lan_ip: str, wan_ip: str) -> Event:
    """The node's registration; plain masquerade keeps the port, so mapped = WAN address, same port."""
    reg = node.wait_for(is_event("registered"), what="the registration")
    port = reg["local"].rsplit(":", 1)[1]
    assert (reg["local"], reg["mapped"]) == (f"{lan_ip}:{port}", f"{wan_ip}:{port}")
    assert reg["node"]["Endpoints"] == [reg["mapped"], reg["local"]]
    return reg


def test_two_nodes_behind_nats_see_each_other_in_their_netmap_streams(tmp_path: Path) -> None:
    with nat_lab(tmp_path, stun="natkit", lans=2) as lab, contextlib.ExitStack() as stack:
        control = stack.enter_context(
            lab.service(
                "control-server", f"--listen={SERVER_A}:8081", "--db", str(tmp_path / "c.db"), "--authkey", AUTHKEY
            )
        )
        url = f"http://{SERVER_A}:8081"

        def node(lab: NatLab, i: int, name: str) -> NetnsProgram:
            return stack.enter_context(netns_program(lab.lans[i].client, CONTROL_NODE, url, AUTHKEY, name, lab.stun))

        alpha = node(lab, 0, "alpha")
        first = alpha.wait_for(is_event("netmap"), what="a first netmap")
        assert first["netmap"]["Peers"] == [] and first["netmap"]["Self"]["Online"] is True
        beta = node(lab, 1, "beta")
        a_reg, b_reg = registered(alpha, LAN0, WAN0), registered(beta, LAN1, WAN1)

        b_view = beta.wait_for(sees("alpha", a_reg["node"]["Endpoints"]), what="alpha in beta's netmap")
        a_view = alpha.wait_for(sees("beta", b_reg["node"]["Endpoints"]), what="beta pushed to alpha's stream")
        assert a_view["netmap"]["Version"] > first["netmap"]["Version"]
        alpha_node, beta_node = peer_named(b_view, "alpha"), peer_named(a_view, "beta")
        assert alpha_node is not None and beta_node is not None
        assert alpha_node["NodeKey"] == a_reg["node"]["NodeKey"] and beta_node["NodeKey"] == b_reg["node"]["NodeKey"]
        assert set(alpha_node["Addresses"]).isdisjoint(beta_node["Addresses"])
        assert all(a.startswith("100.") for a in (alpha_node["Addresses"][0], beta_node["Addresses"][0]))
        # the control server sees both nodes' streams arrive from the routers' WAN addresses
        assert tcp_peers(lab.server, 8081) == {WAN0, WAN1}

        # beta moves to a new socket: a new mapping, pushed to alpha over its open stream
        beta.send(cmd="rebind")
        moved = beta.wait_for(is_event("updated"), what="the update")
        assert moved["mapped"] != b_reg["mapped"] and moved["mapped"].startswith(f"{WAN1}:")
        alpha.wait_for(sees("beta", [moved["mapped"], moved["local"]]), what="beta's new endpoints at alpha")
        assert [alpha.close(), beta.close()] == [0, 0]
        assert control.stop() == 0
    assert "2 new nodes" in stop_line(control), stop_line(control)
