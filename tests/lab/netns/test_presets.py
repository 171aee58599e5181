"""Every NAT preset nftables can express, verified with natkit's RFC 5780 discovery through the real kernel.

One lab holds a router per behaviour (``rN`` serving ``hN``, see tests/lab/netns/netnslab.py) and
stun1, a ``natkit stun-server`` in RFC 5780 mode (two addresses, two ports); ``natkit nat-type``
runs with ``ip netns exec`` in each LAN host's namespace and must report the behaviour's mapping
and filtering (RFC 4787 §4.1, §5). The presets nftables cannot express raise before anything is made.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from tests.lab.netns.netnslab import STUN, nat_lab, nat_type, new_lab, run
from tests.lab.netns.test_nftables import EXPRESSIBLE, INEXPRESSIBLE
from toolkit.errors import UsageError
from toolkit.lab.nat import NatBehavior, preset
from toolkit.lab.netns import NetnsLab, plumbing
from toolkit.lab.netns.nftables import inexpressible

PLAIN = [n for n in EXPRESSIBLE if n != "udp-blocked"]  # nat-type answers behind these
NATS: list[NatBehavior] = [
    *(preset(n) for n in PLAIN),
    preset("easy").replace(hairpinning=True),
    preset("full-cone").replace(hairpinning=True),
    preset("easy").replace(mapping_timeout=2.0),
    preset("udp-blocked"),
]
HAIRPIN_EASY, HAIRPIN_FULL_CONE, SHORT_TIMEOUT, UDP_BLOCKED = range(len(PLAIN), len(NATS))


def host(i: int) -> str:
    """The LAN host behind ``NATS[i]``."""
    return f"h{i + 1}"


def router(i: int) -> str:
    return f"r{i + 1}"


def wan(i: int) -> str:
    return f"203.0.113.{i + 1}"


@pytest.fixture(scope="module")
def lab() -> Iterator[NetnsLab]:
    lab = new_lab(nat_lab(*NATS, name="presets"))
    try:
        run(lab.up())
        yield lab
    finally:
        run(lab.down())


@pytest.mark.parametrize("i", range(len(PLAIN)), ids=PLAIN)
def test_nat_type_finds_the_preset(lab: NetnsLab, i: int) -> None:
    nat = NATS[i]
    assert lab.topology.router(router(i)).nat == nat and str(lab.topology.router(router(i)).wan_v4) == wan(i)
    r = run(nat_type(lab, host(i)))
    assert r["behind_nat"] is True
    assert (r["mapping"], r["filtering"]) == (nat.mapping.value, nat.filtering.value)
    local_port, mapped = r["local"].split(":")[1], r["mapped"]
    assert mapped.startswith(f"{wan(i)}:")
    if nat.allocation.value == "preserve":  # masquerade keeps the port (RFC 4787 §4.2.1)
        assert mapped.endswith(f":{local_port}")
    else:
        assert len({t["mapped"] for t in r["tests"][:3]}) == 3  # mapping tests I-III: three ports


def test_every_expressible_preset_is_verified() -> None:
    assert sorted([*PLAIN, NATS[UDP_BLOCKED].name]) == sorted(EXPRESSIBLE)


@pytest.mark.parametrize("name", sorted(INEXPRESSIBLE))
def test_inexpressible_preset_fails_up_cleanly(name: str) -> None:
    lab = new_lab(nat_lab("easy", name))
    with pytest.raises(UsageError, match=f"NAT preset {name!r}.*nftables has no"):
        run(lab.up())
    run(lab.down())
    assert plumbing.existing_namespaces(lab.name_prefix) == []
    assert not lab.dir.path.exists()


def test_udp_blocked_drops_udp_but_not_tcp(lab: NetnsLab) -> None:
    r = run(lab.run(host(UDP_BLOCKED), [sys.executable, "-m", "toolkit", "nat-type", STUN, "--format", "json", "--rto", "0.05",
                           "--rc", "2", "--rm", "2"]))  # fmt: skip
    assert r.exit == 1 and '"udp_blocked": true' in r.stdout
    tcp = f"import socket; socket.create_connection(('{STUN}', 3478), 3).close()"  # stun-server also listens on TCP
    assert run(lab.run(host(UDP_BLOCKED), [sys.executable, "-c", tcp])).ok


@pytest.mark.parametrize("i", [HAIRPIN_EASY, HAIRPIN_FULL_CONE], ids=["easy", "full-cone"])
def test_hairpinning_rule_loops_back_from_the_public_address(lab: NetnsLab, i: int) -> None:
    assert NATS[i].hairpinning
    r = run(nat_type(lab, host(i), "--hairpin"))
    assert r["hairpinning"] is True
    hp = r["tests"][-1]
    assert hp["received_on"] == "mapping"
    assert hp["source"].startswith(f"{wan(i)}:")  # RFC 4787 REQ-9: the sender's public address


def test_no_hairpinning_without_the_rule(lab: NetnsLab) -> None:
    assert run(nat_type(lab, host(PLAIN.index("easy")), "--hairpin"))["hairpinning"] is False


def test_mapping_timeout_is_the_routers_own_conntrack_timeout(lab: NetnsLab) -> None:
    i = SHORT_TIMEOUT

    async def sysctl(ns: str | None) -> str:
        argv = ["sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout_stream"]
        if ns is None:
            proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
            return (await proc.communicate())[0].decode().strip()
        return (await lab.run(ns, argv)).stdout.strip()

    assert run(sysctl(router(i))) == "2" and run(sysctl(None)) != "2"  # per network namespace
    r = run(nat_type(lab, host(i), "--lifetime", "--max-lifetime", "4"))
    low, high = r["lifetime"]["min_s"], r["lifetime"]["max_s"]
    assert low is not None and high is not None and low <= 2.1 and high >= 1.9


async def _probe_then_send(lab: NetnsLab, host: str, wan: str, port: int) -> str:
    """peer probes WAN:port first (as a hole-punching peer does), then ``host`` sends to peer from ``port``."""
    peer = (
        "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 5000));"
        f" s.sendto(b'early probe', ('{wan}', {port})); s.settimeout(5); d, a = s.recvfrom(100); print(a[1])"
    )
    sender = (
        "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
        f" s.bind(('0.0.0.0', {port})); time.sleep(0.5); s.sendto(b'hello', ('198.51.100.12', 5000))"
    )
    got, _ = await asyncio.gather(
        lab.run("peer", [sys.executable, "-c", peer]), lab.run(host, [sys.executable, "-c", sender])
    )
    assert got.ok, got.stderr
    return got.stdout.strip()


@pytest.mark.parametrize(("name", "collides"), [("easy", False), ("broken-router", True)])
def test_wan_input_accept_breaks_the_mapping(lab: NetnsLab, name: str, collides: bool) -> None:
    """design.md §5: an early probe the router accepts takes the conntrack slot; the mapping changes port."""
    i = PLAIN.index(name)
    assert str(lab.topology.host("peer").v4) == "198.51.100.12"
    port = 40000 + i
    seen = run(_probe_then_send(lab, host(i), wan(i), port))
    assert (seen != str(port)) is collides, f"peer saw source port {seen}"


def test_nat_table_reads_conntrack(lab: NetnsLab) -> None:
    easy, hard = PLAIN.index("easy"), PLAIN.index("hard")
    run(nat_type(lab, host(easy)))
    run(nat_type(lab, host(hard)))
    easy_maps = run(lab.nat_table(router(easy)))
    assert easy_maps and all(m.remote is None and m.public.port == m.private.port for m in easy_maps)
    assert all(str(m.public.ip) == wan(easy) and m.expires_in for m in easy_maps)
    hard_maps = run(lab.nat_table(router(hard)))
    assert hard_maps and all(m.remote is not None for m in hard_maps)
    assert len({m.public for m in hard_maps if m.proto == "udp"}) >= 3  # a new port per destination
    with pytest.raises(UsageError, match="no router"):
        run(lab.nat_table(host(0)))


def test_inexpressible_helper_agrees() -> None:
    assert all(inexpressible(n) is None for n in NATS)
