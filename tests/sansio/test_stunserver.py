"""The sans-IO STUN server: Tailscale's reply byte for byte, RFC 8489 answers and errors, RFC 5780
CHANGE-REQUEST / RESPONSE-PORT / PADDING routing, RFC 3489 classic clients, TCP framing, drops with
reasons; Hypothesis feeds arbitrary and mutated requests and checks every reply is well formed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import stun

# fmt: off
# isort: off
from toolkit.codec.stun import (
    ChangedAddress, ChangeRequest, Class, ErrorCode, Fingerprint, MappedAddress, Message, MessageIntegrity, Method,
    OtherAddress, Padding, ResponseOrigin, Software, SourceAddress, UnknownAttribute, UnknownAttributes,
    XorMappedAddress,
)
# isort: on
# fmt: on
from toolkit.errors import UsageError
from toolkit.sansio.stunserver import COOKIE, DROP_REASONS, Reply, StunServerCore, rfc5780_pair
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint, TxID

E = Endpoint.parse
A, B = E("192.0.2.1:3478"), E("198.51.100.1:3479")  # RFC 5780 mode: A:P and B:Q
AQ, BP = E("192.0.2.1:3479"), E("198.51.100.1:3478")
CLIENT = E("1.2.3.4:567")
TX = TxID(bytes(range(1, 13)))
# protocols.md §3.2 worked example: TxID 01..0c, client 1.2.3.4:567
TAILSCALE_REPLY = bytes.fromhex(
    "01 01 00 0c 21 12 a4 42 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 20 00 08 00 01 23 25 20 10 a7 46"
)
# Debian's `stun` (stund 0.97) Test I request, as captured from the real client: no magic cookie, CHANGE-REQUEST 0
STUND_TEST1 = bytes.fromhex("0001000801ff93545268f8066006843eba1a6d660003000400000000")


def basic() -> StunServerCore:
    return StunServerCore(A)


def rfc5780() -> StunServerCore:
    return StunServerCore(A, B)


def one(replies: list[Reply]) -> Reply:
    assert len(replies) == 1, replies
    return replies[0]


def answer(core: StunServerCore, data: bytes, local: Endpoint = A, src: Endpoint = CLIENT, **kw: object) -> Message:
    return stun.decode(one(core.handle(data, src, local, **kw)).data)  # type: ignore[arg-type]


def error_code(msg: Message) -> int:
    assert msg.msg_class == Class.ERROR
    err = msg.get(ErrorCode)
    assert err is not None
    return err.code


# --- Tailscale ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [basic, rfc5780])
def test_tailnode_reply_is_byte_identical_to_tailscale(make: Callable[[], StunServerCore]) -> None:
    core = make()
    reply = one(core.handle(stun.tailnode_request(TX), CLIENT, A))
    assert reply.data == TAILSCALE_REPLY
    assert (reply.from_local, reply.to) == (A, CLIENT)
    assert stun.decode(reply.data).mapped_endpoint == CLIENT
    assert core.counters["tailnode"] == 1 and core.counters["answered"] == 1


@pytest.mark.parametrize("client", ["[2001:db8::1]:567", "[::1]:40000", "203.0.113.7:65535"])
def test_tailnode_reply_decodes_to_the_client_v4_and_v6(client: str) -> None:
    ep = E(client)
    local = E("[2001:db8::53]:3478") if ep.is_ipv6 else A
    data = one(StunServerCore(local).handle(stun.tailnode_request(TX), ep, local)).data
    assert len(data) == (44 if ep.is_ipv6 else 32)
    assert data == stun.binding_response(TX, ep)
    msg = stun.decode(data)
    assert msg.attributes == (XorMappedAddress(ep),) and msg.mapped_endpoint == ep


# --- RFC 8489 clients ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fingerprint", [True, False])
def test_binding_request_gets_xor_mapped_software_and_fingerprint_when_asked(fingerprint: bool) -> None:
    req = stun.binding_request(TX, software="aioice", fingerprint=fingerprint)
    data = one(basic().handle(req, CLIENT, A)).data
    msg = stun.decode(data)
    assert (msg.msg_class, msg.method, msg.txid) == (Class.SUCCESS, Method.BINDING, TX)
    assert msg.get(XorMappedAddress) == XorMappedAddress(CLIENT) and msg.software == "natkit"
    assert (msg.get(Fingerprint) is not None) == fingerprint
    assert stun.verify_fingerprint(data) is (True if fingerprint else None)
    assert msg.get(ResponseOrigin) is None and msg.get(OtherAddress) is None  # basic mode


def test_software_can_be_left_out_and_ipv6_is_answered() -> None:
    six = E("[2001:db8::2]:3478")
    core = StunServerCore(six, software="")
    msg = answer(core, stun.binding_request(TX), local=six, src=E("[2001:db8::9]:1"))
    assert msg.software is None and msg.mapped_endpoint == E("[2001:db8::9]:1")


def test_comprehension_optional_unknowns_are_ignored_and_after_integrity_everything_is() -> None:
    attrs = (UnknownAttribute(0x8FFF, b"x"), MessageIntegrity(bytes(20)), UnknownAttribute(0x0030, b""))
    req = Message(Class.REQUEST, Method.BINDING, TX, attrs).encode(fingerprint=True)
    assert answer(basic(), req).msg_class == Class.SUCCESS  # RFC 8489 §14: optional ≥ 0x8000; §14.5


def test_unknown_comprehension_required_attributes_get_420_listing_them() -> None:
    attrs = (UnknownAttribute(0x0030, b""), UnknownAttribute(0x7F00, b"ab"), UnknownAttribute(0x0030, b""))
    core = basic()
    data = Message(Class.REQUEST, Method.BINDING, TX, attrs).encode(fingerprint=True)
    msg = answer(core, data)
    assert error_code(msg) == 420 and msg.get(UnknownAttributes) == UnknownAttributes((0x0030, 0x7F00))
    assert msg.txid == TX and stun.verify_fingerprint(msg.wire or b"") is True
    assert core.counters["error_responses"] == 1 and core.counters["error:420"] == 1


@pytest.mark.parametrize("method", [Method.ALLOCATE, Method.REFRESH, 0x0ABC])
def test_other_methods_get_400(method: int) -> None:
    msg = answer(basic(), Message(Class.REQUEST, method, TX).encode())
    assert error_code(msg) == 400 and msg.method == method


def test_malformed_attribute_in_a_request_gets_400() -> None:
    bad = UnknownAttribute(0x0020, b"\x00\x07\x00\x01abcd")  # XOR-MAPPED-ADDRESS with family 7
    req = Message(Class.REQUEST, Method.BINDING, TX, (bad,)).encode(fingerprint=True)
    msg = answer(basic(), req)
    assert error_code(msg) == 400 and msg.get(Fingerprint) is not None


# --- drops ------------------------------------------------------------------------------------------------


def _drops() -> list[tuple[str, bytes]]:
    req = stun.binding_request(TX)
    bad_fp = req[:-1] + bytes([req[-1] ^ 1])
    not_last = Message(Class.REQUEST, Method.BINDING, TX, (Fingerprint(0), Software("x"))).encode()
    return [
        ("truncated", req[:19]),
        ("truncated", req[:-4]),
        ("trailing-bytes", req + b"\x00\x00\x00\x00"),
        ("not-stun", b"\xc0" + req[1:]),
        ("bad-length", req[:3] + b"\x09" + req[4:] + bytes(1)),  # length 9 with 9 bytes following
        ("bad-fingerprint", bad_fp),
        ("bad-fingerprint", not_last),
        ("indication", Message(Class.INDICATION, Method.BINDING, TX).encode()),
        ("response", stun.binding_response(TX, CLIENT)),
        ("response", stun.error_response(TX, Method.BINDING, 400, "x")),
        ("response", Message(Class.SUCCESS, Method.BINDING, TX, (UnknownAttribute(0x0020, b"\x00\x09"),)).encode()),
    ]


@pytest.mark.parametrize(("reason", "data"), _drops())
def test_bad_input_is_dropped_counted_and_traced(reason: str, data: bytes) -> None:
    log = TraceLog()
    core = StunServerCore(A, tracer=log)
    assert core.handle(data, CLIENT, A) == []
    assert reason in DROP_REASONS
    assert core.counters[f"dropped:{reason}"] == 1 and log.reasons() == [reason]
    assert log.of_kind("received")[0].raw == data and log.of_kind("dropped")[0].endpoint == CLIENT
    assert f"dropped 1 ({reason} 1)" in core.summary()


def test_request_on_a_foreign_address_in_rfc5780_mode_is_dropped() -> None:
    core = rfc5780()
    assert core.handle(stun.binding_request(TX), CLIENT, E("10.0.0.1:3478")) == []
    assert core.counters["dropped:unknown-local"] == 1


def test_tracer_sees_received_and_sent_with_summaries() -> None:
    log = TraceLog()
    core = StunServerCore(A, B, tracer=log, name="stun1")
    core.handle(stun.binding_request(TX, change_port=True), CLIENT, A, now=1.5)
    sent = log.of_kind("sent")
    assert [r.kind for r in log.records] == ["received", "sent"] and sent[0].at == 1.5
    assert sent[0].node == "stun1" and sent[0].endpoint == CLIENT and "response-origin 192.0.2.1:3479" in sent[0].detail


# --- RFC 5780 -----------------------------------------------------------------------------------------------

# RFC 5780 §6.1 Table 1: (request arrived on, change IP, change port) -> (sent from, OTHER-ADDRESS)
TABLE1 = [
    (A, False, False, A, B),
    (A, True, False, BP, B),
    (A, False, True, AQ, B),
    (A, True, True, B, B),
    (B, False, False, B, A),
    (B, True, False, AQ, A),
    (B, False, True, BP, A),
    (B, True, True, A, A),
    (AQ, True, False, B, BP),
    (BP, False, True, B, AQ),
]


@pytest.mark.parametrize(("local", "change_ip", "change_port", "origin", "other"), TABLE1)
def test_change_request_is_answered_from_the_matching_socket(
    local: Endpoint, change_ip: bool, change_port: bool, origin: Endpoint, other: Endpoint
) -> None:
    core = rfc5780()
    assert set(core.local_endpoints) == {A, AQ, BP, B} and core.mode == "rfc5780"
    req = stun.binding_request(TX, change_ip=change_ip, change_port=change_port)
    reply = one(core.handle(req, CLIENT, local))
    assert (reply.from_local, reply.to) == (origin, CLIENT)
    msg = stun.decode(reply.data)
    assert msg.get(ResponseOrigin) == ResponseOrigin(origin) and msg.get(OtherAddress) == OtherAddress(other)
    assert msg.get(XorMappedAddress) == XorMappedAddress(CLIENT) and msg.get(MappedAddress) == MappedAddress(CLIENT)
    assert stun.verify_fingerprint(reply.data) is True


def test_response_port_sends_to_the_source_ip_at_that_port() -> None:
    for core in (basic(), rfc5780()):
        reply = one(core.handle(stun.binding_request(TX, response_port=40001), CLIENT, A))
        assert (reply.from_local, reply.to) == (A, E("1.2.3.4:40001"))
        assert stun.decode(reply.data).mapped_endpoint == CLIENT
    both = one(rfc5780().handle(stun.binding_request(TX, change_ip=True, response_port=9), CLIENT, A))
    assert (both.from_local, both.to) == (BP, E("1.2.3.4:9"))


def test_response_port_zero_and_response_port_with_padding_get_400() -> None:
    assert error_code(answer(rfc5780(), stun.binding_request(TX, response_port=0))) == 400
    msg = answer(rfc5780(), stun.binding_request(TX, response_port=5000, padding=8))
    assert error_code(msg) == 400 and "PADDING" in (msg.get(ErrorCode) or ErrorCode(400)).reason


def test_padding_pads_the_reply_to_the_mtu() -> None:
    core = StunServerCore(A, B, padding_size=1001)
    reply = one(core.handle(stun.binding_request(TX, padding=4), CLIENT, A))
    pad = stun.decode(reply.data).get(Padding)
    assert pad is not None and pad.length == 1004 and len(reply.data) > 1004
    assert stun.verify_fingerprint(reply.data) is True


def test_basic_server_refuses_change_request_with_420() -> None:
    for flags in ((False, False), (True, False), (True, True)):
        req = Message(Class.REQUEST, Method.BINDING, TX, (ChangeRequest(*flags),)).encode()
        msg = answer(basic(), req)
        assert error_code(msg) == 420 and msg.get(UnknownAttributes) == UnknownAttributes((0x0003,))


def test_over_tcp_change_request_and_response_port_get_420() -> None:
    core = rfc5780()
    msg = answer(core, stun.binding_request(TX, change_ip=True), transport="tcp")
    assert error_code(msg) == 420 and msg.get(UnknownAttributes) == UnknownAttributes((0x0003,))
    msg = answer(core, stun.binding_request(TX, response_port=7), transport="tcp")
    assert msg.get(UnknownAttributes) == UnknownAttributes((0x0027,))
    assert msg.get(ResponseOrigin) == ResponseOrigin(A) and msg.get(OtherAddress) == OtherAddress(B)
    assert answer(core, stun.binding_request(TX), transport="tcp").msg_class == Class.SUCCESS


def test_rfc5780_pair_needs_two_ips_and_two_ports_of_one_family() -> None:
    assert rfc5780_pair([A, B]) == (A, B)
    for listen in ([A], [A, B, E("10.0.0.1:1")], [A, BP], [A, AQ], [A, E("[::1]:3479")], [E("0.0.0.0:1"), B]):
        assert rfc5780_pair(listen) is None
    assert rfc5780_pair([E("127.0.0.1:0"), E("127.0.0.2:5")]) is None
    with pytest.raises(UsageError, match="RFC 5780 mode needs"):
        StunServerCore(A, BP)


# --- RFC 3489 classic clients --------------------------------------------------------------------------------


def test_classic_request_gets_mapped_source_and_changed_address() -> None:
    reply = one(rfc5780().handle(STUND_TEST1, CLIENT, A))
    assert reply.data[4:20] == STUND_TEST1[4:20] and reply.data[:2] == b"\x01\x01"
    txid16, msg = stun.decode_classic(reply.data)
    assert txid16 == STUND_TEST1[4:20]
    assert msg.attributes == (MappedAddress(CLIENT), SourceAddress(A), ChangedAddress(B))


def test_classic_change_ip_and_port_in_rfc5780_mode() -> None:
    req = STUND_TEST1[:-1] + b"\x06"
    reply = one(rfc5780().handle(req, CLIENT, A))
    assert reply.from_local == B
    assert stun.decode_classic(reply.data)[1].get(SourceAddress) == SourceAddress(B)


def test_classic_requests_on_a_basic_server() -> None:
    plain = STUND_TEST1[:2] + b"\x00\x00" + STUND_TEST1[4:20]
    _, msg = stun.decode_classic(one(basic().handle(plain, CLIENT, A)).data)
    assert msg.attributes == (MappedAddress(CLIENT), SourceAddress(A))
    err = one(basic().handle(STUND_TEST1, CLIENT, A)).data
    assert err[:2] == b"\x01\x11" and err[4:20] == STUND_TEST1[4:20]
    _, msg = stun.decode_classic(err)
    # RFC 3489 §11.2.10: an even number of types (one repeated); §11.2.9: the reason padded to 4 bytes
    assert error_code(msg) == 420 and msg.get(UnknownAttributes) == UnknownAttributes((3, 3))
    assert len((msg.get(ErrorCode) or ErrorCode(400)).reason) % 4 == 0


# --- TCP framing ---------------------------------------------------------------------------------------------


def test_stream_frames_messages_by_their_header_length() -> None:
    core = rfc5780()
    stream = core.open_stream(CLIENT, A, now=0.0)
    two = stun.binding_request(TX) + stun.tailnode_request(TxID(bytes(12)))
    replies = stream.receive_data(two, 1.0)
    assert [stun.decode(r.data).txid for r in replies] == [TX, TxID(bytes(12))]
    req = stun.binding_request(TxID(b"z" * 12), software="split")
    got = [r for i in range(len(req)) for r in stream.receive_data(req[i : i + 1], 2.0)]
    assert len(got) == 1 and stun.decode(got[0].data).txid == TxID(b"z" * 12)
    assert stream.close_reason is None and stream.get_timer() == 2.0 + core.timing.stun_tcp_idle_timeout


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n", b"\x00\x01\x00\x08\x01\x02\x03\x04", b"\x00\x01\x00\x06"])
def test_stream_garbage_closes_the_connection(garbage: bytes) -> None:
    core = basic()
    stream = core.open_stream(CLIENT, A)
    assert stream.receive_data(garbage + stun.binding_request(TX), 0.0) == []
    assert stream.close_reason == "garbage" and stream.get_timer() is None
    assert core.counters["dropped:tcp-garbage"] == 1 and core.counters["tcp-closed:garbage"] == 1
    assert stream.receive_data(stun.binding_request(TX), 0.1) == []


def test_stream_closes_when_idle() -> None:
    core = StunServerCore(A, timing=DEFAULT.replace(stun_tcp_idle_timeout=5.0))
    stream = core.open_stream(CLIENT, A, now=10.0)
    stream.handle_timer(14.9)
    assert stream.close_reason is None
    stream.receive_data(stun.binding_request(TX)[:10], 14.9)
    stream.handle_timer(19.8)
    assert stream.close_reason is None
    stream.handle_timer(19.9)
    assert stream.close_reason == "idle" and core.counters["tcp-closed:idle"] == 1


def test_summary_counts_kinds_errors_and_drops() -> None:
    core = rfc5780()
    core.handle(stun.tailnode_request(TX), CLIENT, A)
    core.handle(STUND_TEST1, CLIENT, A)
    core.handle(stun.binding_request(TX, change_ip=True), CLIENT, A)
    core.handle(Message(Class.REQUEST, Method.ALLOCATE, TX).encode(), CLIENT, A)
    core.handle(b"junk", CLIENT, A)
    core.open_stream(CLIENT, A)
    assert core.summary() == (
        "answered 3 (tailnode 1, classic 1, probes 1), errors 1, dropped 1 (truncated 1), tcp connections 1"
    )


# --- Hypothesis: never raises, every reply well formed -------------------------------------------------------


def assert_well_formed(core: StunServerCore, request: bytes, local: Endpoint, replies: list[Reply]) -> None:
    for reply in replies:
        if reply.data[4:8] == COOKIE:
            msg = stun.decode(reply.data)
            assert stun.verify_fingerprint(reply.data) in (None, True)
            assert msg.txid.raw == request[8:20] and request[4:8] == COOKIE
        else:
            txid16, msg = stun.decode_classic(reply.data)
            assert txid16 == request[4:20]
        assert msg.msg_class in (Class.SUCCESS, Class.ERROR)
        assert reply.from_local in core.local_endpoints or (core.alternate is None and reply.from_local == local)
        if msg.msg_class == Class.SUCCESS:
            assert msg.mapped_endpoint == CLIENT


SEEDS = [  # the first six have neither RESPONSE-PORT nor PADDING
    stun.tailnode_request(TX),
    stun.binding_request(TX),
    stun.binding_request(TX, software="seed", change_ip=True, change_port=True),
    Message(Class.REQUEST, Method.BINDING, TX, (UnknownAttribute(0x0030, b"abc"),)).encode(),
    Message(Class.REQUEST, Method.ALLOCATE, TX).encode(fingerprint=True),
    STUND_TEST1,
    STUND_TEST1[:-1] + b"\x06",
    stun.binding_request(TX, response_port=4000),
    stun.binding_request(TX, padding=12, fingerprint=False),
]


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes] = tuple(SEEDS)) -> bytes:
    """A seed request with 1-4 bit flips, byte changes, cuts, insertions or a fixed-up length."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "length"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and i < len(data):
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "length" and len(data) >= 4:
            data[2:4] = (len(data) - 20 if len(data) >= 20 else 0).to_bytes(2, "big")
    return bytes(data)


@settings(max_examples=300)
@given(
    st.one_of(st.binary(max_size=80), mutated()),
    st.sampled_from([A, AQ, BP, B]),
    st.sampled_from(["udp", "tcp"]),
    st.booleans(),
)
def test_fuzzed_input_never_raises_and_replies_are_well_formed(
    data: bytes, local: Endpoint, transport: str, five: bool
) -> None:
    core = StunServerCore(A, B, tracer=TraceLog()) if five else StunServerCore(local, tracer=TraceLog())
    replies = core.handle(data, CLIENT, local, transport)  # type: ignore[arg-type]
    assert_well_formed(core, data, local, replies)
    drops = [k.removeprefix("dropped:") for k in core.counters if k.startswith("dropped:")]
    assert set(drops) <= set(DROP_REASONS) and sum(core.counters[f"dropped:{r}"] for r in drops) + len(replies) == 1


@settings(max_examples=100)
@given(st.lists(st.one_of(st.binary(max_size=40), mutated()), max_size=6), st.integers(1, 50))
def test_fuzzed_tcp_streams_never_raise(chunks: list[bytes], step: int) -> None:
    core = rfc5780()
    stream = core.open_stream(CLIENT, A)
    data = b"".join(chunks)
    for i in range(0, len(data), step):
        for reply in stream.receive_data(data[i : i + step], float(i)):
            assert stun.decode(reply.data).msg_class in (Class.SUCCESS, Class.ERROR)
            assert reply.to == CLIENT or reply.from_local in core.local_endpoints
