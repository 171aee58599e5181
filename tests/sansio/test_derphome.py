"""Pure DERP client policies: home-region choice (protocols.md §5.2), idle cleanup and the magic address
(§4) and the reconnect backoff (§2.3); the send token bucket is tests/sansio/test_tokenbucket.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.sansio.derpbackoff import ReconnectBackoff
from toolkit.sansio.derphome import derp_magic_endpoint, pick_home, region_of, stale_regions
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint


def region(rid: int, **kw: bool) -> DERPRegion:
    node = DERPNode(f"{rid}a", rid, f"derp{rid}.test", ipv4=f"192.0.2.{rid}")
    return DERPRegion(rid, f"r{rid}", f"Region {rid}", (node,), **kw)


MAP = DERPMap(
    {
        1: region(1),
        2: region(2),
        3: region(3),
        4: region(4, avoid=True),
        5: region(5, no_measure_no_home=True),
    }
)


def home(latencies: dict[int, float], previous: int | None, **kw: object) -> int | None:
    return pick_home(MAP, latencies, previous, timing=DEFAULT, now=1000.0, **kw)  # type: ignore[arg-type]


def test_first_home_is_the_fastest_allowed_region() -> None:
    assert home({1: 0.050, 2: 0.020, 3: 0.030}, None) == 2
    assert home({1: 0.050, 4: 0.001, 5: 0.001}, None) == 1  # Avoid / NoMeasureNoHome never picked
    assert home({2: 0.020, 1: 0.020}, None) == 1  # ties: lower region id
    assert home({}, None) is None
    assert home({4: 0.01}, None) is None


def test_old_home_kept_when_the_new_one_is_not_much_better() -> None:
    assert home({1: 0.025, 2: 0.016}, 1) == 1  # 9 ms better: below the 10 ms threshold
    assert home({1: 0.300, 2: 0.250}, 1) == 1  # 50 ms better but not by a third (250 > 200)
    assert home({1: 0.300, 2: 0.190}, 1) == 2  # better by more than a third and by more than 10 ms
    assert home({1: 0.040, 2: 0.020}, 1) == 2


def test_old_home_without_latency() -> None:
    assert home({2: 0.050}, 1) == 2  # did not answer and no DERP traffic: move
    assert home({2: 0.050}, 1, last_derp_activity=lambda r: 995.0) == 1  # relayed 5 s ago: still works
    assert home({2: 0.050}, 1, last_derp_activity=lambda r: 990.0) == 2  # 10 s ago: too old
    assert home({}, 1, last_derp_activity=lambda r: 900.0) == 1  # no latency at all: 100 s < 120 s
    assert home({}, 1, last_derp_activity=lambda r: 870.0) is None


def test_avoided_old_home_is_left() -> None:
    assert home({4: 0.010, 1: 0.012}, 4) == 1


def test_region_score_scales_latency() -> None:
    scored = DERPMap(MAP.regions, region_score={1: 3.0})
    assert pick_home(scored, {1: 0.010, 2: 0.025}, None, timing=DEFAULT, now=0.0) == 2


def test_stale_regions_spare_home_and_recent_writes() -> None:
    last = {1: 0.0, 2: 39.0, 3: 41.0}
    assert stale_regions(last, home=1, now=100.0, timing=DEFAULT) == [2]
    assert stale_regions(last, home=None, now=100.0, timing=DEFAULT) == [1, 2]
    assert stale_regions(last, home=2, now=50.0, timing=DEFAULT) == []


def test_magic_endpoint() -> None:
    ep = derp_magic_endpoint(7)
    assert str(ep) == "127.3.3.40:7"
    assert region_of(ep) == 7
    assert region_of(Endpoint.parse("127.3.3.41:7")) is None
    assert region_of(Endpoint.parse("127.3.3.40:0")) is None


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    b = ReconnectBackoff(DEFAULT.replace(derp_reconnect_min=0.1, derp_reconnect_max=1.0))
    assert [round(b.next_delay(0.0, 0.5), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.connected()
    assert b.next_delay(0.0, 0.0) == pytest.approx(0.05)  # jitter factor 0.5 .. 1.5
    assert b.next_delay(0.0, 0.999) == pytest.approx(0.2 * 1.499)


def test_restarting_sets_the_next_delay_then_fast_retries() -> None:
    b = ReconnectBackoff(DEFAULT.replace(derp_reconnect_min=0.1, derp_reconnect_max=10.0))
    for _ in range(5):
        b.next_delay(0.0, 0.5)  # backed off to 1.6 s
    b.restarting(0.25, 2.0)
    assert b.restart_hint == (0.25, 2.0)
    assert b.next_delay(10.0, 0.5) == 0.25
    assert b.next_delay(11.0, 0.9) == 0.1  # within reconnect_in + try_for: retry at the minimum
    assert b.next_delay(12.2, 0.9) == 0.1  # still inside 10 + 0.25 + 2
    assert b.next_delay(12.3, 0.5) == pytest.approx(0.1)  # window over: normal backoff from the start
    assert b.next_delay(12.4, 0.5) == pytest.approx(0.2)


@settings(max_examples=200)
@given(st.lists(st.floats(min_value=0.0, max_value=0.999), min_size=1, max_size=40))
def test_backoff_stays_within_bounds(draws: list[float]) -> None:
    b = ReconnectBackoff(DEFAULT)
    for u in draws:
        d = b.next_delay(0.0, u)
        assert DEFAULT.derp_reconnect_min * 0.5 <= d <= DEFAULT.derp_reconnect_max
