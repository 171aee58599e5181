"""magicsock's betterAddr (protocols.md §4.10): every rule with concrete endpoint pairs, the documented
consequences (IPv6 vs IPv4 by ~10%, LAN vs public by ~20%), Go's address classes, and Hypothesis
properties (irreflexive, antisymmetric, no path loses, a faster path of the same class wins)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.sansio.betteraddr import AddrQuality, better_addr, bonus, latency_ns, points, why_better
from toolkit.types import Endpoint

MS = 0.001


def q(text: str, latency_ms: float = 10.0, mtu: int = 1280, vni: int | None = None) -> AddrQuality:
    return AddrQuality(Endpoint.parse(text), latency_ms * MS, mtu, vni)


PUB4, PUB4B = "1.2.3.4:41641", "5.6.7.8:41641"
PUB6 = "[2001:4860::1]:41641"
LAN4, LAN6 = "192.168.1.20:41641", "[fd7a:115c::5]:41641"
LINK4, LINK6 = "169.254.3.4:41641", "[fe80::1]:41641"
LOOP4, LOOP6 = "127.0.0.1:41641", "[::1]:41641"


# --- rule 1: the same path ------------------------------------------------------------------------


def test_same_path_wins_only_with_a_larger_mtu() -> None:
    assert better_addr(q(PUB4, 10, mtu=1500), q(PUB4, 10, mtu=1280))
    assert not better_addr(q(PUB4, 10, mtu=1280), q(PUB4, 10, mtu=1500))
    assert not better_addr(q(PUB4, 1, mtu=1280), q(PUB4, 100, mtu=1280))  # 100x faster, same path: no
    assert better_addr(q(PUB4, 100, mtu=9000), q(PUB4, 1, mtu=1280))  # on one path, MTU counts, latency not
    assert "same path" in why_better(q(PUB4, mtu=1500), q(PUB4))


def test_same_endpoint_through_a_relay_is_another_path() -> None:
    """Go compares epAddr (address and VNI): the direct and the relayed use of one endpoint differ."""
    assert better_addr(q(PUB4, 50), q(PUB4, 10, vni=7))
    assert not better_addr(q(PUB4, 10, vni=7), q(PUB4, 50))


# --- rule 2: no path --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [PUB4, LAN6, LOOP4])
def test_anything_beats_no_path(text: str) -> None:
    assert better_addr(q(text, 900), None)
    assert not better_addr(None, q(text, 900))


def test_no_path_is_not_better_than_no_path() -> None:
    assert not better_addr(None, None)


# --- rule 3: direct beats a relay --------------------------------------------------------------------


def test_direct_beats_relay_whatever_the_latency() -> None:
    assert better_addr(q(PUB4, 300), q(LOOP4, 1, vni=1))
    assert not better_addr(q(LOOP4, 1, vni=1), q(PUB4, 300))
    assert why_better(q(PUB4), q(PUB4B, vni=1)) == "direct beats relayed"


def test_two_relays_compare_by_points() -> None:
    assert better_addr(q(PUB4, 10, vni=1), q(PUB4B, 20, vni=2))


# --- rule 4: points -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_ms", "b_ms", "expected"),
    [
        (100, 200, (50, 0)),  # a is 50% faster
        (200, 100, (0, 50)),
        (100, 100, (0, 0)),
        (0, 0, (0, 0)),
        (0, 100, (100, 0)),
        (33, 100, (67, 0)),
        (99.5, 100, (1, 0)),  # 100 - 99.5 -> integer division floors 99.5 % to 99, so 1 point
        (100, 33.7, (0, 67)),  # 33.7 % floors to 33: 67 points, not round(66.3) = 66
        (33.7, 100, (67, 0)),
    ],
)
def test_latency_points_are_integer_percent(a_ms: float, b_ms: float, expected: tuple[int, int]) -> None:
    assert points(q(PUB4, a_ms), q(PUB4B, b_ms)) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.1", 50),
        ("127.255.0.9", 50),
        ("::1", 60),  # loopback + IPv6
        ("169.254.10.10", 30),
        ("fe80::1234", 40),  # link-local + IPv6
        ("10.1.2.3", 20),
        ("172.16.0.1", 20),
        ("172.31.255.254", 20),
        ("172.32.0.1", 0),  # just outside 172.16/12
        ("172.15.255.255", 0),
        ("192.168.0.1", 20),
        ("fd00::1", 30),  # ULA fc00::/7 is private in Go, + IPv6
        ("fc00::1", 30),
        ("100.64.0.1", 0),  # CGNAT is not "private" in Go
        ("192.0.2.1", 0),  # documentation: Python calls it private, Go does not
        ("198.18.0.1", 0),
        ("8.8.8.8", 0),
        ("2001:4860::8888", 10),
        ("2001:db8::1", 10),  # Python: private; Go: plain IPv6
    ],
)
def test_address_bonus_follows_go(ip: str, expected: int) -> None:
    assert bonus(ipaddress.ip_address(ip)) == expected


def test_loopback_beats_public_unless_public_is_more_than_half_faster() -> None:
    assert better_addr(q(LOOP4, 100), q(PUB4, 60))  # 50 vs 40 points
    assert better_addr(q(PUB4, 40), q(LOOP4, 100))  # 60 vs 50
    assert not better_addr(q(PUB4, 50), q(LOOP4, 100))  # 50 vs 50: no change either way
    assert not better_addr(q(LOOP4, 100), q(PUB4, 50))


def test_link_local_beats_private_at_equal_latency() -> None:
    assert better_addr(q(LINK4), q(LAN4))
    assert not better_addr(q(LAN4), q(LINK4))
    assert better_addr(q(LINK6), q(LAN6))  # 40 vs 30


@pytest.mark.parametrize(
    ("lan_ms", "pub_ms", "lan_wins", "pub_wins"),
    [
        (100, 100, True, False),  # LAN +20
        (100, 85, True, False),  # public 15% faster: 15 < 20
        (100, 80, False, False),  # 20 vs 20: sticky, neither replaces the other
        (100, 79, False, True),  # 21 > 20
        (100, 50, False, True),
    ],
)
def test_lan_wins_unless_public_is_more_than_20_percent_faster(
    lan_ms: float, pub_ms: float, lan_wins: bool, pub_wins: bool
) -> None:
    assert better_addr(q(LAN4, lan_ms), q(PUB4, pub_ms)) is lan_wins
    assert better_addr(q(PUB4, pub_ms), q(LAN4, lan_ms)) is pub_wins


@pytest.mark.parametrize(
    ("v6_ms", "v4_ms", "v6_wins", "v4_wins"),
    [
        (100, 100, True, False),  # +10 for IPv6
        (100, 95, True, False),  # 10 vs 5
        (100, 90, False, False),  # 10 vs 10
        (100, 89, False, True),  # 10 vs 11
    ],
)
def test_ipv6_wins_unless_ipv4_is_more_than_10_percent_faster(
    v6_ms: float, v4_ms: float, v6_wins: bool, v4_wins: bool
) -> None:
    assert better_addr(q(PUB6, v6_ms), q(PUB4, v4_ms)) is v6_wins
    assert better_addr(q(PUB4, v4_ms), q(PUB6, v6_ms)) is v4_wins


# --- rule 5: hysteresis -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a_ms", "wins"),
    [(100, False), (99.9, False), (99.5, False), (99.0, False), (98.9, True), (98, True)],
)
def test_one_percent_faster_is_not_better(a_ms: float, wins: bool) -> None:
    """aPoints <= 1 and bPoints == 0 keeps b: 99.0 ms vs 100 ms is exactly 1 point, 98.9 ms is 2."""
    assert better_addr(q(PUB4, a_ms), q(PUB4B, 100)) is wins


def test_hysteresis_does_not_block_a_bonus() -> None:
    """One point from latency plus a bonus is more than 1: an IPv6 path 0.5% faster wins."""
    assert better_addr(q(PUB6, 99.5), q(PUB4, 100))


def test_latency_is_compared_in_integer_nanoseconds() -> None:
    assert latency_ns(0.0123456789) == 12345679
    assert not better_addr(q(PUB4, 1e-7), q(PUB4B, 1e-7))  # 100 ns each: equal, no winner


# --- properties ---------------------------------------------------------------------------------------

IPS = ["1.2.3.4", "5.6.7.8", "10.0.0.1", "192.168.7.7", "169.254.1.1", "127.0.0.1", "2001:4860::1", "fd00::9", "fe80::1", "::1"]  # fmt: skip
qualities = st.builds(
    AddrQuality,
    st.builds(Endpoint, st.sampled_from(IPS).map(ipaddress.ip_address), st.sampled_from([1, 41641])),
    st.integers(0, 2_000_000_000).map(lambda ns: ns / 1e9),
    st.sampled_from([0, 1280, 1500]),
    st.sampled_from([None, None, 5]),
)
maybe = st.one_of(st.none(), qualities)


@settings(max_examples=300)
@given(maybe, maybe)
def test_never_better_both_ways(a: AddrQuality | None, b: AddrQuality | None) -> None:
    assert not (better_addr(a, b) and better_addr(b, a))


@settings(max_examples=200)
@given(maybe)
def test_nothing_is_better_than_itself(a: AddrQuality | None) -> None:
    assert not better_addr(a, a)


@settings(max_examples=200)
@given(qualities)
def test_a_path_beats_no_path(a: AddrQuality) -> None:
    assert better_addr(a, None) and not better_addr(None, a)


@settings(max_examples=200)
@given(st.integers(1, 10**9), st.integers(1, 10**9))
def test_public_v4_paths_follow_latency(a_ns: int, b_ns: int) -> None:
    """Between two plain public IPv4 paths, a wins exactly when it is at least 2 points (2%) faster."""
    a, b = AddrQuality(Endpoint.parse(PUB4), a_ns / 1e9), AddrQuality(Endpoint.parse(PUB4B), b_ns / 1e9)
    a_ns, b_ns = latency_ns(a.latency), latency_ns(b.latency)
    expected = a_ns < b_ns and 100 - (a_ns * 100) // b_ns >= 2
    assert better_addr(a, b) is expected
