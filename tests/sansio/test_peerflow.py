"""PeerFlow: the seed flowchart walked for one peer, two flows exchanging sealed disco packets in memory
(flowharness.py): easy-easy with the CallMeMaybe hole punch, public-public through TryDirect, hard-hard
staying on DERP and re-probing, same LAN, fallback to DERP and back, validation failures (MTU, loss)
and TryAltPath, random schedules (Hypothesis), and the time to DirectActive against the physical minimum."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sansio.flowharness import EDGES, FlowNet, Host, Nat, walked_edges_ok
from toolkit.sansio import peergraph as g
from toolkit.sansio.peerflow_types import PathValidated, is_private_endpoint
from toolkit.sansio.peergraph import State
from toolkit.sansio.peerpath_types import SendPlan, padding_for_wire_mtu
from toolkit.types import Endpoint

S = State
A_LAN, B_LAN = Endpoint.parse("192.168.1.2:41641"), Endpoint.parse("10.0.0.2:41641")
TO_DIRECT = [S.AnalyzeResponses, S.ValidatePath, S.PathGood, S.EstablishDirect, S.MigrateDirect, S.MonitorDirect]
TO_DIRECT += [S.DirectStable, S.DirectActive]
VIA_DERP = [S.Start, S.GetInfo, S.CheckDirect, S.StartDERP, S.DERPActive, S.StartDisco, S.SendSTUN, S.MultiProbe]


def easy(name: str, lan: Endpoint, ip: str, **kw: object) -> Host:
    return Host(name, lan, Nat(ip), **kw)  # type: ignore[arg-type]


def times(h: Host, label: str | None = None, dst: State | None = None) -> list[float]:
    """When ``h`` took edges with this label and/or destination."""
    out = []
    for r in h.log.of_kind("transition"):
        t = g.transition_of(r)
        if (label is None or t.label == label) and (dst is None or t.dst is dst):
            out.append(r.at)
    return out


def test_easy_easy_the_call_me_maybe_punches_the_hole_then_heartbeats_keep_it() -> None:
    a = easy("a", A_LAN, "198.51.100.1")
    b = easy("b", B_LAN, "203.0.113.1", sending=False, derp_at=1.0)  # b is idle until a's CallMeMaybe arrives
    net = FlowNet(a, b)
    net.run(20.0)
    assert net.counts["filtered"] >= 1  # a's first pings hit b's closed NAT
    for h in (a, b):
        walked_edges_ok(h)
        assert h.flow.walked[:16] == VIA_DERP + TO_DIRECT
        assert h.flow.state is S.DirectActive
        assert h.flow.mtu == 1500 and h.flow.validated is not None and h.flow.validated.loss == 0.0
        assert not h.flow.drops
    rest = a.flow.walked[16:]  # a sends every second: each heartbeat walks MonitorDirect -> DirectStable -> back
    assert len(rest) >= 15 and rest == [S.MonitorDirect, S.DirectStable, S.DirectActive] * (len(rest) // 3)
    assert a.flow.time_direct is not None and a.flow.time_direct < 0.1  # natkit's ping back: no 5 s wait
    assert b.flow.time_direct == 1.0  # b's pongs arrived before its DERP: validated the moment DERP is up
    assert a.flow.send_plan(20.0) == SendPlan(b.endpoints()[0], None) and a.flow.path_kind(20.0) == "direct"
    # idle b: no heartbeats, so its trust in the address ran out (protocols.md §4.3): UDP and DERP again
    assert b.flow.path_kind(20.0) == "derp" and b.flow.send_plan(20.0).udp == a.endpoints()[0]


def test_without_info_the_flow_queries_control_first() -> None:
    a = easy("a", A_LAN, "198.51.100.1", have_info=False)
    b = easy("b", B_LAN, "203.0.113.1")
    net = FlowNet(a, b)
    net.run(5.0)
    walked_edges_ok(a)
    assert a.flow.walked[:6] == [S.Start, S.GetInfo, S.QueryControl, S.StoreInfo, S.CheckDirect, S.StartDERP]
    assert a.flow.state is S.DirectActive


def test_public_public_try_direct_succeeds_at_once() -> None:
    a = Host("a", Endpoint.parse("198.51.100.1:41641"))
    b = Host("b", Endpoint.parse("203.0.113.1:41641"), derp_at=30.0)  # no DERP needed at all
    net = FlowNet(a, b)
    net.run(10.0)
    for h in (a, b):
        walked_edges_ok(h)
        assert h.flow.walked[:6] == [S.Start, S.GetInfo, S.CheckDirect, S.TryDirect, S.DirectSuccess, S.DirectActive]
        assert h.flow.time_direct is not None and h.flow.time_direct <= 0.021
        assert h.flow.path_kind(10.0) == "direct" and S.StartDERP not in h.flow.walked


def test_public_peer_that_does_not_answer_goes_to_derp_after_the_try_direct_timeout() -> None:
    a = Host("a", Endpoint.parse("198.51.100.1:41641"))
    b = Host("b", Endpoint.parse("203.0.113.1:41641"))
    net = FlowNet(a, b, udp_cut=True)
    net.run(2.0)
    walked_edges_ok(a)
    assert a.flow.walked[:6] == [S.Start, S.GetInfo, S.CheckDirect, S.TryDirect, S.DirectSuccess, S.StartDERP]
    assert times(a, g.NO, S.StartDERP) == [a.flow.timing.try_direct_timeout]


def test_hard_hard_retries_then_stays_on_derp_and_re_probes() -> None:
    a = Host("a", A_LAN, Nat("198.51.100.1", hard=True))
    b = Host("b", B_LAN, Nat("203.0.113.1", hard=True), sending=False)
    net = FlowNet(a, b)
    net.run(100.0)
    rounds = a.flow.timing.disco_retry_rounds
    for h in (a, b):
        walked_edges_ok(h)
        first_stay = h.flow.walked.index(S.StayOnDERP)
        assert h.flow.walked[:first_stay].count(S.SendSTUN) == rounds
        assert h.flow.walked[first_stay - 2 : first_stay] == [S.AnalyzeResponses, S.RetryProbes]
        assert h.flow.time_direct is None and h.flow.path_kind(100.0) == "derp"
        assert h.flow.send_plan(100.0) == SendPlan(None, Endpoint.parse("127.3.3.40:1"))
    assert net.counts["filtered"] >= 10
    # b gets a's CallMeMaybe with every round a's traffic starts; a (b is idle) waits for the upgrade interval
    assert len(times(b, g.CALL_ME_MAYBE)) >= 5
    upgrades = times(a, g.UPGRADE_INTERVAL)
    first_stay_at = times(a, dst=S.StayOnDERP)[0]
    assert upgrades and upgrades[0] == first_stay_at + a.flow.timing.upgrade_udp_direct_interval


def test_same_lan_the_local_endpoint_wins() -> None:
    nat = Nat("198.51.100.1")
    a = Host("a", A_LAN, nat)
    b = Host("b", Endpoint.parse("192.168.1.3:41641"), nat)
    net = FlowNet(a, b)
    net.run(10.0)
    for h, peer in ((a, b), (b, a)):
        walked_edges_ok(h)
        assert h.flow.walked[:16] == VIA_DERP + TO_DIRECT
        assert h.flow.path_kind(10.0) == "local" and h.flow.path.best is not None
        assert h.flow.path.best.endpoint == peer.lan and is_private_endpoint(peer.lan)
    assert net.counts["no hairpin"] >= 1  # the public mappings do not work between them


def test_fallback_to_derp_within_trust_plus_a_ping_timeout_and_back() -> None:
    a = easy("a", A_LAN, "198.51.100.1")
    b = easy("b", B_LAN, "203.0.113.1")
    net = FlowNet(a, b)
    net.run(20.0)
    assert a.flow.state is S.DirectActive
    net.udp_cut = True
    net.run(50.0)
    t = a.flow.timing
    for h in (a, b):
        walked_edges_ok(h)
        fell = times(h, g.NO, S.FallbackDERP)
        # the last pong came at most one heartbeat before the cut; trust ran out, then a ping timed out (§4.8)
        assert len(fell) == 1 and 20.0 < fell[0] <= 20.0 + t.trust_udp_addr_duration + t.ping_timeout
        assert h.flow.path_kind(50.0) == "derp" and S.StayOnDERP in h.flow.walked  # after the retry rounds
    net.udp_cut = False
    net.run(70.0)
    for h in (a, b):
        walked_edges_ok(h)
        back = times(h, g.YES, S.DirectActive)
        assert back[-1] > 50.0 and h.flow.path_kind(70.0) == "direct"
        after = h.flow.walked[h.flow.walked.index(S.FallbackDERP) :]
        assert after[:2] == [S.FallbackDERP, S.DERPActive] and S.ValidatePath in after
        # out of StayOnDERP by an extension edge: a's traffic re-probes (answered), b hears a's CallMeMaybe
        assert {g.UPGRADE_INTERVAL, g.CALL_ME_MAYBE} & {g.transition_of(r).label for r in h.log.of_kind("transition")}


def test_a_send_error_takes_the_unreachable_edge_then_rediscovers() -> None:
    a = easy("a", A_LAN, "198.51.100.1")
    b = easy("b", B_LAN, "203.0.113.1")
    net = FlowNet(a, b)
    net.run(10.0)
    best = a.flow.path.best
    assert best is not None and a.flow.state is S.DirectActive
    net.at(10.0, lambda: a.flow.note_bad_endpoint(best.endpoint, 10.0))  # inside the loop: sends get drained
    net.run(10.0)
    assert a.flow.walked[-5:] == [S.FallbackDERP, S.DERPActive, S.StartDisco, S.SendSTUN, S.MultiProbe]
    assert times(a, g.UNREACHABLE) == [10.0] and a.flow.path_kind(10.0) == "derp"
    net.run(30.0)
    walked_edges_ok(a)
    assert a.flow.state is S.DirectActive and a.flow.path_kind(30.0) == "direct"


def _validations(h: Host) -> list[PathValidated]:
    return [e for e in h.events if isinstance(e, PathValidated)]


def test_a_path_mtu_below_1280_fails_validation() -> None:
    a = easy("a", A_LAN, "198.51.100.1")
    b = easy("b", B_LAN, "203.0.113.1")
    net = FlowNet(a, b, wan_mtu=1200)
    net.run(30.0)
    for h in (a, b):
        walked_edges_ok(h)
        v = _validations(h)[0]
        assert not v.good and v.mtu < 1280 and "path MTU" in v.reason and v.loss == 1.0
        i = h.flow.walked.index(S.PathGood)
        assert h.flow.walked[i : i + 2] == [S.PathGood, S.TryAltPath]  # then Yes: the LAN ping is still out
        assert S.StayOnDERP in h.flow.walked[i:]  # after the retry rounds
        assert S.DirectActive not in h.flow.walked and h.flow.path_kind(30.0) == "derp"
        assert h.flow.send_plan(30.0).udp is None  # the rejected path carries nothing


def test_loss_above_the_threshold_fails_validation() -> None:
    loss_probe = 124 + padding_for_wire_mtu(1280, ipv6=False)
    n = itertools.count()
    a = easy("a", A_LAN, "198.51.100.1")
    b = easy("b", B_LAN, "203.0.113.1")
    net = FlowNet(a, b, drop=lambda data: len(data) == loss_probe and next(n) % 2 == 0)
    net.run(3.0)
    for h in (a, b):
        walked_edges_ok(h)
        v = _validations(h)[0]
        assert not v.good and v.loss == 0.5 and v.mtu == 1500 and v.reason.startswith("loss 50% > 25%")
        assert S.TryAltPath in h.flow.walked and S.DirectActive not in h.flow.walked


def test_a_failed_lan_path_leads_to_try_alt_path_yes_and_the_public_one() -> None:
    nat = Nat("198.51.100.1", hairpin=True)
    a = Host("a", A_LAN, nat)
    b = Host("b", Endpoint.parse("192.168.1.3:41641"), nat)
    net = FlowNet(a, b, lan_mtu=1200)
    net.run(10.0)
    for h, peer in ((a, b), (b, a)):
        walked_edges_ok(h)
        first, second = _validations(h)[:2]
        assert (
            first.endpoint == peer.lan and not first.good and second.good and not is_private_endpoint(second.endpoint)
        )
        i = h.flow.walked.index(S.TryAltPath)
        assert h.flow.walked[i : i + 4] == [S.TryAltPath, S.MultiProbe, S.AnalyzeResponses, S.ValidatePath]
        assert h.flow.state is S.DirectActive and h.flow.path_kind(10.0) == "direct"


def test_time_to_direct_against_one_derp_delivery_plus_one_direct_rtt() -> None:
    """b learns a's endpoints only from a's CallMeMaybe (control gave none): the physical minimum for b is one
    DERP delivery plus one direct round trip; validation rides along with the round."""
    results = {}
    for udp, derp in ((0.010, 0.040), (0.030, 0.050), (0.005, 0.080)):
        a = easy("a", A_LAN, "198.51.100.1", advertise=False)
        b = easy("b", B_LAN, "203.0.113.1", sending=False)
        net = FlowNet(a, b, udp_delay=udp, derp_delay=derp)
        net.run(3.0)
        minimum = derp + 2 * udp
        assert b.flow.time_direct is not None and a.flow.time_direct is not None
        results[(udp, derp)] = (b.flow.time_direct / minimum, a.flow.time_direct / minimum)
        assert b.flow.time_direct <= 1.2 * minimum
        assert a.flow.time_direct <= minimum + 3 * udp  # a: b's ping arrives, a pings back (natkit)
    print("time to DirectActive / (DERP one way + direct RTT), (b, a):", results)


# --- random schedules never leave the chart -----------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.tuples(st.sampled_from(["public", "easy", "hard"]), st.sampled_from(["public", "easy", "hard"])),
    info=st.tuples(st.booleans(), st.booleans()),
    sending=st.tuples(st.booleans(), st.booleans()),
    derp_at=st.tuples(st.floats(0, 3), st.floats(0, 3)),
    loss=st.sampled_from([0.0, 0.1, 0.3, 0.7]),
    actions=st.lists(
        st.tuples(st.floats(0.0, 40.0), st.sampled_from(["cut", "heal", "bad", "link", "mtu", "info"])), max_size=8
    ),
)
def test_random_schedules_take_only_edges_of_the_chart(
    seed: int,
    kinds: tuple[str, str],
    info: tuple[bool, bool],
    sending: tuple[bool, bool],
    derp_at: tuple[float, float],
    loss: float,
    actions: list[tuple[float, str]],
) -> None:
    rng = random.Random(seed)
    hosts = []
    for name, kind, lan, ip, have, send, d in zip(
        "ab", kinds, (A_LAN, B_LAN), ("198.51.100.1", "203.0.113.1"), info, sending, derp_at, strict=True
    ):
        if kind == "public":
            hosts.append(Host(name, Endpoint.parse(f"{ip}:41641"), have_info=have, sending=send, derp_at=d))
        else:
            hosts.append(Host(name, lan, Nat(ip, hard=kind == "hard"), have_info=have, sending=send, derp_at=d))
    a, b = hosts
    net = FlowNet(a, b, drop=lambda data: rng.random() < loss)

    def act(what: str) -> None:
        h = rng.choice(hosts)
        if what in ("cut", "heal"):
            net.udp_cut = what == "cut"
        elif what == "mtu":
            net.wan_mtu = 1200 if net.wan_mtu == 1500 else 1500
        elif what == "bad" and h.flow.path.best is not None:
            h.flow.note_bad_endpoint(h.flow.path.best.endpoint, net.now)
        elif what == "link":
            h.flow.note_connectivity_change(net.now)
        elif what == "info":
            h.flow.info_received(net.peer(h).endpoints(), 1, net.now)

    for when, what in actions:
        net.at(when, lambda what=what: act(what))
    net.run(45.0)
    for h in (a, b):
        walked_edges_ok(h)
        pairs = set(itertools.pairwise(h.flow.walked))
        assert pairs <= {(s, d) for s, _, d in EDGES}
        timer = h.flow.get_timer()
        assert timer is None or timer >= 45.0 - 1e-9  # nothing overdue
