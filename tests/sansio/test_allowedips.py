"""Cryptokey routing (AllowedIPs): longest prefix wins, v4 and v6, moves, removal, vs brute force."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import BadValueError, UsageError
from toolkit.sansio.allowedips import AllowedIPs, parse_prefix


def test_longest_prefix_wins_v4() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/8", "a")
    t.insert("10.1.0.0/16", "b")
    t.insert("10.1.2.3/32", "c")
    assert t.lookup("10.1.2.3") == "c"
    assert t.lookup(ipaddress.ip_address("10.1.2.4")) == "b"
    assert t.lookup(bytes([10, 200, 0, 1])) == "a"
    assert t.lookup("11.0.0.1") is None
    assert t.lookup("::a01:203") is None  # an IPv6 address never matches an IPv4 prefix
    assert len(t) == 3


def test_longest_prefix_wins_v6() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("fd7a:115c:a1e0::/48", "tailnet")
    t.insert("fd7a:115c:a1e0:ab12::/64", "subnet")
    t.insert("fd7a:115c:a1e0:ab12:4843:cd96:625b:e016/128", "host")
    assert t.lookup("fd7a:115c:a1e0:ab12:4843:cd96:625b:e016") == "host"
    assert t.lookup(ipaddress.IPv6Address("fd7a:115c:a1e0:ab12::1").packed) == "subnet"
    assert t.lookup("fd7a:115c:a1e0:1::1") == "tailnet"
    assert t.lookup("fd7a:115c:a1e1::1") is None
    assert t.lookup("::ffff:10.0.0.1") is None  # v4-mapped stays IPv6, as in wireguard-go


def test_default_routes() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("0.0.0.0/0", "v4-exit")
    t.insert("::/0", "v6-exit")
    t.insert("192.168.1.0/24", "lan")
    assert t.lookup("8.8.8.8") == "v4-exit" and t.lookup("192.168.1.9") == "lan"
    assert t.lookup("2001:4860::8888") == "v6-exit"
    assert t.lookup(bytes(4)) == "v4-exit" and t.lookup(b"\xff" * 16) == "v6-exit"


def test_prefix_moves_between_peers() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    t.insert("10.0.0.0/24", "a")
    t.insert("10.0.1.0/24", "a")
    t.insert("10.0.0.0/24", "b")
    assert t.lookup("10.0.0.1") == "b" and t.lookup("10.0.1.1") == "a"
    assert t.entries("a") == [ipaddress.ip_network("10.0.1.0/24")]
    assert t.entries("b") == [ipaddress.ip_network("10.0.0.0/24")]
    t.insert("10.0.1.0/24", "b")
    assert t.entries("a") == [] and t.peers() == ["b"] and len(t) == 2


def test_insert_masks_and_parses() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    assert t.insert("10.1.2.3/8", "a") == ipaddress.ip_network("10.0.0.0/8")
    assert t.insert("fd00::1", "a") == ipaddress.ip_network("fd00::1/128")
    assert t.insert(ipaddress.ip_address("192.0.2.1"), "a") == ipaddress.ip_network("192.0.2.1/32")
    assert t.entries("a") == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("fd00::1/128"),
    ]
    with pytest.raises(UsageError):
        t.insert("10.0.0.0/33", "a")
    with pytest.raises(UsageError):
        parse_prefix("not-an-ip")
    with pytest.raises(BadValueError):
        t.lookup(b"\x01\x02\x03")
    with pytest.raises(BadValueError):
        t.lookup("nope")


def test_remove_and_remove_by_peer() -> None:
    t: AllowedIPs[str] = AllowedIPs()
    for prefix, peer in [("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"), ("fd00::/8", "a"), ("0.0.0.0/0", "c")]:
        t.insert(prefix, peer)
    assert t.remove_by_peer("a") == 2
    assert t.lookup("10.2.0.1") == "c" and t.lookup("10.1.0.1") == "b" and t.lookup("fd00::1") is None
    assert t.remove_by_peer("a") == 0
    assert t.remove("10.1.0.0/16") == "b" and t.remove("10.1.0.0/16") is None
    assert t.lookup("10.1.0.1") == "c"
    assert sorted((str(n), p) for n, p in t.items()) == [("0.0.0.0/0", "c")]
    t.clear()
    assert len(t) == 0 and t.lookup("10.1.0.1") is None and t.peers() == []


def brute_force(routes: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int], ip: str) -> int | None:
    addr = ipaddress.ip_address(ip)
    best = [(n.prefixlen, p) for n, p in routes.items() if n.version == addr.version and addr in n]
    return max(best)[1] if best else None


# addresses near a few roots (plus some anywhere), so prefixes nest and lookups hit them
V4_ROOTS, V6_ROOTS = (0x0A000000, 0xC0A80000), (0xFD00 << 112, 0xFD7A115CA1E0 << 80)
v4_ints = st.one_of(
    st.builds(lambda r, o: r + o, st.sampled_from(V4_ROOTS), st.integers(0, 2**16)), st.integers(0, 2**32 - 1)
)
v6_ints = st.one_of(
    st.builds(lambda r, o: r + o, st.sampled_from(V6_ROOTS), st.integers(0, 2**20)), st.integers(0, 2**128 - 1)
)
v4_prefixes = st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}", v4_ints, st.integers(0, 32))
v6_prefixes = st.builds(lambda a, n: f"{ipaddress.IPv6Address(a)}/{n}", v6_ints, st.integers(0, 128))
addresses = st.one_of(
    st.builds(lambda a: str(ipaddress.IPv4Address(a)), v4_ints),
    st.builds(lambda a: str(ipaddress.IPv6Address(a)), v6_ints),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(v4_prefixes, v6_prefixes), st.integers(0, 4), st.booleans()), max_size=40),
    st.lists(addresses, max_size=40),
)
def test_matches_brute_force(ops: list[tuple[str, int, bool]], probes: list[str]) -> None:
    t: AllowedIPs[int] = AllowedIPs()
    ref: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for prefix, peer, remove_peer in ops:
        if remove_peer and peer == 4:
            t.remove_by_peer(0)
            ref = {n: p for n, p in ref.items() if p != 0}
            continue
        net = ipaddress.ip_network(prefix, strict=False)
        t.insert(prefix, peer)
        ref[net] = peer
    assert len(t) == len(ref)
    for peer in range(5):
        assert set(t.entries(peer)) == {n for n, p in ref.items() if p == peer}
    # probe random addresses and the first, middle and last address of every inserted prefix
    edges = [str(n[i]) for n in ref for i in (0, n.num_addresses // 2, -1)]
    for ip in probes + edges:
        assert t.lookup(ip) == brute_force(ref, ip), ip
