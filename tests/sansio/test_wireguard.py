"""The sans-IO WireGuard device, two cores against each other in memory (design.md §6): handshake,
key confirmation, transport, cookies under load, drops with reasons, roaming, configuration."""

from __future__ import annotations

import struct

import pytest

from tests.sansio.wgharness import (
    A_EP,
    A_IP,
    B_EP,
    B_IP,
    EPOCH,
    established,
    events,
    held,
    ipv4,
    ipv6,
    make_pair,
    of_type,
)
from toolkit.codec import wireguard as wg
from toolkit.crypto.keys import node_key_pair, scalarmult_base
from toolkit.errors import UsageError
from toolkit.sansio.wireguard import (
    CookieReceived,
    HandshakeCompleted,
    HandshakeInitiated,
    KeypairConfirmed,
    PeerEndpointChanged,
    PeerRemoved,
)
from toolkit.types import Endpoint

INIT, RESP, COOKIE, DATA = 1, 2, 3, 4


# --- handshake and transport ----------------------------------------------------------------------


def test_first_packet_triggers_handshake_and_arrives_decrypted() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(b"ping"), deliver=False)
    [init] = p.net.in_flight
    assert (init.src, init.dst, init.type, len(init.data)) == (A_EP, B_EP, INIT, wg.INITIATION_LEN)
    assert p.net.settle() == 3  # initiation, response, the staged packet
    assert p.net.received(p.b) == [p.a_to_b(b"ping")]
    assert [d.type for d in p.net.sent_log] == [INIT, RESP, DATA]
    a_events, b_events = events(p.a), events(p.b)
    assert [type(e) for e in a_events] == [HandshakeInitiated, HandshakeCompleted]
    assert [type(e) for e in b_events] == [HandshakeCompleted, KeypairConfirmed]
    done_a, done_b = a_events[1], b_events[0]
    assert (done_a.role, done_b.role) == ("initiator", "responder")
    assert (done_a.local_index, done_a.remote_index) == (done_b.remote_index, done_b.local_index)
    assert done_a.local_index == a_events[0].local_index  # the initiation's index now names the keypair
    assert not p.a.counters and not p.b.counters


def test_both_directions_ipv4_and_ipv6() -> None:
    p = established()
    packets = [ipv6("fd00::1", "fd00::2", b"six"), ipv4(A_IP, B_IP, b"four")]
    for packet in packets:
        p.net.send(p.a, packet)
    p.net.send(p.b, ipv6("fd00::2", "fd00::1", b"back"))
    assert p.net.received(p.b) == packets
    assert p.net.received(p.a) == [ipv6("fd00::2", "fd00::1", b"back")]


def test_responder_sends_only_after_key_confirmation() -> None:
    """Whitepaper §5.4.6: B may not use its `next` keypair until A's first transport packet arrives."""
    p = make_pair()
    net = p.net
    net.send(p.a, p.a_to_b(b"first"), deliver=False)
    net.deliver(0)  # B consumes the initiation; its response is in flight
    b_peer = p.b.peers[p.a_key]
    fresh = b_peer.keypairs.next
    assert fresh is not None and b_peer.keypairs.current is None
    net.send(p.b, p.b_to_a(b"early"), deliver=False)
    assert [d.type for d in net.in_flight] == [RESP]  # no transport from B: the packet waits
    assert list(b_peer.staged) == [p.b_to_a(b"early")]
    assert fresh.send_counter == 0
    net.deliver(0)  # A consumes the response and sends its staged packet with the new keys
    [a_data] = net.in_flight
    assert a_data.type == DATA and struct.unpack_from("<I", a_data.data, 4)[0] == fresh.local_index
    net.deliver(0)  # B confirms the keys and flushes its staged packet
    assert b_peer.keypairs.current is fresh and b_peer.keypairs.next is None
    [b_data] = net.in_flight
    assert b_data.type == DATA and struct.unpack_from("<IQ", b_data.data, 4) == (fresh.remote_index, 0)
    net.settle()
    assert net.received(p.a) == [p.b_to_a(b"early")]
    assert net.received(p.b) == [p.a_to_b(b"first")]
    assert p.b.peer_status()[0].last_handshake == EPOCH  # set at confirmation, as wireguard-go does


def test_initiator_sends_keepalive_when_nothing_is_staged() -> None:
    """After a handshake started by a timer (no data staged), A sends a keepalive so B can confirm."""
    p = make_pair(keepalive_a=25)
    p.net.advance(0.0)  # the persistent keepalive is due at once and starts the handshake
    assert [(d.type, len(d.data)) for d in p.net.sent_log] == [(INIT, 148), (RESP, 92), (DATA, 32)]
    assert p.b.peers[p.a_key].keypairs.current is not None
    assert p.net.received(p.b) == []


def test_ping_pong_many_packets_and_byte_counters() -> None:
    p = established()
    for i in range(150):
        p.net.send(p.a, p.a_to_b(b"ping %d" % i))
        p.net.send(p.b, p.b_to_a(b"pong %d" % i))
    assert p.net.received(p.b) == [p.a_to_b(b"ping %d" % i) for i in range(150)]
    assert p.net.received(p.a) == [p.b_to_a(b"pong %d" % i) for i in range(150)]
    a, b = p.a.peer_status()[0], p.b.peer_status()[0]
    # wire bytes of every authenticated message, like wireguard-go (a perfect network: sent == received)
    assert a.tx_bytes == b.rx_bytes == sum(len(d.data) for d in p.net.sent_by(p.a))
    assert b.tx_bytes == a.rx_bytes == sum(len(d.data) for d in p.net.sent_by(p.b))
    assert not p.a.counters and not p.b.counters


@pytest.mark.parametrize(
    ("size", "wire"), [(21, 32 + 32), (32, 32 + 32), (33, 32 + 48), (1415, 32 + 1420), (1420, 32 + 1420)]
)
def test_padding_to_16_capped_at_mtu(size: int, wire: int) -> None:
    p = established()
    packet = ipv4(A_IP, B_IP, bytes(size - 20))
    data = held(p, p.a, packet)
    assert len(data) == wire
    p.b.receive_datagram(data, A_EP, p.net.now)
    assert p.b.packets_received() == [packet]  # trimmed back to the IP length


def test_preshared_key_handshake_and_mismatch() -> None:
    psk = bytes(range(32))
    p = make_pair(psk=psk)
    p.net.send(p.a, p.a_to_b())
    assert p.net.received(p.b) == [p.a_to_b()]
    assert p.a.peer_status()[0].preshared_key == psk
    q = make_pair()
    q.a.add_peer(q.b_key, preshared_key=psk, allowed_ips=[f"{B_IP}/32"])  # B has no PSK
    q.net.send(q.a, q.a_to_b())
    assert q.a.counters == {"bad-response": 1}
    assert q.net.received(q.b) == []


def test_session_keys_match_across_devices_and_export_wireshark_secrets() -> None:
    p = make_pair()
    p.net.send(p.a, p.a_to_b(), deliver=False)
    init = p.net.deliver(0)
    resp = p.net.deliver(0)
    p.net.settle()
    [ka], [kb] = p.a.session_keys(), p.b.session_keys()
    assert (ka.slot, kb.slot, ka.is_initiator, kb.is_initiator) == ("current", "current", True, False)
    assert (ka.local_index, ka.remote_index) == (kb.remote_index, kb.local_index)
    assert (ka.send_key, ka.recv_key) == (kb.recv_key, kb.send_key)
    assert ka.created == kb.created == EPOCH
    assert ka.peer == p.b_key and kb.peer == p.a_key
    assert ka.local_static_private == p.a.private_key.raw and ka.remote_static_public == p.b_key.raw
    assert scalarmult_base(ka.local_ephemeral_private) == init.data[8:40]  # Wireshark re-derives these
    assert scalarmult_base(kb.local_ephemeral_private) == resp.data[12:44]
    assert ka.preshared_key is None


def test_crossing_initiations_resolve_by_jittered_retransmission() -> None:
    """Both sides initiate at once: each answers the other's initiation, which discards its own
    (wireguard-go CreateMessageResponse), so neither completes; the jittered retransmissions do."""
    p = make_pair()
    p.net.send(p.a, p.a_to_b(b"from a"), deliver=False)
    p.net.send(p.b, p.b_to_a(b"from b"), deliver=False)
    p.net.settle()
    assert p.a.counters == p.b.counters == {"unknown-index": 1}
    assert p.net.received(p.a) == p.net.received(p.b) == []
    p.net.advance(5.0 + p.a.timing.rekey_timeout_jitter_max)
    assert p.net.received(p.b) == [p.a_to_b(b"from a")]
    assert p.net.received(p.a) == [p.b_to_a(b"from b")]


# --- cookies under load ---------------------------------------------------------------------------


def test_cookie_reply_round_trip_then_mac2_is_accepted() -> None:
    p = make_pair()
    p.b.force_under_load = True
    p.net.send(p.a, p.a_to_b(b"under load"), deliver=False)
    first = p.net.deliver(0)
    assert first.data[132:148] == bytes(16)  # no cookie yet: mac2 is zero
    [reply] = p.net.in_flight
    assert (reply.src, reply.dst, reply.type, len(reply.data)) == (B_EP, A_EP, COOKIE, wg.COOKIE_REPLY_LEN)
    assert p.b.counters == {"cookie-required": 1, "cookie-reply-sent": 1}
    assert p.b.peers[p.a_key].keypairs.next is None  # no handshake work was done
    p.net.deliver(0)
    assert of_type(events(p.a), CookieReceived)
    p.net.advance(5.4)  # the retransmission carries mac2 and is accepted while B is still under load
    retry = p.net.sent_by(p.a, INIT)[-1]
    assert retry.data[132:148] != bytes(16)
    assert p.net.received(p.b) == [p.a_to_b(b"under load")]
    assert p.b.counters == {"cookie-required": 1, "cookie-reply-sent": 1}


def test_under_load_rule_counts_handshakes_per_second() -> None:
    p = make_pair()
    p.b.load_threshold = 2
    p.net.send(p.a, p.a_to_b(), deliver=False)
    init = p.net.in_flight[0].data
    p.net.deliver(0)  # 1 handshake message in the last second: processed
    p.net.drop_all()
    p.net.now = 0.1
    p.b.receive_datagram(init, A_EP, 0.1)  # the 2nd within a second: under load, no mac2 -> cookie
    assert p.b.counters["cookie-required"] == 1
    assert p.b.under_load(0.5) and p.b.under_load(1.05)  # stays under load 1 s after detection
    assert not p.b.under_load(1.2)


# --- endpoints and roaming ------------------------------------------------------------------------


def test_responder_learns_endpoint_from_initiation() -> None:
    p = make_pair(b_knows_a_endpoint=False)
    p.net.send(p.a, p.a_to_b())
    assert p.b.peer_status()[0].endpoint == A_EP
    changed = of_type(events(p.b), PeerEndpointChanged)
    assert [(e.old, e.new) for e in changed] == [(None, A_EP)]


def test_roaming_updates_endpoint_only_after_authentication() -> None:
    p = established()
    moved = Endpoint.parse("203.0.113.9:40000")
    forged = bytearray(held(p, p.a, p.a_to_b(b"x")))
    forged[-1] ^= 1
    p.b.receive_datagram(bytes(forged), moved, 1.0)
    assert p.b.peers[p.a_key].endpoint == A_EP
    p.net.send(p.a, p.a_to_b(b"from a new place"), deliver=False)
    p.net.deliver(0, src=moved)
    assert p.net.received(p.b) == [p.a_to_b(b"from a new place")]
    assert p.b.peer_status()[0].endpoint == moved
    assert [(e.old, e.new) for e in of_type(events(p.b), PeerEndpointChanged)] == [(A_EP, moved)]
    p.net.send(p.b, p.b_to_a(b"follow"), deliver=False)
    assert [d.dst for d in p.net.in_flight] == [moved]


# --- configuration --------------------------------------------------------------------------------


def test_add_peer_updates_and_validates() -> None:
    p = established()
    before = p.a.peer_status()[0]
    p.a.add_peer(p.b_key, allowed_ips=["10.0.0.0/24", "10.0.0.7/8"], persistent_keepalive=0)
    after = p.a.peer_status()[0]
    assert after.allowed_ips == ["10.0.0.0/8", "10.0.0.0/24"]
    assert after.endpoint == B_EP and after.rx_bytes == before.rx_bytes and after.tx_bytes == before.tx_bytes
    assert after.persistent_keepalive is None and after.preshared_key is None
    with pytest.raises(UsageError):
        p.a.add_peer(p.b_key, allowed_ips=["10.0.0.300/8"])
    with pytest.raises(UsageError):
        p.a.add_peer(p.b_key, preshared_key=b"short")
    with pytest.raises(UsageError):
        p.a.set_peer_endpoint(node_key_pair(seed=b"nobody")[1], B_EP)
    assert p.a.peer_status()[0].allowed_ips == ["10.0.0.0/8", "10.0.0.0/24"]  # a failed update changed nothing


def test_persistent_keepalive_is_due_at_once_when_turned_on() -> None:
    p = established()
    p.net.advance(3.0)
    before = len(p.net.sent_by(p.a))
    p.a.add_peer(p.b_key, allowed_ips=[f"{B_IP}/32"], persistent_keepalive=25)
    due = p.a.get_timer()
    assert due is not None and due <= p.net.now
    p.net.advance(0.0)
    [keepalive] = p.net.sent_by(p.a)[before:]
    assert (keepalive.type, len(keepalive.data), keepalive.at) == (DATA, 32, 3.0)
    assert p.a.get_timer() == 28.0


def test_remove_peer_frees_its_indices() -> None:
    p = established()
    data = held(p, p.a, p.a_to_b())
    p.b.remove_peer(p.a_key)
    p.b.remove_peer(p.a_key)  # unknown keys are ignored
    assert of_type(events(p.b), PeerRemoved) == [PeerRemoved(p.a_key)]
    p.b.receive_datagram(data, A_EP, 1.0)
    assert p.b.counters == {"unknown-index": 1}
    assert p.b.peer_status() == [] and p.b.session_keys() == [] and p.b.get_timer() is None


def test_set_private_key_expires_sessions() -> None:
    p = established()
    new_priv, new_pub = node_key_pair(seed=b"new a")
    p.a.set_private_key(new_priv)
    assert p.a.public_key == new_pub
    p.net.send(p.a, p.a_to_b(b"after"), deliver=False)
    assert [d.type for d in p.net.in_flight] == [INIT]  # the old keys no longer send
    p.net.settle()
    assert p.b.counters == {"unknown-peer": 1}  # B still knows A's old key
    p.b.add_peer(new_pub, allowed_ips=[f"{A_IP}/32"])
    p.a.set_private_key(p.b.private_key)  # a peer with our own key is removed, as in wireguard-go
    assert p.a.peer_status() == []
