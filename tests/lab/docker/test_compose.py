"""The compose rendering of a topology (toolkit/lab/docker/compose.py): golden file and structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from toolkit.errors import UsageError
from toolkit.lab.docker import compose
from toolkit.lab.netns import conntrack, nftables
from toolkit.lab.scenario import TopologyBuilder
from toolkit.lab.topology import Topology

GOLDEN = ROOT / "docker" / "examples" / "easy-easy.compose.yml"
REGEN = "python -m toolkit.lab.docker.compose labs/easy-easy.yaml > docker/examples/easy-easy.compose.yml"


def _easy_easy() -> compose.Project:
    topo = Topology.from_yaml(ROOT / "labs" / "easy-easy.yaml")
    return compose.plan(topo, "easy-easy", "natkit/node:latest", "natkit/router:latest")


def test_easy_easy_matches_the_golden_file() -> None:
    rendered = compose.render(_easy_easy())
    assert rendered == GOLDEN.read_text(), f"rendering changed; if on purpose, regenerate: {REGEN}"


def test_networks_do_not_masquerade_and_are_not_internal() -> None:
    doc = yaml.safe_load(compose.render(_easy_easy()))
    assert set(doc["networks"]) == {"internet", "home1", "home2"}
    for net in doc["networks"].values():
        assert net["driver_opts"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert net["internal"] is False  # design.md §5: internal networks drop routed traffic
        assert len(net["driver_opts"]["com.docker.network.bridge.name"]) <= 15
    assert doc["networks"]["home1"]["ipam"]["config"] == [{"subnet": "192.168.1.0/24", "gateway": "192.168.1.254"}]


def test_routers_carry_the_netns_rules_and_hosts_route_via_their_router() -> None:
    project = _easy_easy()
    topo = Topology.from_yaml(ROOT / "labs" / "easy-easy.yaml")
    r1 = project.container("r1")
    assert r1.environment["NATKIT_NFT"] == nftables.ruleset(nftables.rules_for(topo, topo.router("r1")))
    assert r1.sysctls["net.ipv4.ip_forward"] == "1"
    assert r1.environment["NATKIT_IFACES"].splitlines() == [
        "203.0.113.1 wan 203.0.113.1/24",
        "192.168.1.1 lan 192.168.1.1/24",
    ]
    alice = project.container("alice")
    assert "0.0.0.0/0 via 192.168.1.1 dev eth0" in alice.environment["NATKIT_ROUTES"].splitlines()
    assert "NATKIT_NFT" not in alice.environment
    # a public host: a placeholder Docker address in 203.0.113.0/24, replaced by its own two addresses
    stun = project.container("stun1")
    docker_ip, name, *cidrs = stun.environment["NATKIT_IFACES"].split()
    assert stun.networks == {"internet": docker_ip} and name == "eth0"
    assert cidrs == ["198.51.100.10/24", "198.51.100.11/24"]
    assert not any(r.startswith("0.0.0.0/0") for r in stun.environment["NATKIT_ROUTES"].splitlines())
    gateways = {n.segment: n.gateway for n in project.networks}
    used = [a for c in project.containers for a in c.networks.values()]
    assert len(used) == len(set(used)) and not set(gateways.values()) & set(used)


def test_a_preset_nftables_cannot_express_is_refused_by_name() -> None:
    t = TopologyBuilder("sym-pres")
    lan = t.lan("home1")
    t.nat_router("r1", lan=lan, nat="symmetric-preserving")
    t.host("alice", lan)
    with pytest.raises(UsageError, match="symmetric-preserving"):
        compose.plan(t.build(), "sym-pres", "n", "r")


def test_conntrack_tool_output_reads_as_the_netns_mappings() -> None:
    """docker reads ``conntrack -L`` in the router container with the netns parser: same NAT, same table."""
    text = (
        "udp      17 28 src=192.168.1.10 dst=198.51.100.10 sport=40000 dport=3478 "
        "src=198.51.100.10 dst=203.0.113.1 sport=3478 dport=1234 mark=0 use=1\n"
        "udp      17 25 src=192.168.1.10 dst=198.51.100.11 sport=40000 dport=3478 "
        "src=198.51.100.11 dst=203.0.113.1 sport=3478 dport=1234 mark=0 use=1\n"
        "udp      17 29 src=198.51.100.10 dst=203.0.113.1 sport=3478 dport=9 [UNREPLIED] "
        "src=203.0.113.1 dst=198.51.100.10 sport=9 dport=3478 mark=0 use=1\n"
        "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown.\n"
    )
    entries = conntrack.parse(text)
    (m,) = conntrack.mappings(entries, per_destination=False)  # endpoint-independent: one mapping
    assert (str(m.private), str(m.public), m.remote, m.expires_in) == (
        "192.168.1.10:40000",
        "203.0.113.1:1234",
        None,
        28.0,
    )
    per_dest = conntrack.mappings(entries, per_destination=True)
    assert [str(x.remote) for x in per_dest] == ["198.51.100.10:3478", "198.51.100.11:3478"]


def test_golden_file_is_valid_compose_for_docker_compose() -> None:
    doc = yaml.safe_load(Path(GOLDEN).read_text())
    assert doc["version"] == "2.4"
    for service in doc["services"].values():
        assert service["cap_add"] == ["NET_ADMIN"]
        assert all("ipv4_address" in v for v in service["networks"].values())
