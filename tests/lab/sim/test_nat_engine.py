"""The sim NAT engine on its own (toolkit/lab/sim/nat.py): RFC 4787 mapping, allocation, timeouts, filtering,
hairpinning, WAN input, block_udp and one_to_one, packet by packet. Cases after Tailscale's natlab TestNAT
(protocols.md §6.1)."""

from __future__ import annotations

import random

import pytest

from tests.lab.sim.simnet import ep
from toolkit.lab.nat import Filtering, Mapping, NatBehavior, PortAllocation, WanInput, preset
from toolkit.lab.sim.nat import LOCAL, LOCAL_SESSION_TIMEOUT, NatEngine
from toolkit.lab.sim.packet import TCP, Packet, TcpInfo
from toolkit.types import Endpoint

PUBLIC = ep("203.0.113.1:0").ip
LAN = "192.168.0.20:1234"


def engine(behavior: NatBehavior | str, seed: int = 1, **kw: object) -> NatEngine:
    b = preset(behavior) if isinstance(behavior, str) else behavior
    return NatEngine(b, PUBLIC, random.Random(seed), **kw)  # type: ignore[arg-type]


def out(nat: NatEngine, src: str, dst: str, now: float = 0.0) -> Endpoint | None:
    return nat.outbound(Packet.udp(ep(src), ep(dst), b"x"), now)


def inbound(nat: NatEngine, src: str, dst: Endpoint | str | None, now: float = 0.0) -> object:
    assert dst is not None
    return nat.inbound(Packet.udp(ep(src), dst if isinstance(dst, Endpoint) else ep(dst), b"y"), now)


def custom(mapping: Mapping, filtering: Filtering = Filtering.ADDRESS_AND_PORT_DEPENDENT, **kw: object) -> NatBehavior:
    return NatBehavior("t", mapping, filtering, **kw)  # type: ignore[arg-type]


# --- natlab TestNAT: which packet sequences create a new mapping ------------------------------------


def test_endpoint_independent_mapping() -> None:
    nat = engine(custom(Mapping.ENDPOINT_INDEPENDENT))
    a = out(nat, LAN, "2.2.2.2:5678")
    assert out(nat, LAN, "7.7.7.7:9012") == a  # same source, other destination: same mapping
    assert out(nat, "192.168.0.20:1235", "2.2.2.2:5678") != a  # a new source port: a new mapping
    assert nat.counters["mapping-created"] == 2


def test_address_dependent_mapping() -> None:
    nat = engine(custom(Mapping.ADDRESS_DEPENDENT))
    a = out(nat, LAN, "2.2.2.2:5678")
    assert out(nat, LAN, "2.2.2.2:9012") == a  # same remote IP, other port: same mapping
    b = out(nat, LAN, "7.7.7.7:9012")
    assert a is not None and b is not None and b != a and b.ip == a.ip  # other remote IP: a new mapping (new port)
    assert [e.remote for e in nat.table(0.0)] == [ep("2.2.2.2:0"), ep("7.7.7.7:0")]


def test_address_and_port_dependent_mapping() -> None:
    nat = engine(custom(Mapping.ADDRESS_AND_PORT_DEPENDENT))
    dests = ["2.2.2.2:5678", "2.2.2.2:9012", "7.7.7.7:9012", "7.7.7.7:5678"]
    got = [out(nat, LAN, d) for d in dests]
    assert len(set(got)) == 4
    assert [out(nat, LAN, d) for d in dests] == got  # the same destinations reuse their mappings


# --- port allocation (RFC 4787 §4.2.1) ---------------------------------------------------------------


def test_preserve_keeps_the_port_and_falls_back_when_taken() -> None:
    nat = engine("easy")
    assert out(nat, "192.168.0.20:41641", "2.2.2.2:3478") == Endpoint(PUBLIC, 41641)
    other = out(nat, "192.168.0.21:41641", "2.2.2.2:3478")  # a second host, same private port
    assert other is not None and other.port != 41641


def test_symmetric_preserving_keeps_the_first_port_only() -> None:
    nat = engine("symmetric-preserving")
    first = out(nat, "192.168.0.20:41641", "2.2.2.2:3478")
    second = out(nat, "192.168.0.20:41641", "2.2.2.2:3479")
    assert first == Endpoint(PUBLIC, 41641)
    assert second is not None and second.port != 41641


def test_sequential_allocation_counts_up() -> None:
    nat = engine("symmetric-sequential")
    ports = [out(nat, LAN, f"2.2.2.2:{1000 + i}") for i in range(5)]
    numbers = [p.port for p in ports if p is not None]
    assert numbers == list(range(numbers[0], numbers[0] + 5))


def test_random_allocation_comes_from_the_seed() -> None:
    ports = [[out(engine("hard", seed), LAN, "2.2.2.2:3478") for _ in range(1)] for seed in (1, 1, 2)]
    assert ports[0] == ports[1] != ports[2]


def test_allocation_skips_ports_the_router_uses() -> None:
    nat = engine("easy", port_busy=lambda proto, port: port == 41641)
    got = out(nat, "192.168.0.20:41641", "2.2.2.2:3478")
    assert got is not None and got.port != 41641


# --- timeouts (RFC 4787 §4.3): outbound refreshes, inbound does not -----------------------------------


def test_mapping_expires_after_the_timeout_without_outbound_traffic() -> None:
    nat = engine(preset("easy").replace(mapping_timeout=30.0))
    pub = out(nat, LAN, "2.2.2.2:3478", now=0.0)
    assert pub is not None
    for t in (10.0, 20.0, 29.0):  # the server keeps answering: inbound does not refresh
        assert inbound(nat, "2.2.2.2:3478", pub, now=t) == ep(LAN)
    assert inbound(nat, "2.2.2.2:3478", pub, now=30.0) is None
    assert nat.table(30.0) == [] and nat.counters["mapping-expired"] == 1


def test_outbound_traffic_refreshes_the_mapping() -> None:
    nat = engine(preset("easy").replace(mapping_timeout=30.0))
    pub = out(nat, LAN, "2.2.2.2:3478", now=0.0)
    for t in (20.0, 40.0, 60.0):
        assert out(nat, LAN, "2.2.2.2:3478", now=t) == pub
    assert inbound(nat, "2.2.2.2:3478", pub, now=89.0) == ep(LAN)
    [entry] = nat.table(80.0)
    assert entry.expires_in == pytest.approx(10.0)


def test_an_expired_port_is_free_again() -> None:
    nat = engine(preset("easy").replace(mapping_timeout=30.0))
    out(nat, "192.168.0.20:41641", "2.2.2.2:3478", now=0.0)
    assert out(nat, "192.168.0.21:41641", "2.2.2.2:3478", now=31.0) == Endpoint(PUBLIC, 41641)


# --- filtering (RFC 4787 §5), per mapping ------------------------------------------------------------


@pytest.mark.parametrize(
    ("filtering", "same_ip_other_port", "other_ip"),
    [
        (Filtering.ENDPOINT_INDEPENDENT, True, True),
        (Filtering.ADDRESS_DEPENDENT, True, False),
        (Filtering.ADDRESS_AND_PORT_DEPENDENT, False, False),
    ],
)
def test_filtering(filtering: Filtering, same_ip_other_port: bool, other_ip: bool) -> None:
    nat = engine(custom(Mapping.ENDPOINT_INDEPENDENT, filtering))
    pub = out(nat, LAN, "2.2.2.2:3478")
    assert pub is not None
    assert inbound(nat, "2.2.2.2:3478", pub) == ep(LAN)
    assert (inbound(nat, "2.2.2.2:3479", pub) == ep(LAN)) is same_ip_other_port
    assert (inbound(nat, "7.7.7.7:3478", pub) == ep(LAN)) is other_ip


def test_sessions_expire_on_their_own() -> None:
    nat = engine(preset("easy").replace(mapping_timeout=30.0))
    pub = out(nat, LAN, "7.7.7.7:1", now=0.0)  # spoke to the peer once
    for t in range(10, 60, 10):
        out(nat, LAN, "2.2.2.2:3478", now=float(t))  # keeps the mapping alive
    assert inbound(nat, "2.2.2.2:3478", pub, now=55.0) == ep(LAN)
    assert inbound(nat, "7.7.7.7:1", pub, now=55.0) is None  # the peer's session is gone
    assert nat.counters["filtered"] == 1


def test_unsolicited_input_is_dropped() -> None:
    nat = engine("easy")
    assert inbound(nat, "7.7.7.7:1", "203.0.113.1:4000") is None
    assert nat.counters["no-mapping"] == 1


# --- hairpinning (RFC 4787 §6) -----------------------------------------------------------------------


@pytest.mark.parametrize("hairpinning", [True, False])
def test_hairpinning(hairpinning: bool) -> None:
    nat = engine(preset("easy").replace(hairpinning=hairpinning))
    a_pub = out(nat, "192.168.0.20:1000", "2.2.2.2:3478")
    assert a_pub is not None
    pkt = Packet.udp(ep("192.168.0.21:2000"), a_pub, b"hi")
    got = nat.hairpin(pkt, 1.0)
    if not hairpinning:
        assert got is None
        return
    assert got is not None
    assert got.dst == ep("192.168.0.20:1000")
    assert got.src.ip == PUBLIC and got.src == nat.table(1.0)[1].public  # REQ-9: the sender's public endpoint
    assert Packet.parse(got.raw) == got


# --- WAN input (design.md §5), block_udp, one_to_one -------------------------------------------------


def test_broken_router_gives_a_colliding_flow_another_port() -> None:
    nat = engine("broken-router")
    pub = out(nat, LAN, "198.51.100.10:3478", now=0.0)  # the STUN server saw 203.0.113.1:1234
    assert pub == Endpoint(PUBLIC, 1234)
    assert inbound(nat, "203.0.113.2:5555", pub, now=1.0) == LOCAL  # the peer's early probe: the router's own
    to_peer = out(nat, LAN, "203.0.113.2:5555", now=2.0)
    assert to_peer is not None and to_peer.port != 1234  # the reply tuple is taken: another port
    assert out(nat, LAN, "198.51.100.10:3478", now=2.0) == pub  # other flows keep the mapping
    assert inbound(nat, "203.0.113.2:5555", pub, now=3.0) == LOCAL  # answers to the old port: still the router's
    assert inbound(nat, "203.0.113.2:5555", to_peer, now=3.0) == ep(LAN)
    assert nat.counters["port-collision"] == 1
    # the router's own flow times out like an unreplied conntrack entry; then the port is usable again
    later = 3.0 + LOCAL_SESSION_TIMEOUT + 1
    assert out(nat, "192.168.0.20:1234", "203.0.113.2:5555", now=later) == to_peer  # the flow's mapping lives on


def test_a_router_that_drops_wan_input_keeps_the_port() -> None:
    nat = engine("easy")
    pub = out(nat, LAN, "198.51.100.10:3478", now=0.0)
    assert inbound(nat, "203.0.113.2:5555", pub, now=1.0) is None
    assert out(nat, LAN, "203.0.113.2:5555", now=2.0) == pub
    assert inbound(nat, "203.0.113.2:5555", pub, now=3.0) == ep(LAN)


def test_block_udp_drops_udp_not_tcp() -> None:
    nat = engine("udp-blocked")
    assert out(nat, LAN, "2.2.2.2:3478") is None
    tcp = Packet.tcp(ep(LAN), ep("2.2.2.2:443"), b"", TcpInfo(flags=0x02))
    assert nat.outbound(tcp, 0.0) == Endpoint(PUBLIC, 1234)
    assert nat.counters["udp-blocked"] == 1
    assert nat.table(0.0)[0].proto == "tcp" and TCP == 6


def test_one_to_one_forwards_everything_to_the_host() -> None:
    nat = engine("one2one", host=ep("192.168.0.20:0").ip)
    assert inbound(nat, "7.7.7.7:9", "203.0.113.1:5000") == ep("192.168.0.20:5000")  # unsolicited: forwarded
    assert out(nat, LAN, "7.7.7.7:9") == Endpoint(PUBLIC, 1234)
    assert out(nat, "192.168.0.21:1", "7.7.7.7:9") is None  # only the one host
    [entry] = nat.table(0.0)
    assert entry.private.ip == ep(LAN).ip and entry.expires_in == float("inf")


def test_wan_input_accept_enum_is_the_broken_router() -> None:
    assert preset("broken-router").wan_input is WanInput.ACCEPT
    assert preset("symmetric-sequential").allocation is PortAllocation.SEQUENTIAL
