"""`natkit nat-type` through a real kernel NAT (nftables in a router namespace, tests/services/natlab.py).

What Linux does, measured here and asserted:

* ``masquerade``: endpoint-independent mapping that keeps the source port (the mapped port is the
  local port), and address-and-port-dependent filtering, because conntrack only lets in replies
  to the exact 5-tuple that went out (design.md §5). RFC 3489 called it a port-restricted cone.
* ``masquerade random`` / ``fully-random``: each new conntrack entry, that is each new destination
  IP *or port*, gets its own random source port, so the mapping is address-and-port-dependent
  (mapping tests II and III both see a new port): Tailscale's "hard" NAT.
* Hairpinning only with explicit rules (DNAT the router's own WAN address back to the client);
  plain masquerade sends the request to the router itself, where nothing listens.
* The mapping lifetime of a UDP binding that saw one answer is the router namespace's
  ``nf_conntrack_udp_timeout``; the measured bracket contains it.

Every test runs twice, against coturn and against natkit's own ``natkit stun-server`` in RFC 5780
mode (a separate process in the server namespace): both servers must lead to the same verdicts, and
the report's SOFTWARE shows which server answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.natlab import CLIENT, ROUTER_WAN, SERVER_IPS, NatLab, nat_lab, sysctl


@pytest.fixture(params=["coturn", "natkit"])
def server(request: pytest.FixtureRequest) -> str:
    """Which RFC 5780 STUN server runs in the server namespace."""
    kind: str = request.param
    return kind


@pytest.fixture
def masquerade(tmp_path: Path, server: str) -> Iterator[NatLab]:
    with nat_lab(tmp_path, stun=server) as lab:
        yield lab


def test_masquerade_is_endpoint_independent_with_port_restricted_filtering(masquerade: NatLab) -> None:
    r = masquerade.nat_type()
    assert r["behind_nat"] is True
    assert (r["mapping"], r["filtering"]) == ("endpoint-independent", "address-and-port-dependent")
    assert r["classic_name"] == "port-restricted-cone NAT" and r["tailscale"] == "easy"
    local, mapped = r["local"], r["mapped"]
    assert local.startswith(f"{CLIENT}:") and mapped == f"{ROUTER_WAN}:{local.split(':')[1]}"  # port kept
    _, t2, f2, f3 = r["tests"]
    assert masquerade.stun_server is not None
    assert t2["sent_to"] == f"{SERVER_IPS[1]}:{masquerade.stun_server.port}" and t2["mapped"] == mapped
    assert (f2["outcome"], f3["outcome"]) == ("no answer", "no answer")
    assert f2["socket"] == "filtering" and f2["local"] != local


def test_masquerade_text_report(masquerade: NatLab) -> None:
    p = masquerade.natkit("nat-type", masquerade.stun, "--rto", "0.05", "--rc", "3", "--rm", "4")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert masquerade.stun_server is not None
    first = out.splitlines()[0]  # "... with STUN server 203.0.113.10:P (SOFTWARE)"
    assert first.startswith(f"NAT behaviour discovery (RFC 5780) with STUN server {masquerade.stun}")
    masquerade.stun_server.check_software(first.rsplit("(", 1)[1])
    assert "verdict: behind a NAT: mapping endpoint-independent, filtering address-and-port-dependent" in out
    assert "Tailscale calls this an easy NAT" in out and "port-restricted-cone NAT" in out
    assert f"mapped address   {ROUTER_WAN}:" in out
    assert out.count("-> no answer after 3 requests") == 2
    assert "nothing came from" in out and "the filter looks at address and port" in out


@pytest.mark.parametrize("flavour", ["masquerade random", "masquerade fully-random"])
def test_random_ports_make_a_symmetric_nat(tmp_path: Path, server: str, flavour: str) -> None:
    with nat_lab(tmp_path, flavour, stun=server) as lab:
        r = lab.nat_type()
    assert r["behind_nat"] is True
    assert (r["mapping"], r["filtering"]) == ("address-and-port-dependent", "address-and-port-dependent")
    assert r["classic_name"] == "symmetric NAT" and r["tailscale"] == "hard"
    mapped = [t["mapped"] for t in r["tests"][:3]]
    assert [t["test"] for t in r["tests"][:3]] == ["mapping test I", "mapping test II", "mapping test III"]
    assert len(set(mapped)) == 3 and all(m.startswith(f"{ROUTER_WAN}:") for m in mapped)


@pytest.mark.parametrize("hairpin_rule", [False, True])
def test_hairpinning_needs_a_rule(tmp_path: Path, server: str, hairpin_rule: bool) -> None:
    with nat_lab(tmp_path, hairpin=hairpin_rule, stun=server) as lab:
        r = lab.nat_type("--hairpin")
    assert r["hairpinning"] is hairpin_rule
    hp = r["tests"][-1]
    assert hp["test"] == "hairpinning" and hp["sent_to"] == r["mapped"] and hp["socket"] == "hairpin"
    if hairpin_rule:  # it came back to socket "mapping", masqueraded to the router's LAN address
        assert hp["received_on"] == "mapping" and hp["source"].startswith("10.77.0.1:")
    else:
        assert hp["outcome"] == "no answer"


def test_lifetime_brackets_the_conntrack_udp_timeout(tmp_path: Path, server: str) -> None:
    with nat_lab(tmp_path, udp_timeout=3, stun=server) as lab:
        assert sysctl(lab.router, "net.netfilter.nf_conntrack_udp_timeout") == "3"
        assert sysctl(None, "net.netfilter.nf_conntrack_udp_timeout") != "3"  # per namespace
        r = lab.nat_type("--lifetime", "--max-lifetime", "6")
    low, high = r["lifetime"]["min_s"], r["lifetime"]["max_s"]
    assert low is not None and high is not None
    # the NAT forgets a binding 3 s after its last packet; the probe's answer reaches it ~1 RTT later
    assert low <= 3.0 + 0.1 and high >= 3.0 - 0.1 and high - low < 1.0
    probes = [t for t in r["tests"] if t["test"].startswith("lifetime probe")]
    assert any(t["outcome"] == "no answer" for t in probes) and any(t["outcome"] == "answered" for t in probes)
