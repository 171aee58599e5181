"""Tests of netcheck's home region, incremental plan and Report JSON (protocols.md §5.1, §5.2)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sansio.test_netcheck import ME, ME6, answer, counter_rng, derp_map, node, region, sent_to
from toolkit.codec.derpmap import DERPMap
from toolkit.errors import DecodeError
from toolkit.sansio.netcheck import Netcheck
from toolkit.sansio.netcheck_plan import make_probe_plan, pick_preferred_derp
from toolkit.sansio.netcheck_report import Report
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

MS = 0.001


def five_regions(**extra: dict[str, object]) -> DERPMap:
    return derp_map(
        *(region(r, node(f"{r}a", f"192.0.2.{r}", f"2001:db8::{r}"), **extra.get(str(r), {})) for r in range(1, 6))
    )


def home(
    dm: DERPMap,
    latencies_ms: dict[int, float],
    *,
    history: list[Report] | None = None,
    previous_home: int = 0,
    activity: dict[int, float] | None = None,
    now: float = 1000.0,
) -> int:
    report = Report(udp=bool(latencies_ms), region_latency={r: v * MS for r, v in latencies_ms.items()}, at=now)
    acts = activity or {}
    return pick_preferred_derp(
        dm,
        report,
        history or [],
        timing=DEFAULT,
        now=now,
        started=now - 1.0,
        previous_home=previous_home,
        last_derp_activity=acts.get,
    )


# --- the home region ----------------------------------------------------------------------------------


def test_without_history_the_lowest_latency_wins_and_ties_go_to_the_lower_id() -> None:
    dm = five_regions()
    assert home(dm, {1: 30, 2: 12, 3: 50}) == 2
    assert home(dm, {4: 12, 2: 12}) == 2
    assert home(dm, {}) == 0


def test_history_of_five_minutes_and_five_seconds_counts() -> None:
    dm = five_regions()
    past = Report(region_latency={3: 5 * MS}, at=1000.0 - 300.0)  # 5 min ago: region 3 was best
    assert home(dm, {1: 20, 3: 40}, history=[past]) == 3
    old = Report(region_latency={3: 5 * MS}, at=1000.0 - 305.5)  # older than 5 min + 5 s: forgotten
    assert home(dm, {1: 20, 3: 40}, history=[old]) == 1
    # a region only in the history (not answering now) is not picked
    assert home(dm, {1: 20}, history=[Report(region_latency={4: 1 * MS}, at=999.0)]) == 1


def test_keep_old_home_when_the_new_one_is_less_than_10ms_better() -> None:
    dm = five_regions()
    assert home(dm, {1: 18, 2: 25}, previous_home=2) == 2  # 7 ms better: stay
    assert home(dm, {1: 14, 2: 25}, previous_home=2) == 1  # 11 ms better and < 2/3: move


def test_keep_old_home_when_the_new_one_is_more_than_two_thirds_of_it() -> None:
    dm = five_regions()
    assert home(dm, {1: 70, 2: 100}, previous_home=2) == 2  # 30 ms better, but 70 > 66.7
    assert home(dm, {1: 60, 2: 100}, previous_home=2) == 1  # 40 ms better and 60 < 66.7


def test_old_home_without_stun_is_kept_only_with_recent_derp_frames() -> None:
    dm = five_regions()
    assert home(dm, {1: 50}, previous_home=2, activity={2: 1000.0 - 7.9}) == 2  # a frame 7.9 s ago
    assert home(dm, {1: 50}, previous_home=2, activity={2: 999.5}) == 2  # after the run started
    assert home(dm, {1: 50}, previous_home=2, activity={2: 1000.0 - 8.5}) == 1  # too old
    assert home(dm, {1: 50}, previous_home=2) == 1  # never heard


def test_no_latency_at_all_keeps_a_home_whose_derp_connection_is_alive() -> None:
    dm = five_regions()
    assert home(dm, {}, previous_home=3, activity={3: 1000.0 - 119.0}) == 3  # within 2 × DERP keepalive
    assert home(dm, {}, previous_home=3, activity={3: 1000.0 - 121.0}) == 0
    assert home(dm, {}, previous_home=3) == 0


def test_region_score_scales_latencies() -> None:
    plain = five_regions()
    scored = derp_map(*(region(r, node(f"{r}a", f"192.0.2.{r}")) for r in (1, 2)), scores={"2": 0.5, "1": -1})
    assert home(plain, {1: 10, 2: 12}) == 1
    assert home(scored, {1: 10, 2: 12}) == 2  # 12 × 0.5 = 6 ms; the negative score of region 1 is ignored
    penalised = derp_map(*(region(r, node(f"{r}a", f"192.0.2.{r}")) for r in (1, 2)), scores={"1": 3.0})
    assert home(penalised, {1: 10, 2: 25}) == 2


def test_avoid_and_no_measure_no_home_regions_are_never_home() -> None:
    dm = five_regions(**{"1": {"Avoid": True}, "2": {"NoMeasureNoHome": True}})
    assert home(dm, {1: 1, 2: 1, 3: 40}) == 3
    assert home(dm, {1: 1, 3: 40}, previous_home=1) == 3  # an old home in an Avoid region is left
    assert home(dm, {}, previous_home=1, activity={1: 999.9}) == 0
    assert home(dm, {3: 40, 9: 1}) == 3  # region 9 is not in the map (any more)
    plan = Netcheck(dm, rng=counter_rng()).plan
    assert "region-1-v4" in plan and not any(key.startswith("region-2-") for key in plan)  # Avoid is measured


def test_the_core_applies_the_home_rules_with_its_history() -> None:
    dm = five_regions()
    first = Netcheck(dm, rng=counter_rng(), have_v6=False, enough_regions=10)
    first.start(0.0)
    out = sent_to(first)
    assert answer(first, out, "192.0.2.2:3478", ME, 0.020)
    assert answer(first, out, "192.0.2.1:3478", ME, 0.025)
    first.cancel(0.03)
    r1 = first.report()
    assert r1.preferred_derp == 2
    second = Netcheck(dm, rng=counter_rng(), have_v6=False, previous=[r1], full=True, enough_regions=10)
    second.start(10.0)
    out = sent_to(second)
    assert answer(second, out, "192.0.2.1:3478", ME, 10.012)  # region 1 now 12 ms, region 2 silent
    second.cancel(10.5)
    assert second.report().preferred_derp == 1  # the old home did not answer and no DERP frames: move


# --- the incremental plan -----------------------------------------------------------------------------


def last_report(home_region: int, *, v6: bool = True) -> Report:
    lat = {1: 10 * MS, 2: 20 * MS, 3: 30 * MS, 4: 40 * MS}
    return Report(
        udp=True,
        region_latency=lat,
        region_v4_latency=lat,
        region_v6_latency=dict(lat) if v6 else {},
        preferred_derp=home_region,
        at=-60.0,
    )


def plan_of(dm: DERPMap, last: Report, **kw: bool) -> dict[str, list[tuple[float, str]]]:
    plan = make_probe_plan(
        dm, timing=DEFAULT, last=last, preferred=last.preferred_derp, have_v4=True, have_v6=kw.get("have_v6", True)
    )
    return {k: [(round(p.delay, 6), p.node) for p in v] for k, v in sorted(plan.items())}


def test_incremental_plan_fastest_three_plus_home_with_their_tries() -> None:
    assert plan_of(five_regions(), last_report(home_region=4)) == {
        "region-1-v4": [(0.0, "1a"), (0.012, "1a")],  # fastest two: 2 tries, 1.2 × 10 ms apart
        "region-1-v6": [(0.0, "1a"), (0.012, "1a")],
        "region-2-v4": [(0.0, "2a"), (0.024, "2a")],
        "region-2-v6": [(0.0, "2a"), (0.024, "2a")],
        "region-3-v4": [(0.0, "3a")],  # third: 1 try; dual stack, rank 2 (even) -> v4 only
        # the home region: 4 tries, n × 48 ms, plus n × 50 ms from the third try on
        "region-4-v4": [(0.0, "4a"), (0.048, "4a"), (0.196, "4a"), (0.294, "4a")],
        "region-4-v6": [(0.0, "4a"), (0.048, "4a"), (0.196, "4a"), (0.294, "4a")],
    }


def test_incremental_plan_home_among_the_fastest_and_without_v6_history() -> None:
    plan = plan_of(five_regions(), last_report(home_region=1, v6=False))
    assert sorted(plan) == ["region-1-v4", "region-1-v6", "region-2-v4", "region-2-v6", "region-3-v4"]
    assert len(plan["region-1-v4"]) == 4 and plan["region-1-v6"] == [(0.0, "1a")]  # v6 only on try 0
    assert plan["region-2-v6"] == [(0.0, "2a")] and len(plan["region-3-v4"]) == 1


def test_incremental_plan_home_without_latency_uses_200ms_spacing() -> None:
    last = last_report(home_region=5)
    plan = plan_of(five_regions(), last, have_v6=False)
    assert plan["region-5-v4"] == [(0.0, "5a"), (0.2, "5a"), (0.5, "5a"), (0.75, "5a")]
    assert "region-4-v4" not in plan


def test_incremental_plan_skips_avoid_unless_home_and_uses_the_core_flag() -> None:
    dm = five_regions(**{"1": {"Avoid": True}})
    assert "region-1-v4" not in plan_of(dm, last_report(home_region=3))
    assert "region-1-v4" in plan_of(dm, last_report(home_region=1))
    nc = Netcheck(five_regions(), rng=counter_rng(), previous=[last_report(4)], full=False)
    assert nc.incremental and len(nc.plan["region-3-v4"]) == 1
    assert not Netcheck(five_regions(), rng=counter_rng(), previous=[last_report(4)], full=True).incremental


# --- Report JSON (Tailscale's field names) -----------------------------------------------------------


def sample_report() -> Report:
    return Report(
        udp=True,
        ipv4=True,
        ipv6=True,
        ipv4_can_send=True,
        ipv6_can_send=True,
        os_has_ipv6=True,
        mapping_varies_by_dest_ip=False,
        preferred_derp=2,
        region_latency={2: 0.0123456789, 10: 0.5},
        region_v4_latency={2: 0.0123456789},
        region_v6_latency={10: 0.5},
        global_v4_counters={ME: 2, Endpoint.parse("203.0.113.9:5"): 1},
        global_v6_counters={ME6: 1},
        global_v4=ME,
        global_v6=ME6,
        now=datetime(2024, 5, 1, 12, 34, 56, 120000, tzinfo=timezone(timedelta(hours=2))),
    )


def test_json_has_tailscale_field_names_order_and_encodings() -> None:
    obj = json.loads(sample_report().to_json())
    assert list(obj) == [
        "Now", "UDP", "IPv6", "IPv4", "IPv6CanSend", "IPv4CanSend", "OSHasIPv6", "ICMPv4", "MappingVariesByDestIP",
        "UPnP", "PMP", "PCP", "PreferredDERP", "RegionLatency", "RegionV4Latency", "RegionV6Latency",
        "GlobalV4Counters", "GlobalV6Counters", "GlobalV4", "GlobalV6", "CaptivePortal",
    ]  # fmt: skip
    assert obj["Now"] == "2024-05-01T10:34:56.12Z"
    assert obj["RegionLatency"] == {"10": 500_000_000, "2": 12_345_679} and list(obj["RegionLatency"]) == ["10", "2"]
    assert obj["GlobalV4Counters"] == {"203.0.113.9:40000": 2, "203.0.113.9:5": 1}
    assert obj["GlobalV6"] == "[2001:db8:ffff::9]:40000" and obj["MappingVariesByDestIP"] is False
    assert obj["UPnP"] is None and obj["CaptivePortal"] is None and obj["ICMPv4"] is False
    empty = json.loads(Report().to_json())
    assert empty["Now"] == "0001-01-01T00:00:00Z" and empty["GlobalV4"] == "" and empty["GlobalV4Counters"] is None
    assert empty["RegionLatency"] == {} and empty["MappingVariesByDestIP"] is None
    assert sample_report().to_json(indent="\t").startswith('{\n\t"Now": "2024-05-01T10:34:56.12Z",\n\t"UDP": true,')


def test_global_addrs_adds_endpoints_seen_more_than_once() -> None:
    extra = Endpoint.parse("203.0.113.9:6")
    report = Report(global_v4=ME, global_v4_counters={ME: 1, extra: 2, Endpoint.parse("203.0.113.9:7"): 1})
    assert report.global_addrs() == ([ME, extra], [])
    assert Report(global_v6=ME6, global_v6_counters={ME6: 3}).global_addrs() == ([], [ME6])


def test_json_round_trip() -> None:
    report = sample_report()
    again = Report.from_json(report.to_json())
    assert again.now == report.now
    assert again.region_latency == {2: 0.012345679, 10: 0.5}
    assert again == Report.from_json(again.to_json())
    assert Report.from_json('{"Now": "2024-05-01T10:34:56.123456789Z"}').now == datetime(
        2024, 5, 1, 10, 34, 56, 123456, tzinfo=UTC
    )


@pytest.mark.parametrize(
    "text",
    ['{"UDP": 1}', '{"RegionLatency": {"x": 1}}', '{"GlobalV4": "nope"}', '{"Now": "yesterday"}', "[]", "{", '{"GlobalV4Counters": {"1.2.3.4:5": "2"}}'],
)  # fmt: skip
def test_bad_report_json_is_a_decode_error(text: str) -> None:
    with pytest.raises(DecodeError):
        Report.from_json(text)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(list(json.loads(Report().to_json()))), st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=4), max_size=3)))  # fmt: skip
def test_arbitrary_report_json_only_raises_decode_error(obj: dict[str, object]) -> None:
    try:
        Report.from_obj(obj)
    except DecodeError:
        pass
