"""The sans-IO WireGuard device drops bad input with a reason and never raises: replays, altered bytes,
unknown indices, stale or flooding initiations, wrong mac1, allowed-IPs violations, malformed
datagrams; Hypothesis mutates valid messages and runs two devices over a hostile network."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.sansio.wgharness import (
    A_EP,
    A_IP,
    B_EP,
    B_IP,
    EPOCH,
    WgNet,
    established,
    held,
    ipv4,
    make_pair,
)
from toolkit.codec import wireguard as wg
from toolkit.crypto import noise
from toolkit.crypto.cookie import write_mac1
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.wireguard import (
    DROP_REASONS,
    WireGuardDevice,
)

INIT, RESP, COOKIE, DATA = 1, 2, 3, 4


# --- drops with reasons ---------------------------------------------------------------------------


def test_replayed_transport_is_dropped() -> None:
    p = established()
    data = held(p, p.a, p.a_to_b(b"once"))
    p.b.receive_datagram(data, A_EP, 1.0)
    p.b.receive_datagram(data, A_EP, 1.0)
    assert p.b.packets_received() == [p.a_to_b(b"once")]
    assert p.b.counters == {"replay": 1}
    assert p.b_log.reasons() == ["replay"]


@pytest.mark.parametrize("offset", [8, 16, -1])  # counter (nonce), first ciphertext byte, tag
def test_flipped_byte_fails_the_tag(offset: int) -> None:
    p = established()
    data = bytearray(held(p, p.a, p.a_to_b(b"integrity")))
    data[offset] ^= 0x01
    p.b.receive_datagram(bytes(data), A_EP, 1.0)
    assert p.b.packets_received() == []
    assert p.b.counters == {"bad-tag": 1}
    assert p.b.peers[p.a_key].endpoint == A_EP


def test_unknown_receiver_index() -> None:
    p = established()
    data = bytearray(held(p, p.a, p.a_to_b()))
    data[4:8] = struct.pack("<I", (struct.unpack_from("<I", data, 4)[0] + 1) % 2**32)
    p.b.receive_datagram(bytes(data), A_EP, 1.0)
    assert p.b.counters == {"unknown-index": 1}


def test_replayed_initiation_has_a_stale_timestamp() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    init = p.net.in_flight[0].data
    p.net.settle()
    p.b.receive_datagram(init, A_EP, 1.0)  # after the flood interval: the timestamp check rejects it
    assert p.b.counters == {"stale-timestamp": 1}
    assert p.b.datagrams_to_send() == []
    assert len(p.b.session_keys()) == 1  # the session was not reset


def test_second_initiation_within_flood_interval() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    p.net.deliver(0)
    later, _ = noise.create_initiation(
        p.a.private_key, p.b_key, ephemeral=bytes(range(32)), now_wall=EPOCH + 1.0, sender_index=7, blur=False
    )
    p.b.receive_datagram(later, A_EP, 0.01)  # newer timestamp, but 10 ms after the last one
    assert p.b.counters == {"handshake-flood": 1}
    p.b.receive_datagram(later, A_EP, 0.05)  # after 20 ms the same message is fine
    assert p.b.counters == {"handshake-flood": 1}
    assert [data[0] for data, _ in p.b.datagrams_to_send()] == [RESP]


def test_wrong_mac1_unknown_peer_and_undecryptable_initiation() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    init = bytearray(p.net.drop_all()[0].data)
    bad_mac = bytearray(init)
    bad_mac[120] ^= 0xFF
    p.b.receive_datagram(bytes(bad_mac), A_EP, 0.0)
    garbled = bytearray(init)
    garbled[50] ^= 0xFF  # inside enc_static; mac1 recomputed so only the AEAD notices
    write_mac1(garbled, p.b_key)
    p.b.receive_datagram(bytes(garbled), A_EP, 0.0)
    stranger, _ = node_key_pair(seed=b"stranger")
    alien, _ = noise.create_initiation(stranger, p.b_key, ephemeral=bytes(32 * [7]), now_wall=EPOCH, sender_index=1)
    p.b.receive_datagram(alien, A_EP, 0.0)
    assert p.b.counters == {"bad-mac1": 1, "bad-initiation": 1, "unknown-peer": 1}
    assert p.b.datagrams_to_send() == [] and p.b.session_keys() == []


def test_bad_and_unexpected_responses() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    p.net.deliver(0)
    resp = p.net.drop_all()[0].data
    garbled = bytearray(resp)
    garbled[44] ^= 1  # enc_empty
    write_mac1(garbled, p.a_key)
    p.a.receive_datagram(bytes(garbled), B_EP, 0.0)
    assert p.a.counters == {"bad-response": 1}
    p.a.receive_datagram(resp, B_EP, 0.0)
    p.a.receive_datagram(resp, B_EP, 0.0)  # its index now names a keypair, not a pending handshake
    assert p.a.counters == {"bad-response": 1, "unknown-index": 1}
    assert len(p.a.session_keys()) == 1


def test_cookie_reply_drops() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    index = struct.unpack_from("<I", p.net.in_flight[0].data, 4)[0]
    forged = wg.CookieReply(index, bytes(24), bytes(32)).encode()
    p.a.receive_datagram(forged, B_EP, 0.0)
    p.a.receive_datagram(wg.CookieReply(index ^ 1, bytes(24), bytes(32)).encode(), B_EP, 0.0)
    assert p.a.counters == {"bad-cookie": 1, "unknown-index": 1}


def test_inner_source_must_be_in_allowed_ips() -> None:
    p = established()
    spoofed = ipv4("10.0.0.99", B_IP, b"spoof")  # A routes it by destination; B checks the source
    p.net.send(p.a, spoofed)
    assert p.net.received(p.b) == []
    assert p.b.counters == {"allowed-ips": 1}
    assert p.b_log.of_kind("dropped")[-1].raw == spoofed


def test_inner_packet_that_is_not_ip() -> None:
    p = established()
    kp = p.a.peers[p.b_key].keypairs.current
    assert kp is not None
    for counter, plain in enumerate([b"\x00" * 16, ipv4(A_IP, B_IP, b"x")[:16], b"\x45\x00\xff\xff" + bytes(28)]):
        p.b.receive_datagram(noise.seal_transport(kp.keys, 100 + counter, plain), A_EP, 1.0)
    assert p.b.counters == {"bad-ip-packet": 3}
    assert p.b.packets_received() == []


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"\x01\x00\x00", "truncated"),
        (b"\x05\x00\x00\x00" + bytes(60), "unknown-type"),
        (b"\x01\x00\x00\x01" + bytes(144), "unknown-type"),
        (b"\x01\x00\x00\x00" + bytes(100), "truncated"),
        (b"\x02\x00\x00\x00" + bytes(100), "bad-length"),
        (b"\x04\x00\x00\x00" + bytes(20), "truncated"),
        (b"\x04\x00\x00\x00" + bytes(65536), "oversized"),
    ],
)
def test_malformed_datagrams(data: bytes, reason: str) -> None:
    p = established()
    p.b.receive_datagram(data, A_EP, 1.0)
    assert p.b.counters == {reason: 1}
    assert reason in DROP_REASONS


def test_send_side_drops() -> None:
    p = make_pair(b_knows_a_endpoint=False)
    p.a.send_packet(ipv4(A_IP, "10.9.9.9"), 0.0)  # nobody routes it
    p.a.send_packet(b"\x60\x00", 0.0)  # not an IP packet
    p.a.send_packet(b"", 0.0)
    p.a.send_packet(ipv4(A_IP, B_IP, bytes(65504 - 20)), 0.0)
    p.b.send_packet(p.b_to_a(), 0.0)  # B does not know where A is yet
    assert p.a.counters == {"no-route": 1, "bad-ip-packet": 2, "oversized": 1}
    assert p.b.counters == {"no-endpoint": 1}
    assert p.a.datagrams_to_send() == [] and p.b.datagrams_to_send() == []


def test_staged_queue_is_bounded() -> None:
    p = make_pair()
    for i in range(130):
        p.a.send_packet(p.a_to_b(b"%d" % i), 0.0)
    assert p.a.counters == {"staged-overflow": 2}
    p.net.pump()
    assert [d.type for d in p.net.in_flight] == [INIT]  # one initiation: the rest are rate-limited
    p.net.settle()
    assert p.net.received(p.b) == [p.a_to_b(b"%d" % i) for i in range(2, 130)]


# --- robustness -----------------------------------------------------------------------------------


@settings(max_examples=300)
@given(data=st.binary(max_size=200), prefix=st.sampled_from([b"", b"\x01\x00\x00\x00", b"\x02\x00\x00\x00", b"\x03\x00\x00\x00", b"\x04\x00\x00\x00"]))  # fmt: skip
def test_arbitrary_bytes_never_raise(data: bytes, prefix: bytes) -> None:
    p = _ESTABLISHED
    p.b.receive_datagram(prefix + data, A_EP, 1.0)
    assert p.b.packets_received() == []
    assert sum(p.b.counters.values()) >= 1 and set(p.b.counters) <= set(DROP_REASONS) | {"cookie-reply-sent"}
    p.b.counters.clear()


_ESTABLISHED = established()


def _about_to_receive(which: int) -> tuple[WireGuardDevice, bytes]:
    """A fresh (deterministic) pair brought to the point where a device receives datagram ``which``
    (0 initiation -> B, 1 response -> A, 2 cookie reply -> A, 3 transport -> B), and that datagram."""
    p = make_pair()
    p.b.force_under_load = which == 2
    p.net.send(p.a, p.a_to_b(), deliver=False)
    if which in (0, 2):
        p.net.deliver(0) if which == 2 else None
        return (p.b, p.net.drop_all()[0].data) if which == 0 else (p.a, p.net.drop_all()[0].data)
    p.net.deliver(0)
    if which == 1:
        return p.a, p.net.drop_all()[0].data
    p.net.deliver(0)
    return p.b, p.net.drop_all()[0].data


@pytest.mark.parametrize("which", range(4))
def test_unmutated_datagrams_are_accepted(which: int) -> None:
    dev, data = _about_to_receive(which)
    dev.receive_datagram(data, B_EP if dev.name == "A" else A_EP, 0.0)
    assert not dev.counters
    assert len(dev.packets_received()) == (1 if which == 3 else 0)


@settings(max_examples=200)
@given(which=st.integers(0, 3), flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), min_size=1, max_size=4))  # fmt: skip
def test_mutated_datagrams_are_dropped_with_one_reason(which: int, flips: list[tuple[int, int]]) -> None:
    """Every byte of a message is checked (mac2 is not, when not under load): a mutated handshake,
    cookie or transport message is dropped and counted once, never delivered, and changes no keys."""
    dev, original = _about_to_receive(which)
    data = bytearray(original)
    span = len(data) - 16 if which in (0, 1) else len(data)
    for pos, xor in flips:
        data[pos % span] ^= xor
    assume(bytes(data) != original)
    keys = dev.session_keys()
    dev.receive_datagram(bytes(data), B_EP if dev.name == "A" else A_EP, 0.0)
    assert dev.packets_received() == []
    assert sum(dev.counters.values()) == 1 and set(dev.counters) <= set(DROP_REASONS)
    assert dev.session_keys() == keys


@st.composite
def _ops(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    kinds = st.sampled_from(["send-a", "send-b", "deliver", "deliver", "drop", "dup", "corrupt", "advance"])
    return draw(st.lists(st.tuples(kinds, st.integers(0, 1000), st.integers(0, 255)), max_size=60))


@settings(max_examples=150)
@given(ops=_ops())
def test_random_network_never_corrupts_or_duplicates(ops: list[tuple[str, int, int]]) -> None:
    """Sends, deliveries in any order, drops, duplicates, corruption and time: nothing raises, every
    delivered packet was sent by the other side and is delivered at most once; afterwards a perfect
    network carries traffic both ways again within a minute."""
    p = make_pair(seed=7)
    net: WgNet = p.net
    sent: dict[str, set[bytes]] = {"a": set(), "b": set()}
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    seq = 0

    def send(side: str, size: int) -> None:
        nonlocal seq
        seq += 1
        payload = struct.pack("!I", seq) + bytes(size % 300)
        packet = p.a_to_b(payload) if side == "a" else p.b_to_a(payload)
        sent[side].add(packet)
        net.send(p.a if side == "a" else p.b, packet, deliver=False)

    def collect() -> None:
        got["b"] += net.received(p.b)
        got["a"] += net.received(p.a)

    for kind, x, y in ops:
        if kind in ("send-a", "send-b"):
            send(kind[-1], x)
        elif kind == "advance":
            net.advance(x / 40, deliver=False)
        elif net.in_flight:
            i = x % len(net.in_flight)
            if kind == "deliver":
                net.deliver(i)
            elif kind == "drop":
                net.in_flight.pop(i)
            elif kind == "dup":
                net.in_flight.append(net.in_flight[i])
            else:
                d = net.in_flight[i]
                flipped = bytearray(d.data)
                flipped[y % len(flipped)] ^= 1 + y % 255
                d.data = bytes(flipped)
        collect()
    for side, other in (("a", "b"), ("b", "a")):
        assert set(got[other]) <= sent[side]
        assert len(got[other]) == len(set(got[other]))
    # liveness: with a perfect network, fresh packets get through within a minute (A and B take turns:
    # initiations crossing at the very same instant, every time, would collide forever, as in wireguard-go)
    for _ in range(60):
        for side in "ab":
            send(side, 1)
            net.settle()
            net.advance(0.5)
    collect()
    last_a, last_b = max(sent["a"], key=_seq), max(sent["b"], key=_seq)
    assert last_a in got["b"] and last_b in got["a"]


def _seq(packet: bytes) -> int:
    return int(struct.unpack_from("!I", packet, 20)[0])
