"""Tests of the sans-IO netcheck (toolkit/sansio/netcheck*.py, protocols.md §5): plan, replies, stop rule, home."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import stun
from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.netcheck import DROP_REASONS, TRANSITIONS, Netcheck, State
from toolkit.sansio.netcheck_plan import stun_endpoint
from toolkit.sansio.netcheck_report import Report
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint, TxID

ME = Endpoint.parse("203.0.113.9:40000")
ME_OTHER_PORT = Endpoint.parse("203.0.113.9:40001")
ME6 = Endpoint.parse("[2001:db8:ffff::9]:40000")


def counter_rng() -> Callable[[int], bytes]:
    count = itertools.count(1)
    return lambda n: next(count).to_bytes(n, "big")


def node(name: str, v4: str = "", v6: str = "", host: str = "derp.example", **extra: Any) -> dict[str, Any]:
    return {"Name": name, "HostName": host, "IPv4": v4, "IPv6": v6, **extra}


def region(rid: int, *nodes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"RegionID": rid, "RegionCode": f"r{rid}", "RegionName": f"Region {rid}", "Nodes": list(nodes), **extra}


def derp_map(*regions: dict[str, Any], scores: dict[str, float] | None = None) -> DERPMap:
    obj: dict[str, Any] = {"Regions": {str(r["RegionID"]): r for r in regions}}
    if scores:
        obj["HomeParams"] = {"RegionScore": scores}
    return DERPMap.from_obj(obj)


def three_regions() -> DERPMap:
    """Region 1: node 1a dual stack, 1b v4 only; regions 2 and 3: one v4 node each."""
    return derp_map(
        region(1, node("1a", "192.0.2.1", "2001:db8::1"), node("1b", "192.0.2.2")),
        region(2, node("2a", "198.51.100.2")),
        region(3, node("3a", "198.51.100.3")),
    )


def reply_to(request: bytes, mapped: Endpoint) -> bytes:
    return stun.binding_response(stun.decode(request).txid, mapped)


def sent_to(nc: Netcheck) -> list[tuple[bytes, Endpoint]]:
    out = nc.datagrams_to_send()
    for data, _ in out:
        assert data == stun.tailnode_request(stun.decode(data).txid)  # Tailscale's 40-byte request (§3.1)
    return out


def answer(nc: Netcheck, sent: list[tuple[bytes, Endpoint]], dst: str, mapped: Endpoint, now: float) -> bool:
    (data,) = [d for d, ep in sent if str(ep) == dst]
    return nc.receive_datagram(reply_to(data, mapped), Endpoint.parse(dst), now)


# --- the probe plan -----------------------------------------------------------------------------------


def test_initial_plan_three_tries_cycling_nodes_both_families() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    plan = {k: [(p.delay, p.node, str(p.dst)) for p in v] for k, v in nc.plan.items()}
    assert plan == {
        "region-1-v4": [(0.0, "1a", "192.0.2.1:3478"), (0.1, "1b", "192.0.2.2:3478"), (0.2, "1a", "192.0.2.1:3478")],
        # 1b has no IPv6: its try is not planned, the others keep their times
        "region-1-v6": [(0.0, "1a", "[2001:db8::1]:3478"), (0.2, "1a", "[2001:db8::1]:3478")],
        "region-2-v4": [(0.0, "2a", "198.51.100.2:3478"), (0.1, "2a", "198.51.100.2:3478"), (0.2, "2a", "198.51.100.2:3478")],
        "region-3-v4": [(0.0, "3a", "198.51.100.3:3478"), (0.1, "3a", "198.51.100.3:3478"), (0.2, "3a", "198.51.100.3:3478")],
    }  # fmt: skip


def test_probes_go_out_at_0_100_200_ms_then_the_stun_timeout_ends_the_run() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    assert nc.get_timer() is None and nc.state is State.IDLE
    nc.start(10.0)
    first = sent_to(nc)
    assert [str(ep) for _, ep in first] == ["192.0.2.1:3478", "[2001:db8::1]:3478", "198.51.100.2:3478", "198.51.100.3:3478"]  # fmt: skip
    assert len({stun.decode(d).txid for d, _ in first}) == 4
    assert nc.get_timer() == pytest.approx(10.1)
    nc.handle_timer(10.05)  # not due yet: nothing
    assert sent_to(nc) == []
    nc.handle_timer(10.1)
    assert [str(ep) for _, ep in sent_to(nc)] == ["192.0.2.2:3478", "198.51.100.2:3478", "198.51.100.3:3478"]
    nc.handle_timer(10.2)
    assert len(sent_to(nc)) == 4
    assert nc.get_timer() == pytest.approx(13.0)  # netcheck_stun_probe_timeout after start
    nc.handle_timer(13.0)
    assert nc.done and nc.get_timer() is None
    report = nc.report()
    assert not report.udp and not report.ipv4 and report.ipv4_can_send and report.ipv6_can_send
    assert report.region_latency == {} and report.preferred_derp == 0 and report.mapping_varies_by_dest_ip is None


def test_no_v6_socket_means_no_v6_probes_and_none_disables_a_family() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng(), have_v6=False)
    assert sorted(nc.plan) == ["region-1-v4", "region-2-v4", "region-3-v4"]
    dm = derp_map(region(1, node("1a", "none", "2001:db8::1")), region(2, node("2a", "192.0.2.2", STUNPort=-1)))
    assert sorted(Netcheck(dm, rng=counter_rng()).plan) == ["region-1-v6"]


def test_host_names_use_the_resolved_addresses() -> None:
    dm = derp_map(region(1, node("1a", host="derp.lab", STUNPort=3479)), region(2, node("2a", host="127.0.0.2")))
    ips = {"derp.lab": [Endpoint.parse("10.1.1.1:0").ip, Endpoint.parse("[fd00::1]:0").ip]}
    nc = Netcheck(dm, rng=counter_rng(), resolved=ips)
    assert {k: str(v[0].dst) for k, v in nc.plan.items()} == {
        "region-1-v4": "10.1.1.1:3479",
        "region-1-v6": "[fd00::1]:3479",
        "region-2-v4": "127.0.0.2:3478",
    }
    assert stun_endpoint(dm.region(1).nodes[0], 4, {}) is None  # not resolved: not planned


def test_no_plan_at_all_finishes_at_once() -> None:
    nc = Netcheck(derp_map(region(1, node("1a", "192.0.2.1"))), rng=counter_rng(), have_v4=False, have_v6=False)
    nc.start(0.0)
    assert nc.done and not nc.report().udp and not nc.report().ipv4_can_send


# --- replies ------------------------------------------------------------------------------------------


def test_first_reply_cancels_the_rest_of_its_set_only() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.015)
    nc.handle_timer(0.1)
    assert [str(ep) for _, ep in sent_to(nc)] == ["198.51.100.2:3478", "198.51.100.3:3478"]
    report_so_far = nc._m
    assert report_so_far.latency == {1: pytest.approx(0.015)} and report_so_far.v4_latency == {1: pytest.approx(0.015)}


def test_a_v4_probe_that_would_add_nothing_is_not_sent_and_ends_its_set() -> None:
    log = TraceLog()
    nc = Netcheck(three_regions(), rng=counter_rng(), tracer=log, enough_regions=10)
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "[2001:db8::1]:3478", ME6, 0.01)  # region 1 has a latency (over v6)
    assert answer(nc, first, "198.51.100.2:3478", ME, 0.01)
    assert answer(nc, first, "198.51.100.3:3478", ME, 0.01)  # two v4 answers: the mapping question is answered
    assert not nc.done
    nc.handle_timer(0.1)  # region 1's v4 try to 1b would tell nothing new: not sent, and its set is over
    assert sent_to(nc) == []
    assert nc.done and [r.reason for r in log.of_kind("transition")][-1] == "all sets done"
    assert nc.report().region_v4_latency == {2: pytest.approx(0.01), 3: pytest.approx(0.01)}


def test_v6_try_still_sent_while_no_v6_answer_came() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.01)  # region 1 has a latency
    assert answer(nc, first, "198.51.100.2:3478", ME, 0.01)  # the mapping question is answered
    nc.handle_timer(0.1)
    assert [str(ep) for _, ep in sent_to(nc)] == ["198.51.100.3:3478"]
    nc.handle_timer(0.2)  # region 1's v6 try would still help (no v6 answer anywhere yet): it is sent
    assert [str(ep) for _, ep in sent_to(nc)] == ["[2001:db8::1]:3478", "198.51.100.3:3478"]


def test_v6_probe_skipped_once_v6_is_known() -> None:
    dm = derp_map(
        region(1, node("1a", "192.0.2.1", "2001:db8::1")),
        region(2, node("2a", "192.0.2.2", "2001:db8::2")),
    )
    nc = Netcheck(dm, rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.01)
    assert answer(nc, first, "192.0.2.2:3478", ME, 0.01)
    assert answer(nc, first, "[2001:db8::2]:3478", ME6, 0.01)
    nc.handle_timer(0.1)
    assert sent_to(nc) == []  # region 1 v6 try 2 adds nothing: latency known, v6 known
    assert nc.done and nc.report().region_v6_latency == {2: pytest.approx(0.01)}


def test_replies_to_already_sent_probes_of_a_cancelled_set_still_count() -> None:
    nc = Netcheck(derp_map(region(1, node("1a", "192.0.2.1")), region(2, node("2a", "192.0.2.2"))), rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    nc.handle_timer(0.1)
    second = sent_to(nc)
    assert answer(nc, second, "192.0.2.1:3478", ME, 0.13)  # try 2 answers first: 30 ms, the set is cancelled
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.14)  # try 1's late answer: 140 ms, still ours
    assert nc._m.latency == {1: pytest.approx(0.03)}  # the minimum is kept
    assert nc._m.v4_counters == {ME: 2}


def test_unknown_txid_duplicate_and_garbage_are_dropped_counted_and_traced() -> None:
    log = TraceLog()
    nc = Netcheck(three_regions(), rng=counter_rng(), tracer=log)
    src = Endpoint.parse("192.0.2.1:3478")
    assert not nc.receive_datagram(stun.binding_response(TxID(bytes(12)), ME), src, 0.0)  # before start
    nc.start(0.0)
    first = sent_to(nc)
    request = first[0][0]
    assert not nc.receive_datagram(stun.binding_response(TxID(b"\xff" * 12), ME), src, 0.01)
    assert not nc.receive_datagram(b"\x17\x03\x03 not stun at all", src, 0.01)
    assert not nc.receive_datagram(request[:20] + b"\x00\x20\x00\x08", src, 0.01)  # truncated attribute
    assert not nc.receive_datagram(request, src, 0.01)  # a Binding Request (a stray hairpin probe)
    txid = stun.decode(request).txid
    assert not nc.receive_datagram(stun.error_response(txid, stun.Method.BINDING, 400, "Bad Request"), src, 0.01)
    no_addr = stun.Message(stun.Class.SUCCESS, stun.Method.BINDING, txid, (stun.Software("x"),)).encode()
    assert not nc.receive_datagram(no_addr, src, 0.01)
    assert nc.receive_datagram(reply_to(request, ME), src, 0.02)
    assert not nc.receive_datagram(reply_to(request, ME), src, 0.03)  # a duplicate
    assert nc.counters == {
        "not-running": 1,
        "unknown-txid": 2,
        "not-stun": 1,
        "malformed": 1,
        "truncated": 1,
        "not-success": 2,
        "no-address": 1,
    }
    assert set(nc.counters) - {"truncated"} <= set(DROP_REASONS)
    assert log.reasons() == ["not-running", "unknown-txid", "not-stun", "malformed", "not-success", "not-success", "no-address", "unknown-txid"]  # fmt: skip
    assert [r.kind for r in log.records].count("received") == 1
    assert nc._m.latency == {1: pytest.approx(0.02)}


@settings(max_examples=300)
@given(st.binary(max_size=120), st.floats(0, 10))
def test_arbitrary_datagrams_never_raise(data: bytes, now: float) -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    nc.start(0.0)
    assert nc.receive_datagram(data, Endpoint.parse("192.0.2.1:3478"), now) is False
    assert sum(nc.counters.values()) >= 1


@settings(max_examples=200)
@given(st.binary(min_size=12, max_size=12), st.integers(0, 0xFFFF))
def test_well_formed_replies_with_foreign_txids_are_ignored(txid: bytes, port: int) -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    nc.start(0.0)
    ours = {stun.decode(d).txid for d, _ in nc.datagrams_to_send()}
    got = nc.receive_datagram(stun.binding_response(TxID(txid), ME), Endpoint.parse("192.0.2.1:3478"), 0.01)
    assert got is (TxID(txid) in ours)


def test_send_failures_decide_can_send_per_family() -> None:
    log = TraceLog()
    nc = Netcheck(three_regions(), rng=counter_rng(), tracer=log)
    nc.start(0.0)
    for _, dst in sent_to(nc):
        if dst.is_ipv6:
            nc.send_failed(dst, 0.0, "Network is unreachable")
    nc.cancel(0.05)
    report = nc.report()
    assert report.ipv4_can_send and not report.ipv6_can_send
    assert "send-failed" in log.reasons()


# --- the stop rule ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("full", "factor"), [(True, 2), (False, 1)])
def test_three_regions_then_wait_the_slowest_latency_once_more(full: bool, factor: int) -> None:
    dm = derp_map(*(region(r, node(f"{r}a", f"192.0.2.{r}")) for r in (1, 2, 3, 4)))
    previous = [Report(udp=True, at=-1.0)]  # a report without latencies: the plan stays the initial one
    log = TraceLog()
    nc = Netcheck(dm, rng=counter_rng(), full=full, previous=previous, tracer=log)
    nc.start(0.0)
    first = sent_to(nc)
    assert len(first) == 4
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.010)
    assert answer(nc, first, "192.0.2.2:3478", ME, 0.020)
    assert nc.state is State.PROBING
    assert answer(nc, first, "192.0.2.3:3478", ME, 0.030)
    assert nc.state is State.FINISHING
    assert nc.get_timer() == pytest.approx(0.030 + factor * 0.030)
    nc.handle_timer(nc.get_timer() or 0.0)  # region 4 never answered: its retries went out meanwhile
    assert nc.done
    assert [r.reason for r in log.of_kind("transition")] == ["start", "enough regions", "waited for the rest"]
    report = nc.report()
    assert sorted(report.region_latency) == [1, 2, 3] and report.full is full
    assert report.preferred_derp == 1


def test_every_set_answered_ends_the_run_without_waiting() -> None:
    dm = derp_map(region(1, node("1a", "192.0.2.1")), region(2, node("2a", "192.0.2.2")))
    nc = Netcheck(dm, rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "192.0.2.1:3478", ME, 0.004)
    assert not nc.done
    assert answer(nc, first, "192.0.2.2:3478", ME, 0.006)
    assert nc.done and nc.report().at == 0.006 and nc.state is State.DONE


def test_a_dead_region_keeps_the_run_until_the_stun_probe_timeout() -> None:
    timing = DEFAULT.replace(netcheck_stun_probe_timeout=1.5)
    dm = derp_map(region(1, node("1a", "192.0.2.1")), region(9, node("9a", "192.0.2.9")))
    nc = Netcheck(dm, rng=counter_rng(), timing=timing)
    nc.start(0.0)
    assert answer(nc, sent_to(nc), "192.0.2.1:3478", ME, 0.004)
    for t in (0.1, 0.2):
        nc.handle_timer(t)
        assert [str(ep) for _, ep in sent_to(nc)] == ["192.0.2.9:3478"]
    assert nc.get_timer() == 1.5
    nc.handle_timer(1.5)
    assert nc.done and nc.report().region_latency == {1: pytest.approx(0.004)}


def test_report_before_done_raises_and_transitions_table_is_complete() -> None:
    nc = Netcheck(three_regions(), rng=counter_rng())
    with pytest.raises(RuntimeError, match="still Idle"):
        nc.report()
    states_reached = {to for (_, _), to in TRANSITIONS.items()} | {frm for (frm, _) in TRANSITIONS}
    assert states_reached == set(State)
    assert all(to is State.DONE for (frm, label), to in TRANSITIONS.items() if label == "cancelled")


# --- MappingVariesByDestIP ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [([ME], None), ([ME, ME], False), ([ME, ME_OTHER_PORT], True), ([ME, ME, ME_OTHER_PORT], True)],
)
def test_mapping_varies_by_dest_ip(mappings: list[Endpoint], expected: bool | None) -> None:
    dm = derp_map(*(region(r, node(f"{r}a", f"192.0.2.{r}")) for r in range(1, len(mappings) + 1)))
    nc = Netcheck(dm, rng=counter_rng(), enough_regions=10)
    nc.start(0.0)
    first = sent_to(nc)
    for i, mapped in enumerate(mappings, start=1):
        assert answer(nc, first, f"192.0.2.{i}:3478", mapped, 0.01 * i)
    report = nc.report()
    assert report.mapping_varies_by_dest_ip is expected
    assert report.global_v4 == ME  # the first answer
    assert report.global_v4_counters == {m: mappings.count(m) for m in mappings}


def test_v6_answers_do_not_decide_the_mapping_and_global_v6_is_the_last() -> None:
    other6 = Endpoint.parse("[2001:db8:ffff::9]:40002")
    dm = derp_map(region(1, node("1a", v6="2001:db8::1")), region(2, node("2a", v6="2001:db8::2")))
    nc = Netcheck(dm, rng=counter_rng())
    nc.start(0.0)
    first = sent_to(nc)
    assert answer(nc, first, "[2001:db8::1]:3478", ME6, 0.01)
    assert answer(nc, first, "[2001:db8::2]:3478", other6, 0.02)
    report = nc.report()
    assert report.mapping_varies_by_dest_ip is None and report.global_v6 == other6 and report.ipv6
    assert report.region_v6_latency == {1: pytest.approx(0.01), 2: pytest.approx(0.02)} and not report.ipv4
