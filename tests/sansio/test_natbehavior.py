"""RFC 5780 discovery machine, driven through the in-memory NAT of tests/sansio/natsim.py."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest

from tests.sansio.natsim import IP2, NAT_IP, P1, P2, PRIMARY, SimNet, discover
from toolkit.codec import stun
from toolkit.sansio.natbehavior import TRANSITIONS, Edge, NatBehaviorDiscovery, State, lifetime_waits
from toolkit.sansio.natreport import Behavior
from toolkit.sansio.trace import TraceLog
from toolkit.timing import Timing
from toolkit.types import Endpoint, TxID

EI, AD, APD = Behavior.ENDPOINT_INDEPENDENT, Behavior.ADDRESS_DEPENDENT, Behavior.ADDRESS_AND_PORT_DEPENDENT
FAST = Timing(stun_rto=0.05, stun_rc=3, stun_rm=4)
HookFn = Callable[[stun.Message, Endpoint, Endpoint], str | None]


def _change(msg: stun.Message) -> tuple[bool, bool] | None:
    c = msg.get(stun.ChangeRequest)
    return None if c is None else (c.change_ip, c.change_port)


def on_dest(ip: str, port: int, what: str) -> HookFn:
    return lambda msg, dst, src: what if (str(dst.ip), dst.port) == (ip, port) and _change(msg) is None else None


def on_change(flags: tuple[bool, bool], what: str) -> HookFn:
    return lambda msg, dst, src: what if _change(msg) == flags else None


def on_response_port(what: str) -> HookFn:
    return lambda msg, dst, src: what if msg.get(stun.ResponsePort) is not None else None


def first_plain_only() -> HookFn:
    """Answer test I, drop every later plain request to the primary address (the lifetime bindings)."""
    seen = itertools.count()

    def hook(msg: stun.Message, dst: Endpoint, src: Endpoint) -> str | None:
        plain = _change(msg) is None and msg.get(stun.ResponsePort) is None and dst == PRIMARY
        return "drop" if plain and next(seen) > 0 else None

    return hook


def drop_all(msg: stun.Message, dst: Endpoint, src: Endpoint) -> str:
    return "drop"


def error_all(msg: stun.Message, dst: Endpoint, src: Endpoint) -> str:
    return "error"


BOTH, PORT = (True, True), (False, True)
LIFE = {"lifetime": True, "max_lifetime": 4.0, "timing": FAST}

# name -> (SimNet keyword arguments, NatBehaviorDiscovery keyword arguments); together they walk every edge
SCENARIOS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    "blocked": ({"hook": drop_all}, {}),
    "test-i-error": ({"hook": error_all}, {}),
    "not-5780": ({"rfc5780": False}, {}),
    "not-5780-hairpin": ({"rfc5780": False, "hairpin": True}, {"hairpin": True, "lifetime": True}),
    "no-nat": ({"mapping": None, "filtering": None}, {}),
    "no-nat-firewall": ({"mapping": None, "filtering": APD}, {}),
    "m2-no-answer": ({"hook": on_dest(IP2, P1, "drop")}, {}),
    "m2-error": ({"hook": on_dest(IP2, P1, "error")}, {}),
    "m3-no-answer": ({"mapping": APD, "hook": on_dest(IP2, P2, "drop")}, {}),
    "m3-error": ({"mapping": APD, "hook": on_dest(IP2, P2, "error")}, {}),
    **{f"{m}-{f}": ({"mapping": m, "filtering": f}, {}) for m in (EI, AD, APD) for f in (EI, AD, APD)},
    **{
        f"f2-{label}-{after}": (net, opts)
        for label, net in (
            ("answered", {"filtering": EI}),
            ("wrong-source", {"hook": on_change(BOTH, "ignore-change")}),
            ("error", {"hook": on_change(BOTH, "error")}),
        )
        for after, opts in (("hairpin", {"hairpin": True}), ("lifetime", LIFE), ("done", {}))
    },
    **{
        f"f3-{label}-{after}": (net, opts)
        for label, net in (
            ("answered", {"filtering": AD}),
            ("no-answer", {"filtering": APD}),
            ("wrong-source", {"hook": on_change(PORT, "ignore-change")}),
            ("error", {"hook": on_change(PORT, "error")}),
        )
        for after, opts in (("hairpin", {"hairpin": True}), ("lifetime", LIFE), ("done", {}))
    },
    "hairpin-yes-lifetime": ({"hairpin": True}, {"hairpin": True, **LIFE}),
    "hairpin-no-lifetime": ({}, {"hairpin": True, **LIFE}),
    "hairpin-yes": ({"hairpin": True}, {"hairpin": True}),
    "hairpin-no": ({}, {"hairpin": True}),
    "lifetime-expired": ({"lifetime": 3.0}, {"lifetime": True, "max_lifetime": 8.0}),
    "lifetime-outlived": ({}, LIFE),
    "lifetime-no-binding": ({"hook": first_plain_only()}, LIFE),
    "lifetime-error": ({"hook": on_response_port("error")}, LIFE),
}


@pytest.mark.parametrize("mapping", [EI, AD, APD])
@pytest.mark.parametrize("filtering", [EI, AD, APD])
def test_every_mapping_and_filtering_class(mapping: Behavior, filtering: Behavior) -> None:
    report, _ = discover(SimNet(mapping=mapping, filtering=filtering))
    assert report.behind_nat is True and not report.udp_blocked
    assert (report.mapping, report.filtering) == (mapping, filtering)
    assert report.other_address == Endpoint.parse(f"{IP2}:{P2}")
    assert report.mapped is not None and str(report.mapped.ip) == NAT_IP
    assert report.server_software == "natsim" and report.notes == ()
    assert report.tailscale_kind == ("easy" if mapping is EI else "hard")
    names = [e.test for e in report.tests]
    expect = ["mapping test I", "mapping test II"] + (["mapping test III"] if mapping is not EI else [])
    expect += ["filtering test II"] + (["filtering test III"] if filtering is not EI else [])
    assert names == expect


def test_classic_names() -> None:
    names = {(m, f): discover(SimNet(mapping=m, filtering=f))[0].classic_name for m in (EI, APD) for f in (EI, AD, APD)}
    assert names == {
        (EI, EI): "full-cone NAT",
        (EI, AD): "restricted-cone NAT",
        (EI, APD): "port-restricted-cone NAT",
        (APD, EI): "symmetric NAT",
        (APD, AD): "symmetric NAT",
        (APD, APD): "symmetric NAT",
    }


def test_evidence_of_a_port_restricted_cone() -> None:
    report, machine = discover(SimNet(mapping=EI, filtering=APD))
    t1, t2, f2, f3 = report.tests
    assert (t1.socket, t1.sent_to, t1.outcome, t1.attributes) == ("mapping", PRIMARY, "answered", ())
    assert t1.mapped == report.mapped and t1.source == PRIMARY and t1.response_origin == PRIMARY
    assert t1.local is not None and t1.local != t1.mapped and "behind a NAT" in t1.note
    assert t2.sent_to == Endpoint.parse(f"{IP2}:{P1}") and t2.mapped == t1.mapped and "same mapped" in t2.note
    assert f2.socket == f3.socket == "filtering" and f2.local != t1.local
    assert f2.attributes == ("CHANGE-REQUEST change IP and port",) and f2.outcome == "no answer" and f2.sends == 7
    assert f3.attributes == ("CHANGE-REQUEST change port",) and f3.outcome == "no answer"
    assert report.verdict() == "behind a NAT: mapping endpoint-independent, filtering address-and-port-dependent"
    assert machine.sockets() == ("mapping", "filtering")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["mapping"] == "endpoint-independent" and data["tests"][2]["outcome"] == "no answer"
    assert data["path"][0] == ["start", "start", "test I"]


def test_no_nat() -> None:
    report, _ = discover(SimNet(mapping=None, filtering=None))
    assert report.behind_nat is False and report.mapped == report.local
    assert (report.mapping, report.filtering) == (EI, EI)
    assert report.classic_name == "open internet" and report.verdict().startswith("no NAT:")
    firewalled, _ = discover(SimNet(mapping=None, filtering=APD))
    assert firewalled.behind_nat is False and firewalled.filtering is APD


def test_udp_blocked_after_the_full_rfc8489_wait() -> None:
    log = TraceLog()
    report, machine = discover(SimNet(hook=drop_all), tracer=log)
    assert report.udp_blocked and report.behind_nat is None and report.mapping is None
    assert report.verdict() == f"UDP blocked: no answer from {PRIMARY}"
    [t1] = report.tests
    assert t1.outcome == "no answer" and t1.sends == 7
    sent = [r.at for r in log.of_kind("sent")]
    assert sent == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log.of_kind("transition")[-1].at == 39.5
    assert [e.label for e in machine.path] == ["start", "no answer"]


def test_server_without_rfc5780() -> None:
    report, _ = discover(SimNet(rfc5780=False, hairpin=True), hairpin=True, lifetime=True)
    assert report.behind_nat is True and report.mapping is None and report.filtering is None
    assert report.hairpinning is True and not report.lifetime_tested
    assert any("OTHER-ADDRESS" in n for n in report.notes) and any("lifetime" in n for n in report.notes)


def test_server_ignoring_change_request_leaves_filtering_unknown() -> None:
    report, _ = discover(SimNet(hook=on_change(BOTH, "ignore-change")))
    assert report.filtering is None and report.mapping is EI
    assert report.tests[-1].source == PRIMARY and "ignores CHANGE-REQUEST" in report.tests[-1].note


@pytest.mark.parametrize("hairpins", [True, False])
def test_hairpinning(hairpins: bool) -> None:
    report, _ = discover(SimNet(hairpin=hairpins), hairpin=True)
    assert report.hairpinning is hairpins
    hp = report.tests[-1]
    assert hp.test == "hairpinning" and hp.socket == "hairpin" and hp.sent_to == report.mapped
    assert hp.received_on == ("mapping" if hairpins else None)


def test_lifetime_brackets_the_nat_timeout() -> None:
    report, machine = discover(SimNet(lifetime=3.0), lifetime=True, max_lifetime=8.0, timing=FAST)
    assert report.lifetime_tested
    assert report.lifetime_min is not None and report.lifetime_max is not None
    assert report.lifetime_min <= 3.0 <= report.lifetime_max
    waits = lifetime_waits(1.0, 1.2, 8.0)
    assert (report.lifetime_min, report.lifetime_max) == (2.986, 3.583)
    assert report.lifetime_max == waits[waits.index(report.lifetime_min) + 1]
    probes = [e for e in report.tests if e.test.startswith("lifetime probe")]
    assert all(e.socket == "lifetime-probe" and e.attributes[0].startswith("RESPONSE-PORT") for e in probes)
    alive = [e for e in probes if e.outcome == "answered"]
    assert all(e.received_on is not None and e.received_on.startswith("lifetime-") for e in alive)
    assert {e.outcome for e in probes} <= {"answered", "no answer", "cancelled"}
    assert machine.path[-1] == Edge(State.LIFETIME, "a binding expired", State.DONE)
    assert report.lifetime_text() == "2.99-3.58 s"


def test_lifetime_longer_than_the_ladder() -> None:
    report, _ = discover(SimNet(), lifetime=True, max_lifetime=4.0, timing=FAST)
    assert report.lifetime_min == 4.0 and report.lifetime_max is None
    assert report.lifetime_text() == "over 4.00 s"


def test_server_ignoring_response_port_leaves_lifetime_unknown() -> None:
    report, machine = discover(SimNet(hook=on_response_port("ignore-rport")), **LIFE)  # type: ignore[arg-type]
    assert report.lifetime_tested and report.lifetime_min is None and report.lifetime_max is None
    assert any("ignored RESPONSE-PORT" in n for n in report.notes)
    assert machine.path[-1].label == "error response"


def test_lifetime_ladder() -> None:
    assert lifetime_waits(1.0, 2.0, 10.0) == (1.0, 2.0, 4.0, 8.0, 10.0)
    assert lifetime_waits(5.0, 1.5, 5.0) == (5.0,)
    with pytest.raises(ValueError):
        lifetime_waits(0.0, 1.2, 5.0)
    with pytest.raises(ValueError):
        lifetime_waits(1.0, 1.0, 5.0)


def test_bad_datagrams_are_dropped_and_counted() -> None:
    ids = itertools.count(1)
    rng = lambda n: next(ids).to_bytes(n, "big")  # noqa: E731
    machine = NatBehaviorDiscovery(PRIMARY, rng=rng, timing=FAST, tracer=(log := TraceLog()))
    machine.start(0.0)
    machine.socket_bound("mapping", Endpoint.parse("192.168.1.2:5000"))
    [out] = machine.datagrams_to_send()
    txid, mapped = stun.decode(out.data).txid, Endpoint.parse("203.0.113.1:6000")
    answer = stun.binding_response(txid, mapped, other_address=Endpoint.parse(f"{IP2}:{P2}"))
    machine.receive_datagram("mapping", b"junk junk junk junk junk", PRIMARY, 0.01)
    machine.receive_datagram("mapping", stun.binding_response(TxID(b"\xff" * 12), PRIMARY), PRIMARY, 0.01)
    machine.receive_datagram("filtering", answer, PRIMARY, 0.01)
    assert machine.drops == {"not-stun": 1, "unknown-txid": 1, "wrong-socket": 1}
    assert log.reasons() == ["not-stun", "unknown-txid", "wrong-socket"]
    machine.receive_datagram("mapping", answer, PRIMARY, 0.02)
    assert machine.state is State.MAPPING_II
    machine.receive_datagram("mapping", answer, PRIMARY, 0.03)
    assert machine.drops["late"] == 1


def test_transitions_table_has_no_duplicates() -> None:
    assert len(set(TRANSITIONS)) == len(TRANSITIONS)
    assert {e.source for e in TRANSITIONS} | {e.target for e in TRANSITIONS} == set(State)


def test_scenarios_walk_every_transition() -> None:
    taken: set[Edge] = set()
    for name, (net, opts) in SCENARIOS.items():
        log = TraceLog()
        _, machine = discover(SimNet(**net), tracer=log, **opts)  # type: ignore[arg-type]
        assert machine.done, name
        assert all(e in TRANSITIONS for e in machine.path), name
        transitions = log.of_kind("transition")
        assert [t.reason for t in transitions if t.node == "nat-type"] == [e.label for e in machine.path], name
        taken |= set(machine.path)
    missing = set(TRANSITIONS) - taken
    assert not missing, f"edges no scenario takes: {sorted(map(str, missing))}"


@pytest.mark.parametrize("name", ["m2-no-answer", "m3-error", "f2-error-done", "lifetime-error", "test-i-error"])
def test_unknowns_are_explained(name: str) -> None:
    net, opts = SCENARIOS[name]
    report, _ = discover(SimNet(**net), **opts)  # type: ignore[arg-type]
    assert None in (report.mapping, report.filtering, report.lifetime_min) or report.notes
    assert report.tests[-1].note
