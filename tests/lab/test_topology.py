"""toolkit.lab.topology / scenario / validate / addressing / labservices: the addressing plan, routes,
validation errors naming the element, exact dict and YAML round trips, and the Lab value types."""

from __future__ import annotations

import asyncio
import copy
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derpmap import DERPMap
from toolkit.codec.pcapio import LINKTYPE_RAW, read_records
from toolkit.errors import NatkitError, UsageError
from toolkit.lab import labservices
from toolkit.lab.backend import Capture, ElementStatus, LabStatus, NatMapping, Packet, RunResult, pcap_bytes
from toolkit.lab.nat import PRESETS, Mapping, NatBehavior, preset
from toolkit.lab.scenario import nat_from, nat_to
from toolkit.lab.topology import Route, ServiceSpec, Topology, TopologyBuilder
from toolkit.types import Endpoint


def _example() -> Topology:
    """cgnat + plain router + hard NAT, with v6 on two hosts: exercises every routing rule."""
    t = TopologyBuilder("example", "every rule", expect="direct")
    home1, isp, home2, corp = t.lan("home1"), t.carrier("isp"), t.lan("home2"), t.lan("corp")
    t.nat_router("cg", lan=isp)
    t.nat_router("r1", lan=home1, wan=isp, nat={"preset": "easy", "mapping_timeout": 30})
    t.nat_router("r2", lan=home2, nat="hard")
    t.router("p1", lan=corp)
    t.node("alice", home1, v6=True)
    t.node("bob", home2)
    t.host("stun1", t.internet, extra_v4=1, services=["stun-server"])
    t.host("derp1", services=["derp-server"])
    t.host("srv", corp, v6=True)
    return t.build()


def _routes(topo: Topology, name: str) -> list[str]:
    return [str(r) for r in topo.routes(name)]


def test_builder_follows_the_addressing_plan() -> None:
    topo = _example()
    assert [(s.name, s.kind.value, s.index) for s in topo.segments] == [
        ("internet", "internet", 0), ("home1", "lan", 1), ("isp", "carrier", 1), ("home2", "lan", 2), ("corp", "lan", 3),
    ]  # fmt: skip
    assert [(r.name, str(r.wan_v4), str(r.lan_v4)) for r in topo.routers] == [
        ("cg", "203.0.113.1", "100.64.1.1"),
        ("r1", "100.64.1.10", "192.168.1.1"),
        ("r2", "203.0.113.2", "192.168.2.1"),
        ("p1", "203.0.113.3", "192.168.3.1"),
    ]
    stun1 = topo.host("stun1")
    assert (stun1.v4, stun1.extra_v4) == (IPv4Address("198.51.100.10"), (IPv4Address("198.51.100.11"),))
    assert topo.host("derp1").v4 == IPv4Address("198.51.100.12")
    assert topo.host("alice").v6 == IPv6Address("2001:db8:1::10")
    assert topo.host("bob").v6 is None
    assert topo.segment("isp").v6 == IPv6Network("2001:db8:100:1::/64")
    assert [h.name for h in topo.public_hosts()] == ["stun1", "derp1"]
    assert [h.name for h in topo.lan_hosts()] == ["alice", "bob", "srv"]
    assert [h.name for h in topo.nodes()] == ["alice", "bob"]
    assert [r.name for r in topo.path_to_internet("alice")] == ["r1", "cg"]
    assert topo.path_to_internet("stun1") == ()
    assert topo.router_for("isp") == topo.router("cg") and topo.router_for("internet") is None


def test_interfaces_and_routes() -> None:
    topo = _example()
    (eth0,) = topo.interfaces("alice")
    assert (eth0.name, eth0.cidr, str(eth0.gateway), str(eth0.gateway6)) == (
        "eth0", "192.168.1.10/24", "192.168.1.1", "2001:db8:1::1",
    )  # fmt: skip
    wan, lan = topo.interfaces("r1")
    assert (wan.name, wan.cidr, str(wan.gateway), str(wan.v6)) == (
        "wan",
        "100.64.1.10/24",
        "100.64.1.1",
        "2001:db8:100:1::10",
    )
    assert (lan.name, lan.cidr, lan.gateway) == ("lan", "192.168.1.1/24", None)
    assert topo.interface("stun1", "eth0").extra_v4 == (IPv4Address("198.51.100.11"),)
    assert _routes(topo, "alice") == ["0.0.0.0/0 via 192.168.1.1 dev eth0", "::/0 via 2001:db8:1::1 dev eth0"]
    assert _routes(topo, "bob") == ["0.0.0.0/0 via 192.168.2.1 dev eth0"]  # no v6 address: no v6 route
    # an internet host: the other internet prefix on-link, the plain router's LAN routed, NATed LANs not
    assert _routes(topo, "stun1") == ["203.0.113.0/24 dev eth0", "192.168.3.0/24 via 203.0.113.3 dev eth0"]
    assert _routes(topo, "r1") == ["0.0.0.0/0 via 100.64.1.1 dev wan", "::/0 via 2001:db8:100:1::1 dev wan"]
    assert _routes(topo, "cg") == [
        "198.51.100.0/24 dev wan",
        "2001:db8:2::/64 via 2001:db8::113:2 dev wan",
        "192.168.3.0/24 via 203.0.113.3 dev wan",
        "2001:db8:3::/64 via 2001:db8::113:3 dev wan",
        "2001:db8:1::/64 via 2001:db8:100:1::10 dev lan",  # v6 is routed through the NAT chain
    ]
    assert topo.routes("p1")[0] == Route(IPv4Network("198.51.100.0/24"), None, "wan")


def test_v4_only_lab_has_no_v6_on_routers() -> None:
    t = TopologyBuilder("v4")
    t.nat_router("r1", lan=t.lan("home1"))
    t.host("alice", "home1")
    topo = t.build()
    assert not topo.uses_ipv6
    assert all(i.v6 is None and i.gateway6 is None for i in topo.interfaces("r1"))
    assert _routes(topo, "r1") == ["198.51.100.0/24 dev wan"]


def test_explicit_addresses_and_indexes_are_kept_and_skipped() -> None:
    t = TopologyBuilder("explicit")
    t.lan("a", index=2)
    t.lan("b")  # the first free index: 1
    t.lan("c")  # 3
    t.router("ra", lan="a", wan_v4="203.0.113.1")
    t.router("rb", lan="b")
    t.router("rc", lan="c")
    t.host("h1", "a", v4="192.168.2.10")
    t.host("h2", "a")
    t.host("pub", v4="198.51.100.10", v6="2001:db8::abc")
    t.host("pub2")
    topo = t.build()
    assert [s.index for s in topo.segments[1:]] == [2, 1, 3]
    assert [str(r.wan_v4) for r in topo.routers] == ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
    assert [str(h.v4) for h in topo.hosts] == ["192.168.2.10", "192.168.2.11", "198.51.100.10", "198.51.100.11"]
    assert topo.host("pub").v6 == IPv6Address("2001:db8::abc")


def test_round_trip_is_exact() -> None:
    topo = _example()
    d = topo.to_dict()
    again = Topology.from_dict(copy.deepcopy(d))
    assert again == topo and again.to_dict() == d
    text = topo.to_yaml()
    assert Topology.from_yaml(text) == topo and Topology.from_yaml(text).to_yaml() == text
    assert d["routers"][1]["nat"] == {"preset": "easy", "mapping_timeout": 30}
    assert d["routers"][3]["nat"] is None


@pytest.mark.parametrize(
    "nat",
    [
        None,
        preset("hard"),
        preset("easy").replace(hairpinning=True, mapping_timeout=45.0),
        preset("easy").replace(description="mine"),
        NatBehavior("custom", Mapping.ADDRESS_DEPENDENT, allocation="sequential"),  # type: ignore[arg-type]
        NatBehavior("odd", description="a custom NAT with a description"),
    ],
)
def test_nat_forms_round_trip(nat: NatBehavior | None) -> None:
    assert nat_from(nat_to(nat), "t") == nat


def test_nat_forms() -> None:
    assert nat_to(preset("easy")) == "easy"
    assert nat_from("none", "t") is None
    with pytest.raises(UsageError, match="router 'x': unknown NAT preset 'nope'"):
        nat_from("nope", "router 'x'")
    with pytest.raises(UsageError, match="router 'x': NAT: unknown field"):
        nat_from({"preset": "easy", "colour": "red"}, "router 'x'")


def _base() -> dict[str, Any]:
    return {
        "name": "t",
        "segments": [{"name": "home1", "kind": "lan"}],
        "routers": [{"name": "r1", "lan": "home1", "nat": "easy"}],
        "hosts": [{"name": "alice", "segment": "home1"}, {"name": "stun1", "extra_v4": 1, "services": ["stun-server"]}],
    }


def _set(path: str, value: Any) -> Any:
    def change(d: dict[str, Any]) -> None:
        *keys, last = path.split(".")
        target: Any = d
        for k in keys:
            target = target[int(k)] if k.isdigit() else target[k]
        target[int(last) if last.isdigit() else last] = value

    return change


def _add(section: str, entry: Any) -> Any:
    return lambda d: d.setdefault(section, []).append(entry)


INVALID = [
    (_set("routers.0.lan", "home9"), "router 'r1': LAN segment 'home9' does not exist"),
    (_set("routers.0.wan", "nowhere"), "router 'r1': WAN segment 'nowhere' does not exist"),
    (_set("routers.0.lan", "internet"), "router 'r1': its LAN segment cannot be the internet"),
    (_set("routers.0.nat", "nope"), "router 'r1': unknown NAT preset 'nope'"),
    (_set("routers.0.lan_v4", "192.168.1.2"), r"router 'r1': LAN address must be 192.168.1.1"),
    (_set("routers.0.wan_v4", "192.168.1.77"), r"router 'r1': address 192.168.1.77 is not in segment 'internet'"),
    (_add("routers", {"name": "r2", "lan": "home1"}), "router 'r2': segment 'home1' already has router 'r1'"),
    (_add("segments", "home2"), "segment 'home2' has no router"),
    (_set("hosts.0.segment", "home7"), "host 'alice': segment 'home7' does not exist"),
    (_set("hosts.0.v4", "10.0.0.1"), r"host 'alice': address 10.0.0.1 is not in segment 'home1' \(192.168.1.0/24\)"),
    (_set("hosts.0.v4", "192.168.1.1"), r"host 'alice': address 192.168.1.1 is already router 'r1''s"),
    (_set("hosts.0.v4", "192.168.1.255"), "is not in segment 'home1'"),
    (_set("hosts.0.v6", "2001:db8:9::1"), "host 'alice': IPv6 address 2001:db8:9::1 is not in segment 'home1'"),
    (_set("hosts.0.v6", "2001:db8:1::1"), r"host 'alice': IPv6 address 2001:db8:1::1 is already router 'r1''s"),
    (_set("hosts.0.v4", "not-an-ip"), "host 'alice': 'not-an-ip' is not an IPv4 address"),
    (_set("hosts.1.services", ["dns-server"]), "service 'dns-server' is not one of"),
    (_set("hosts.1.services", ["stun-server", "stun-server"]), "host 'stun1': a service is listed twice"),
    (_set("hosts.0.name", "r1"), "router 'r1': the name is already used by a host"),
    (_set("hosts.0.name", "Alice"), "host 'Alice': a name is 1-15 lowercase"),
    (_set("hosts.0.name", "a-very-long-hostname"), "a name is 1-15"),
    (_set("hosts.0.colour", "red"), "host: unknown key.*colour"),
    (_set("extra", 1), "lab: unknown key.*extra"),
    (_set("name", "Bad Name"), "lab name 'Bad Name'"),
    (_set("expect", "maybe"), "expect 'maybe' is not one of direct, local, relayed"),
    (_set("segments.0.kind", "wan"), "segment 'home1': kind 'wan' is not lan, carrier or internet"),
    (_set("segments.0.index", 300), "segment 'home1': index 300 is not in 1..255"),
    (_set("segments.0.loss", 1.5), r"segment 'home1': loss 1.5 must be in \[0, 1\)"),
    (_set("segments.0.latency", -1), "segment 'home1': latency -1.0 must be >= 0"),
    (
        lambda d: d["segments"].extend([{"name": "home2", "kind": "lan", "index": 1}, {"name": "home3", "index": 1}]),
        "segment 'home3': lan index 1 is already 'home2''s",
    ),
    (_add("segments", {"name": "internet", "kind": "lan"}), "segment 'internet' is the internet"),
    (_add("segments", "home1"), "segment 'home1': defined twice"),
    (_set("hosts", {"alice": 1}), "hosts must be a list"),
    (_set("routers.0", {"lan": "home1"}), "router: every entry needs a name"),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_invalid_topologies_name_the_element(change: Any, message: str) -> None:
    d = _base()
    change(d)
    with pytest.raises(UsageError, match=message):
        Topology.from_dict(d)


def test_router_loop_is_rejected() -> None:
    d = _base()
    d["segments"] += ["a", "b"]
    d["routers"] += [{"name": "ra", "wan": "b", "lan": "a"}, {"name": "rb", "wan": "a", "lan": "b"}]
    with pytest.raises(UsageError, match="router 'ra': WAN segment 'b' loops and never reaches the internet"):
        Topology.from_dict(d)


def test_lookups_list_what_exists() -> None:
    topo = _example()
    with pytest.raises(UsageError, match="has no host 'carol'; hosts: alice, bob"):
        topo.host("carol")
    with pytest.raises(UsageError, match="has no router 'alice'"):
        topo.router("alice")
    with pytest.raises(UsageError, match="'r1' has no interface 'eth0'; interfaces: wan, lan"):
        topo.interface("r1", "eth0")
    assert topo.element("r1") is topo.router("r1")


def test_yaml_errors_are_one_line_with_the_file(tmp_path: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nhosts: [\n")
    with pytest.raises(UsageError, match=r"bad.yaml:\d+: not valid YAML"):
        Topology.from_yaml(bad)
    with pytest.raises(UsageError, match="cannot read lab file"):
        Topology.from_yaml(str(tmp_path / "missing.yaml"))
    with pytest.raises(UsageError, match="lab: expected a mapping"):
        Topology.from_yaml("- just\n- a list\n")


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    """Random trees of LANs and carriers under NAT or plain routers, with hosts anywhere."""
    t = TopologyBuilder(draw(st.sampled_from(["rand", "x-1", "lab"])))
    segments = ["internet"]
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["lan", "carrier"]))
        name = t.segment(
            f"s{i}", kind, latency=draw(st.sampled_from([0.0, 0.005])), loss=draw(st.sampled_from([0.0, 0.1]))
        )
        nat = draw(st.one_of(st.none(), st.sampled_from(sorted(PRESETS))))
        t.router(f"r{i}", lan=name, wan=draw(st.sampled_from(segments)), nat=nat)
        segments.append(name)
    for i in range(draw(st.integers(0, 6))):
        services = draw(st.lists(st.sampled_from(["stun-server", "derp-server", "control-server"]), unique=True))
        t.host(f"h{i}", draw(st.sampled_from(segments)), v6=draw(st.booleans()), extra_v4=draw(st.integers(0, 2)),
               services=services, node=draw(st.booleans()))  # fmt: skip
    return t.build()


@settings(max_examples=150)
@given(topologies())
def test_random_topologies_round_trip_and_route(topo: Topology) -> None:
    assert Topology.from_yaml(topo.to_yaml()) == topo
    assert Topology.from_dict(topo.to_dict()).to_dict() == topo.to_dict()
    for name in [h.name for h in topo.hosts] + [r.name for r in topo.routers]:
        routes = topo.routes(name)
        ifaces = {i.name for i in topo.interfaces(name)}
        assert {r.interface for r in routes} <= ifaces
        defaults = [r for r in routes if r.prefix.prefixlen == 0 and r.prefix.version == 4]
        assert len(defaults) == (0 if len(topo.path_to_internet(name)) == 0 else 1)


# --- services and the DERP map ----------------------------------------------------------------------


def test_service_defaults_and_derp_map() -> None:
    topo = _example()
    stun1, derp1 = topo.host("stun1"), topo.host("derp1")
    assert labservices.service_argv(stun1, stun1.services[0]) == [
        "stun-server", "--listen", "198.51.100.10:3478", "--listen", "198.51.100.11:3479",
    ]  # fmt: skip
    assert labservices.service_argv(derp1, derp1.services[0]) == ["derp-server", "--listen", "198.51.100.12:3340"]
    custom = ServiceSpec("control-server", ("--listen", "198.51.100.12:80"))
    assert labservices.service_args(derp1, custom) == ("--listen", "198.51.100.12:80")
    assert labservices.listen_port(derp1, custom) == 80
    dm = labservices.derp_map(topo)
    assert DERPMap.from_json(dm.to_json()) == dm
    (region,) = dm.regions.values()
    relay, stun = region.nodes
    assert (relay.host_name, relay.dial_host(), relay.dial_port, relay.scheme, relay.stun_enabled) == (
        "derp1", "198.51.100.12", 3340, "http", False,
    )  # fmt: skip
    assert stun.stun_only and stun.stun_endpoints() == [Endpoint.parse("198.51.100.10:3478")]
    assert labservices.control_url(topo) is None


# --- backend value types -----------------------------------------------------------------------------


def test_capture_iterates_live_and_writes_pcap(tmp_path: Any) -> None:
    capture = Capture("alice", "eth0")
    packet = bytes.fromhex("4500001c0000000040110000c0a8010ac633640a") + b"\x00" * 8

    async def main() -> list[Packet]:
        async def produce() -> None:
            capture.feed(0.5, packet)
            await asyncio.sleep(0)
            capture.feed(1.25, packet[:20])
            capture.close()
            capture.feed(2.0, b"ignored after close")

        task = asyncio.create_task(produce())
        got = [p async for p in capture]
        await task
        return got

    got = asyncio.run(main())
    assert got == [Packet(0.5, packet), Packet(1.25, packet[:20])] == capture.packets
    path = tmp_path / "c.pcap"
    assert capture.write_pcap(path) == 2
    records = list(read_records(path))
    assert [(r.ts, r.linktype, r.data) for r in records] == [
        (0.5, LINKTYPE_RAW, packet),
        (1.25, LINKTYPE_RAW, packet[:20]),
    ]
    assert path.read_bytes() == pcap_bytes(got)


def test_value_types_format() -> None:
    assert RunResult(0, "ok\n", "").check().ok
    with pytest.raises(NatkitError, match="ping failed with exit status 1: unreachable"):
        RunResult(1, "", "x\nunreachable\n").check("ping")
    m = NatMapping("udp", Endpoint.parse("192.168.1.10:41641"), Endpoint.parse("203.0.113.1:41641"), None, 29.6)
    assert str(m) == "udp 192.168.1.10:41641 = 203.0.113.1:41641 (30s left)"
    status = LabStatus("easy", "sim", True, (ElementStatus("alice", "host", True, ("192.168.1.10/24 eth0",)),))
    assert status.format().splitlines()[0] == "lab easy (sim): up"
    assert "alice" in status.format() and "192.168.1.10/24 eth0" in status.format()
