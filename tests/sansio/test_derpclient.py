"""The sans-IO DERP client core, driven by server bytes built from the codec and crypto (protocols.md §2):
the upgrade and handshake (also split at every byte boundary), automatic Pongs, RTTs, events of the
control frames, skipped frames, the send path and the token bucket."""

from __future__ import annotations

import pytest

from tests.sansio.derpclientwire import (
    CLIENT_PUB,
    EXPECTED,
    PEER,
    SERVER_PRIV,
    SERVER_PUB,
    connected,
    frames,
    hello,
    make,
    server_info,
    stream,
)
from toolkit.codec import derp
from toolkit.crypto.derp import open_client_info
from toolkit.sansio.derpclient import State
from toolkit.sansio.derpevents import (
    DROP_REASONS,
    Connected,
    HealthChanged,
    PacketReceived,
    PeerGoneReceived,
    PeerPresentReceived,
    PingReceived,
    PongReceived,
    RestartingReceived,
)
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint


def test_start_queues_the_upgrade_request() -> None:
    client = make()
    assert client.data_to_send() == derp.upgrade_request("derp.test")
    assert client.state is State.AWAITING_UPGRADE
    assert client.get_timer() == DEFAULT.derp_handshake_timeout


def test_handshake_sends_sealed_client_info_and_connects() -> None:
    client = make(preferred=True, watch_conns=True)
    client.data_to_send()
    client.receive_data(hello(), 0.05)
    assert client.state is State.AWAITING_SERVER_INFO
    sent = frames(client.data_to_send())
    assert [type(f) for f in sent] == [derp.ClientInfo, derp.NotePreferred, derp.WatchConns]
    info = sent[0]
    assert isinstance(info, derp.ClientInfo) and info.key == CLIENT_PUB
    assert open_client_info(info, SERVER_PRIV).to_json() == b'{"version":2,"CanAckPings":true}'
    assert sent[1] == derp.NotePreferred(True)
    client.receive_data(server_info(), 0.1)
    assert client.state is State.CONNECTED
    assert client.take_events() == [Connected(SERVER_PUB, derp.ServerInfoJSON())]
    assert client.server_key == SERVER_PUB and client.header_key == SERVER_PUB
    assert client.get_timer() == pytest.approx(0.1 + DEFAULT.derp_client_read_timeout)


def test_stream_split_at_every_byte_boundary() -> None:
    data = stream()
    reference = make()
    reference.receive_data(data, 1.0)
    assert reference.take_events() == EXPECTED
    want_out = reference.data_to_send()
    for cut in range(1, len(data)):
        client = make()
        client.receive_data(data[:cut], 1.0)
        client.receive_data(data[cut:], 1.0)
        assert client.take_events() == EXPECTED, cut
        assert client.data_to_send() == want_out, cut
        assert client.counters["unknown-frame"] == 1


def test_stream_one_byte_at_a_time() -> None:
    client = make()
    for b in stream():
        client.receive_data(bytes([b]), 1.0)
    assert client.take_events() == EXPECTED
    assert client.packets_received == 2 and client.bytes_received == 5


def test_ping_is_answered_with_pong() -> None:
    client = connected()
    client.receive_data(derp.Ping(b"12345678" + b"x" * 20).encode(), 1.0)
    assert frames(client.data_to_send()) == [derp.Pong(b"12345678")]
    assert client.take_events() == [PingReceived(b"12345678" + b"x" * 20)]


def test_our_ping_gets_an_rtt() -> None:
    client = connected()
    assert client.send_ping(b"abcdefgh", 1.0)
    assert frames(client.data_to_send()) == [derp.Ping(b"abcdefgh")]
    client.receive_data(derp.Pong(b"abcdefgh").encode() + derp.Pong(b"zzzzzzzz").encode(), 1.25)
    assert client.take_events() == [PongReceived(b"abcdefgh", 0.25), PongReceived(b"zzzzzzzz", None)]


def test_control_frames_become_events() -> None:
    client = connected()
    ep = Endpoint.parse("192.0.2.1:41641")
    data = (
        derp.PeerPresent(PEER, ep, derp.PeerPresentFlags.REGULAR).encode()
        + derp.PeerGone(PEER).encode()
        + derp.Health("overloaded").encode()
        + derp.Health("").encode()
        + derp.Restarting(1500, 20000).encode()
    )
    client.receive_data(data, 2.0)
    assert client.take_events() == [
        PeerPresentReceived(PEER, ep, derp.PeerPresentFlags.REGULAR),
        PeerGoneReceived(PEER, derp.PeerGoneReason.DISCONNECTED),
        HealthChanged("overloaded"),
        HealthChanged(""),
        RestartingReceived(1.5, 20.0),
    ]
    assert client.state is State.CONNECTED


def test_malformed_and_client_only_frames_are_skipped_and_counted() -> None:
    client = connected()
    bad_peer_gone = derp.frame_header(derp.FrameType.PEER_GONE, 10) + b"\x00" * 10
    client_only = derp.SendPacket(PEER, b"nope").encode()
    client.receive_data(bad_peer_gone + client_only + derp.RecvPacket(PEER, b"after").encode(), 2.0)
    assert client.take_events() == [PacketReceived(PEER, b"after")]
    assert client.counters["bad-frame"] == 1 and client.counters["unexpected-frame"] == 1
    assert client.state is State.CONNECTED


def test_send_packet_bytes_match_the_codec() -> None:
    client = connected()
    assert client.send_packet(PEER, b"\x01" * 100)
    assert client.send_packet(PEER, b"")
    want = derp.SendPacket(PEER, b"\x01" * 100).encode() + derp.SendPacket(PEER, b"").encode()
    assert client.pending_bytes == len(want)
    assert client.data_to_send() == want
    assert client.data_to_send() == b""
    assert (client.packets_sent, client.bytes_sent) == (2, 100)


def test_sends_before_client_info_and_too_large_are_dropped() -> None:
    client = make()
    assert not client.send_packet(PEER, b"early")
    assert not client.send_ping(b"12345678", 0.0)
    client.receive_data(hello() + server_info(), 0.1)
    assert not client.send_packet(PEER, b"x" * (derp.MAX_PACKET_SIZE + 1))
    assert client.send_packet(PEER, b"x" * derp.MAX_PACKET_SIZE)
    assert client.counters == {"not-connected": 2, "too-large": 1}
    assert set(client.counters) <= set(DROP_REASONS)


def test_packets_may_follow_client_info_before_server_info() -> None:
    client = make()
    client.receive_data(hello(), 0.1)
    client.data_to_send()
    assert client.send_packet(PEER, b"early but fine")
    assert frames(client.data_to_send()) == [derp.SendPacket(PEER, b"early but fine")]


def test_token_bucket_from_server_info() -> None:
    client = make()
    info = derp.ServerInfoJSON(token_bucket_bytes_per_second=1000, token_bucket_bytes_burst=300)
    client.receive_data(hello() + server_info(info), 0.0)
    assert client.server_info == info
    client.data_to_send()
    # each 100-byte packet costs 5 + 32 + 100 = 137 bytes of the 300-byte burst
    assert client.send_packet(PEER, b"a" * 100, 10.0)
    assert client.send_packet(PEER, b"b" * 100, 10.0)
    assert not client.send_packet(PEER, b"c" * 100, 10.0)
    assert client.counters["rate-limited"] == 1
    assert not client.send_packet(PEER, b"d" * 100, 10.1)  # 26 + 100 = 126 < 137
    assert client.send_packet(PEER, b"e" * 100, 10.2)  # 126 + 100 = 226
    sent = frames(client.data_to_send())
    assert [f.packet[:1] for f in sent if isinstance(f, derp.SendPacket)] == [b"a", b"b", b"e"]


def test_no_token_bucket_without_a_rate() -> None:
    client = connected()
    assert client.bucket is None
    assert all(client.send_packet(PEER, b"x" * 1000, 1.0) for _ in range(1000))
