"""NatBehavior -> nftables: what is expressible, rulesets the kernel accepts, conntrack parsing."""

from __future__ import annotations

import ipaddress
import subprocess

import pytest

from tests.lab.netns.netnslab import nat_lab, require_netns
from toolkit.errors import UsageError
from toolkit.lab.nat import PRESETS, Filtering, Mapping, NatBehavior, PortAllocation, WanInput, preset
from toolkit.lab.netns import conntrack, nftables, plumbing
from toolkit.types import Endpoint

EXPRESSIBLE = [
    "one2one", "easy", "easyaf", "hard", "full-cone", "restricted-cone", "port-restricted-cone", "symmetric",
    "udp-blocked", "broken-router",
]  # fmt: skip
INEXPRESSIBLE = {"symmetric-preserving": "port-preserving", "symmetric-sequential": "sequential port allocation"}


def test_every_preset_is_classified() -> None:
    assert sorted(EXPRESSIBLE + list(INEXPRESSIBLE)) == sorted(PRESETS)
    for name in EXPRESSIBLE:
        assert nftables.inexpressible(preset(name)) is None, name


@pytest.mark.parametrize("name", sorted(INEXPRESSIBLE))
def test_inexpressible_preset_names_preset_and_feature(name: str) -> None:
    with pytest.raises(UsageError) as info:
        nftables.check_expressible(preset(name))
    text = str(info.value)
    assert f"NAT preset {name!r} cannot run on the netns or docker backend" in text
    assert INEXPRESSIBLE[name] in text and "sim backend" in text


@pytest.mark.parametrize(
    ("mapping", "allocation", "feature"),
    [
        (Mapping.ADDRESS_DEPENDENT, PortAllocation.PRESERVE, "address-dependent mapping"),
        (Mapping.ADDRESS_DEPENDENT, PortAllocation.RANDOM, "address-dependent mapping"),
        (Mapping.ENDPOINT_INDEPENDENT, PortAllocation.RANDOM, "endpoint-independent mapping with a random port"),
        (Mapping.ENDPOINT_INDEPENDENT, PortAllocation.SEQUENTIAL, "sequential"),
    ],
)
def test_custom_inexpressible_combinations(mapping: Mapping, allocation: PortAllocation, feature: str) -> None:
    nat = NatBehavior("mine", mapping, Filtering.ADDRESS_AND_PORT_DEPENDENT, allocation)
    with pytest.raises(UsageError, match=f"NAT preset 'mine'.*{feature}"):
        nftables.ruleset(nftables.RouterRules(nat, ipaddress.IPv4Address("203.0.113.1"), ()))


def test_layout_refuses_before_creating_anything() -> None:
    topo = nat_lab("easy", "symmetric-sequential")
    with pytest.raises(UsageError, match="symmetric-sequential"):
        plumbing.layout(topo, "never")
    assert plumbing.existing_namespaces("never") == []


def _rules(nat: NatBehavior) -> str:
    return nftables.ruleset(nftables.rules_for(nat_lab(nat), nat_lab(nat).router("r1")))


def test_ruleset_shapes() -> None:
    easy = _rules(preset("easy"))
    assert 'oifname "wan" meta nfproto ipv4 masquerade\n' in easy and "policy drop" in easy
    assert "@mappings" not in easy and "@permits" not in easy  # conntrack alone filters by address and port
    assert "masquerade fully-random" in _rules(preset("hard"))
    assert "dnat ip to udp dport map @mappings" in _rules(preset("full-cone"))
    af = _rules(preset("easyaf"))
    assert "udp dport . ip saddr @permits dnat" in af and "update @permits { udp sport . ip daddr }" in af
    assert "policy accept" in _rules(preset("broken-router")).split("chain input")[1]
    assert 'iifname "lan" meta l4proto udp drop' in _rules(preset("udp-blocked"))
    one = _rules(preset("one2one"))
    assert "dnat ip to 192.168.1.10" in one and "snat ip to 203.0.113.1" in one
    hp = _rules(preset("easy").replace(hairpinning=True))
    assert 'iifname "lan" ip daddr 203.0.113.1' in hp and "ct status dnat snat ip to 203.0.113.1" in hp
    timed = _rules(preset("full-cone").replace(mapping_timeout=7.5))
    assert "timeout 7500ms" in timed
    assert nftables.conntrack_sysctls(preset("easy").replace(mapping_timeout=7.5)) == {
        "net.netfilter.nf_conntrack_udp_timeout": "8",
        "net.netfilter.nf_conntrack_udp_timeout_stream": "8",
    }


def test_plain_router_gets_no_rules() -> None:
    assert "chain" not in nftables.ruleset(nftables.RouterRules(None, ipaddress.IPv4Address("203.0.113.1"), ()))


VARIANTS = [
    *(preset(n) for n in EXPRESSIBLE),
    preset("easy").replace(hairpinning=True),
    preset("full-cone").replace(hairpinning=True),
    preset("hard").replace(hairpinning=True, filtering=Filtering.ENDPOINT_INDEPENDENT),
    preset("one2one").replace(hairpinning=True),
    preset("easyaf").replace(wan_input=WanInput.ACCEPT, block_udp=True),
]


def test_kernel_accepts_every_ruleset(netns: str) -> None:
    """``nft -c`` in a fresh namespace: the kernel validates each ruleset (dynamic maps, concatenations)."""
    require_netns()
    for nat in VARIANTS:
        text = _rules(nat)
        done = subprocess.run(["ip", "netns", "exec", netns, "nft", "-c", "-f", "-"], input=text.encode(),
                              capture_output=True, check=False)  # fmt: skip
        assert done.returncode == 0, f"{nat}: {done.stderr.decode()}\n{text}"


PROC_LINES = """\
ipv4     2 udp      17 29 src=10.0.0.2 dst=203.0.113.10 sport=40104 dport=3478 src=203.0.113.10 dst=203.0.113.1 sport=3478 dport=40104 mark=0 zone=0 use=2
ipv4     2 udp      17 25 src=10.0.0.2 dst=203.0.113.11 sport=40104 dport=3478 src=203.0.113.11 dst=203.0.113.1 sport=3478 dport=40104 [ASSURED] mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=203.0.113.11 dst=203.0.113.1 sport=3479 dport=41165 [UNREPLIED] src=10.0.0.2 dst=203.0.113.11 sport=41165 dport=3479 mark=0 zone=0 use=2
ipv4     2 udp      17 20 src=198.51.100.9 dst=203.0.113.1 sport=53 dport=5353 [UNREPLIED] src=203.0.113.1 dst=198.51.100.9 sport=5353 dport=53 mark=0 zone=0 use=2
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=198.51.100.20 sport=50000 dport=3340 src=198.51.100.20 dst=203.0.113.1 sport=3340 dport=61000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 icmp     1 29 src=10.0.0.2 dst=198.51.100.9 type=8 code=0 id=7 src=198.51.100.9 dst=203.0.113.1 type=0 code=0 id=7 mark=0 use=1
"""


def test_conntrack_parse_and_mappings() -> None:
    entries = conntrack.parse(PROC_LINES)
    assert [e.proto for e in entries] == ["udp", "udp", "udp", "udp", "tcp"]
    assert entries[2].flags == {"UNREPLIED"} and entries[1].timeout == 25
    assert not entries[3].natted  # unsolicited input to the router itself: no NAT
    ep = Endpoint.parse
    eim = conntrack.mappings(entries, per_destination=False)
    assert [str(m) for m in eim] == [
        "tcp 10.0.0.2:50000 = 203.0.113.1:61000 (431999s left)",
        "udp 10.0.0.2:40104 = 203.0.113.1:40104 (29s left)",  # two destinations, one mapping
        "udp 10.0.0.2:41165 = 203.0.113.1:41165 (29s left)",  # inbound through a full-cone DNAT
    ]
    apdm = conntrack.mappings(entries, per_destination=True)
    assert {m.remote for m in apdm if m.private == ep("10.0.0.2:40104")} == {
        ep("203.0.113.10:3478"),
        ep("203.0.113.11:3478"),
    }
    # `conntrack -L` prints the same without the two leading columns
    short = "\n".join(line.split(None, 2)[2] for line in PROC_LINES.splitlines())
    assert conntrack.parse(short) == entries
