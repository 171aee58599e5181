"""DERP frame layers against the codec, and the TCP reassembler over arbitrary segmentations."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import derp as codec
from toolkit.packets import derp as layer
from toolkit.packets.derp import DERPFrame, DERPReassembler, DERPStream
from toolkit.packets.disco import Disco
from toolkit.types import Endpoint, NodePublicKey

KEY = NodePublicKey(bytes(range(32)))
KEY2 = NodePublicKey(bytes(range(32, 64)))
DISCO = b"TS\xf0\x9f\x92\xac" + bytes(32 + 24 + 16 + 20)
FRAMES: dict[str, codec.Frame] = {
    "server_key": codec.ServerKey(KEY),
    "server_key_extra": codec.ServerKey(KEY, b"more"),
    "client_info": codec.ClientInfo(KEY, bytes(24), b"\x01" * 48),
    "server_info": codec.ServerInfo(bytes(24), b"\x02" * 30),
    "send_packet": codec.SendPacket(KEY, DISCO),
    "recv_packet": codec.RecvPacket(KEY, b"\x04\x00\x00\x00" + bytes(28)),
    "keep_alive": codec.KeepAlive(),
    "note_preferred": codec.NotePreferred(True),
    "peer_gone": codec.PeerGone(KEY, codec.PeerGoneReason.NOT_HERE),
    "peer_present_key": codec.PeerPresent(KEY),
    "peer_present_ep": codec.PeerPresent(KEY, Endpoint.parse("1.2.3.4:567")),
    "peer_present_flags": codec.PeerPresent(KEY, Endpoint.parse("[2001:db8::1]:9"), codec.PeerPresentFlags(5), b"x"),
    "forward_packet": codec.ForwardPacket(KEY, KEY2, b"\x04\x00\x00\x00" + bytes(28)),
    "watch_conns": codec.WatchConns(),
    "close_peer": codec.ClosePeer(KEY),
    "ping": codec.Ping(bytes(range(1, 9))),
    "pong": codec.Pong(bytes(range(1, 9))),
    "health": codec.Health("BAD"),
    "health_ok": codec.Health(""),
    "restarting": codec.Restarting(1, 2),
}


def layer_frame(f: codec.Frame) -> DERPFrame:
    """The layer built from fields (header type only; length left to the layer)."""
    body: object
    match f:
        case codec.ServerKey(key=key, extra=extra):
            body = layer.DERPServerKey(key=key.raw, extra=extra)
        case codec.ClientInfo(key=key, nonce=nonce, box=box):
            body = layer.DERPClientInfo(key=key.raw, nonce=nonce, box=box)
        case codec.ServerInfo(nonce=nonce, box=box):
            body = layer.DERPServerInfo(nonce=nonce, box=box)
        case codec.SendPacket(dst=dst, packet=packet):
            body = layer.DERPSendPacket(dst=dst.raw) / packet
        case codec.RecvPacket(src=src, packet=packet):
            body = layer.DERPRecvPacket(src=src.raw) / packet
        case codec.ForwardPacket(src=src, dst=dst, packet=packet):
            body = layer.DERPForwardPacket(src=src.raw, dst=dst.raw) / packet
        case codec.KeepAlive() | codec.WatchConns():
            return DERPFrame(type=f.frame_type)
        case codec.NotePreferred(preferred=pref):
            body = layer.DERPNotePreferred(preferred=int(pref))
        case codec.PeerGone(key=key, reason=reason):
            body = layer.DERPPeerGone(key=key.raw, reason=int(reason))
        case codec.PeerPresent(key=key, endpoint=ep, flags=flags, extra=extra):
            fields: dict[str, object] = {"key": key.raw}
            if ep is not None:
                fields.update(ip=str(ep.ip), port=ep.port)
            if flags is not None:
                fields.update(flags=int(flags), extra=extra)
            body = layer.DERPPeerPresent(**fields)
        case codec.ClosePeer(key=key):
            body = layer.DERPClosePeer(key=key.raw)
        case codec.Ping(data=data):
            body = layer.DERPPing(data=data)
        case codec.Pong(data=data):
            body = layer.DERPPong(data=data)
        case codec.Health(problem=problem):
            if not problem:
                return DERPFrame(type=f.frame_type)
            body = layer.DERPHealth(problem=problem.encode())
        case codec.Restarting(reconnect_in_ms=a, try_for_ms=b):
            body = layer.DERPRestarting(reconnect_in_ms=a, try_for_ms=b)
        case _:
            raise AssertionError(f)
    return DERPFrame(type=f.frame_type) / body  # type: ignore[operator]


@pytest.mark.parametrize("name", list(FRAMES))
def test_layer_and_codec_give_the_same_bytes(name: str) -> None:
    frame = FRAMES[name]
    wire = frame.encode()
    assert bytes(layer_frame(frame)) == wire
    pkt = DERPFrame(wire)
    assert bytes(pkt) == wire
    assert pkt.to_codec() == frame
    assert pkt.mysummary() == frame.summary()


@pytest.mark.parametrize(
    ("frame", "golden"),
    [  # protocols.md §2.2 (derp_test.go, client_test.go)
        (DERPFrame(type=4, length=1024), "0400000400"),
        (DERPFrame(type=6), "0600000000"),
        (DERPFrame(type=5, length=0xFFFFFFFF), "05ffffffff"),
        (DERPFrame(type=0x12) / layer.DERPPing(data=bytes(range(1, 9))), "120000000801020304050607" + "08"),
        (DERPFrame(type=0x13) / layer.DERPPong(data=bytes(range(1, 9))), "130000000801020304050607" + "08"),
        (DERPFrame(type=0x14) / layer.DERPHealth(problem=b"BAD"), "1400000003424144"),
        (DERPFrame(type=0x14), "1400000000"),
        (DERPFrame(type=0x15) / layer.DERPRestarting(reconnect_in_ms=1, try_for_ms=2), "15000000080000000100000002"),
    ],
)
def test_golden_frame_bytes(frame: DERPFrame, golden: str) -> None:
    assert bytes(frame).hex() == golden


def test_packets_inside_frames_are_dissected_by_content() -> None:
    pkt = DERPFrame(FRAMES["send_packet"].encode())
    assert pkt.haslayer(Disco)
    assert "WireGuard Transport" in DERPFrame(FRAMES["recv_packet"].encode()).summary()


def test_stream_layer_dissects_consecutive_frames() -> None:
    wire = b"".join(f.encode() for f in FRAMES.values())
    stream = DERPStream(wire)
    assert len(stream.frames) == len(FRAMES)
    assert bytes(stream) == wire
    assert [f.to_codec() for f in stream.frames] == list(FRAMES.values())


# --- reassembly ----------------------------------------------------------------------------------

C, S = Endpoint.parse("192.168.1.10:50000"), Endpoint.parse("203.0.113.5:443")
CLIENT_BYTES = codec.upgrade_request("derp.example") + b"".join(
    f.encode() for f in (FRAMES["client_info"], FRAMES["send_packet"], FRAMES["note_preferred"], FRAMES["ping"])
)
SERVER_BYTES = codec.upgrade_response(KEY) + b"".join(
    f.encode() for f in (FRAMES["server_key"], FRAMES["server_info"], FRAMES["recv_packet"], FRAMES["keep_alive"])
)


def _segments(data: bytes, cuts: list[int], isn: int) -> list[tuple[int, bytes]]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [((isn + 1 + a) & 0xFFFFFFFF, data[a:b]) for a, b in itertools.pairwise(points) if b > a]


def _feed(segments: list[tuple[Endpoint, Endpoint, int, int, bytes]]) -> list[layer.DERPEvent]:
    r = DERPReassembler()
    events = []
    for src, dst, seq, flags, data in segments:
        events += r.add_segment(src, dst, seq, flags, data)
    return events


def _expected() -> tuple[list[str], list[str]]:
    client = ["upgrade-request"] + [f.summary() for f in (FRAMES["client_info"], FRAMES["send_packet"],
                                                           FRAMES["note_preferred"], FRAMES["ping"])]  # fmt: skip
    server = ["upgrade-response"] + [f.summary() for f in (FRAMES["server_key"], FRAMES["server_info"],
                                                            FRAMES["recv_packet"], FRAMES["keep_alive"])]  # fmt: skip
    return client, server


def _by_direction(events: list[layer.DERPEvent]) -> tuple[list[str], list[str]]:
    def text(e: layer.DERPEvent) -> str:
        return e.kind if e.kind.startswith("upgrade") else e.summary()

    assert all(e.error is None for e in events), [e.summary() for e in events if e.error]
    return [text(e) for e in events if e.src == C], [text(e) for e in events if e.src == S]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 2000), max_size=30),
    st.lists(st.integers(0, 2000), max_size=30),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.randoms(use_true_random=False),
    st.booleans(),
)
def test_reassembly_over_arbitrary_splits_reorder_and_duplicates(
    ccuts: list[int], scuts: list[int], cisn: int, sisn: int, rnd: random.Random, shuffle: bool
) -> None:
    segs = [(C, S, cisn, 0x02, b""), (S, C, sisn, 0x12, b"")]  # SYN, SYN-ACK (sequence numbers may wrap)
    data = [(C, S, seq, 0x18, d) for seq, d in _segments(CLIENT_BYTES, ccuts, cisn)]
    data += [(S, C, seq, 0x18, d) for seq, d in _segments(SERVER_BYTES, scuts, sisn)]
    if shuffle:  # reordered, with some segments retransmitted
        data += rnd.sample(data, k=min(3, len(data)))
        rnd.shuffle(data)
    assert _by_direction(_feed(segs + data)) == _expected()


def test_fast_start_server_stream_is_recognised_by_its_server_key() -> None:
    server = FRAMES["server_key"].encode() + FRAMES["keep_alive"].encode()
    events = _feed([(S, C, 100, 0x18, server)])
    assert [e.summary() for e in events] == [FRAMES["server_key"].summary(), "DERP KeepAlive"]


def test_other_tcp_is_ignored_and_midstream_capture_finds_nothing() -> None:
    assert _feed([(C, S, 1, 0x18, b"SSH-2.0-OpenSSH_9.2\r\n" + bytes(100))]) == []
    assert _feed([(C, S, 1, 0x18, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")]) == []
    assert _feed([(C, S, 1, 0x18, FRAMES["send_packet"].encode()[7:])]) == []


def test_malformed_frame_is_reported_and_the_stream_continues() -> None:
    bad = codec.frame_header(codec.FrameType.NOTE_PREFERRED, 3) + b"\x01\x02\x03"
    stream = codec.upgrade_request("x") + bad + FRAMES["ping"].encode()
    events = _feed([(C, S, 1, 0x18, stream)])
    assert [e.kind for e in events] == ["upgrade-request", "error", "frame"]
    assert events[1].error is not None and events[1].error.reason == "bad-length"
    assert "DERP malformed (bad-length)" in events[1].summary()
    assert isinstance(events[1].packet(), DERPFrame)


def test_oversized_frame_header_gives_up_on_the_direction() -> None:
    stream = codec.upgrade_request("x") + b"\x04\xff\xff\xff\xff" + bytes(10)
    events = _feed([(C, S, 1, 0x18, stream), (C, S, 1 + len(stream), 0x18, FRAMES["ping"].encode())])
    assert [e.kind for e in events] == ["upgrade-request", "error"]
