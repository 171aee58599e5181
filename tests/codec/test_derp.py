"""Tests of the DERP codec (protocols.md §2): golden bytes, round trips, stream decoding, limits, HTTP, JSON."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import derp
from toolkit.codec.derp import (
    CLIENT_INFO_MAX,
    MAX_PACKET_SIZE,
    WRITE_MAX_FRAME,
    ClientInfo,
    ClosePeer,
    ForwardPacket,
    FrameDecoder,
    FrameType,
    Health,
    KeepAlive,
    NotePreferred,
    PeerGone,
    PeerGoneReason,
    PeerPresent,
    PeerPresentFlags,
    Ping,
    Pong,
    RecvPacket,
    Restarting,
    SendPacket,
    ServerInfo,
    ServerKey,
    UnknownFrame,
    WatchConns,
    decode,
    decode_frame,
    frame_header,
)
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, DecodeError, TruncatedError
from toolkit.types import Endpoint, NodePublicKey

K1 = NodePublicKey(bytes(range(32)))
K2 = NodePublicKey(bytes(range(100, 132)))

# --- golden bytes (protocols.md §2.2) -------------------------------------------------------------

GOLDEN_HEADERS = [
    ("send_packet_len_1024", "Tailscale derp/derp_test.go", "0400000400", FrameType.SEND_PACKET, 1024),
    ("keep_alive", "Tailscale derp/derp_test.go", "0600000000", FrameType.KEEP_ALIVE, 0),
    ("recv_packet_max_len", "Tailscale derp/derp_test.go", "05ffffffff", FrameType.RECV_PACKET, 0xFFFFFFFF),
]

GOLDEN_FRAMES = [
    ("keep_alive", "Tailscale derp/derp_test.go", "0600000000", KeepAlive()),
    ("ping", "Tailscale derp/client_test.go", "12000000080102030405060708", Ping(bytes(range(1, 9)))),
    ("pong", "Tailscale derp/client_test.go", "13000000080102030405060708", Pong(bytes(range(1, 9)))),
    ("health_bad", "Tailscale derp/client_test.go", "1400000003424144", Health("BAD")),
    ("health_ok", "Tailscale derp/client_test.go", "1400000000", Health("")),
    ("restarting_1ms_2ms", "Tailscale derp/client_test.go", "15000000080000000100000002", Restarting(1, 2)),
]


@pytest.mark.parametrize(
    ("name", "source", "hexbytes", "ftype", "length"), GOLDEN_HEADERS, ids=[v[0] for v in GOLDEN_HEADERS]
)
def test_golden_header(name: str, source: str, hexbytes: str, ftype: FrameType, length: int) -> None:
    assert frame_header(ftype, length) == bytes.fromhex(hexbytes), source


def test_golden_send_packet_header_from_a_frame() -> None:
    frame = SendPacket(K1, b"\xaa" * (1024 - 32)).encode()
    assert frame[:5] == bytes.fromhex("0400000400")
    assert len(frame) == 5 + 1024


def test_golden_recv_packet_max_length_is_rejected_at_once() -> None:
    header = bytes.fromhex("05ffffffff")
    dec = FrameDecoder()
    assert dec.feed(header[:4]) == []  # not yet a whole header
    with pytest.raises(BadLengthError, match="RECV_PACKET"):
        dec.feed(header[4:])
    with pytest.raises(BadLengthError):  # the decoder stays failed
        dec.feed(b"")
    with pytest.raises(BadLengthError):
        decode(header + b"\x00" * 40)


@pytest.mark.parametrize(("name", "source", "hexbytes", "frame"), GOLDEN_FRAMES, ids=[v[0] for v in GOLDEN_FRAMES])
def test_golden_frame(name: str, source: str, hexbytes: str, frame: derp.Frame) -> None:
    wire = bytes.fromhex(hexbytes)
    assert frame.encode() == wire, source
    assert decode(wire) == frame, source


def test_magic_is_derp_key_emoji() -> None:
    assert derp.MAGIC == "DERP🔑".encode() == bytes.fromhex("44455250f09f9491")


# --- strategies -----------------------------------------------------------------------------------

keys = st.binary(min_size=32, max_size=32).map(NodePublicKey)
packets = st.binary(max_size=300) | st.sampled_from([b"", b"\x00" * MAX_PACKET_SIZE])
nonces = st.binary(min_size=24, max_size=24)
ping_data = st.binary(min_size=8, max_size=8) | st.binary(min_size=8, max_size=1000)
endpoints = st.builds(
    Endpoint,
    st.ip_addresses().filter(lambda ip: not (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped)),
    st.integers(0, 0xFFFF),
)
unknown_types = st.integers(0, 255).filter(lambda t: t not in {int(x) for x in FrameType})


@st.composite
def peer_present(draw: st.DrawFn) -> PeerPresent:
    form = draw(st.integers(0, 2))
    key = draw(keys)
    if form == 0:
        return PeerPresent(key)
    if form == 1:
        return PeerPresent(key, draw(endpoints))
    return PeerPresent(key, draw(endpoints), PeerPresentFlags(draw(st.integers(0, 255))), draw(st.binary(max_size=8)))


frames = st.one_of(
    st.builds(ServerKey, keys, st.binary(max_size=16)),
    st.builds(ClientInfo, keys, nonces, st.binary(max_size=200)),
    st.builds(ServerInfo, nonces, st.binary(max_size=200)),
    st.builds(SendPacket, keys, packets),
    st.builds(RecvPacket, keys, packets),
    st.just(KeepAlive()),
    st.builds(NotePreferred, st.booleans()),
    st.builds(PeerGone, keys, st.sampled_from(list(PeerGoneReason)) | st.integers(0, 255)),
    peer_present(),
    st.builds(ForwardPacket, keys, keys, packets),
    st.just(WatchConns()),
    st.builds(ClosePeer, keys),
    st.builds(Ping, ping_data),
    st.builds(Pong, ping_data),
    st.builds(Health, st.text(max_size=40)),
    st.builds(Restarting, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
    st.builds(UnknownFrame, unknown_types, st.binary(max_size=64)),
)


# --- round trips ----------------------------------------------------------------------------------


@settings(max_examples=400)
@given(frames)
def test_every_frame_round_trips(frame: derp.Frame) -> None:
    wire = frame.encode()
    assert wire[0] == frame.frame_type
    assert int.from_bytes(wire[1:5], "big") == len(wire) - 5
    assert decode(wire) == frame
    assert decode_frame(frame.frame_type, frame.encode_payload()) == frame
    assert frame.summary().startswith("DERP ")


def test_every_known_type_has_a_class() -> None:
    types = {ServerKey.TYPE, ClientInfo.TYPE, ServerInfo.TYPE, SendPacket.TYPE, RecvPacket.TYPE, KeepAlive.TYPE}
    types |= {NotePreferred.TYPE, PeerGone.TYPE, PeerPresent.TYPE, ForwardPacket.TYPE, WatchConns.TYPE}
    types |= {ClosePeer.TYPE, Ping.TYPE, Pong.TYPE, Health.TYPE, Restarting.TYPE}
    assert types == set(FrameType)
    assert all(not isinstance(decode_frame(t, b""), UnknownFrame) for t in FrameType if t in {0x06, 0x10, 0x14})


@settings(max_examples=200)
@given(st.lists(frames, max_size=8), st.data())
def test_decoder_gives_same_frames_for_any_split(frame_list: list[derp.Frame], data: st.DataObject) -> None:
    stream = b"".join(f.encode() for f in frame_list)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    got: list[derp.Frame] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[prev:cut])
        prev = cut
    assert got == frame_list
    assert dec.buffered == 0


def test_decoder_one_byte_at_a_time() -> None:
    frame_list: list[derp.Frame] = [
        SendPacket(K1, b"hello"),
        KeepAlive(),
        UnknownFrame(0x42, b"xyz"),
        Ping(b"12345678"),
    ]
    stream = b"".join(f.encode() for f in frame_list)
    dec = FrameDecoder()
    got: list[derp.Frame] = []
    for i in range(len(stream)):
        got += dec.feed(stream[i : i + 1])
        assert dec.buffered == len(stream[: i + 1]) - sum(len(f.encode()) for f in got)
    assert got == frame_list


def test_next_frame_delivers_good_frames_before_a_bad_one() -> None:
    dec = FrameDecoder()
    dec.receive_data(KeepAlive().encode() + b"\x07\x00\x00\x00\x02\x01\x01")  # NotePreferred must be 1 byte
    assert dec.next_frame() == KeepAlive()
    with pytest.raises(BadLengthError, match="NOTE_PREFERRED"):
        dec.next_frame()


# --- arbitrary input raises only DecodeError ------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        frame = decode(data)
    except DecodeError:
        return
    assert decode(frame.encode()) == frame
    if not isinstance(frame, NotePreferred | PeerGone):  # the two forms Go reads more loosely than it writes
        assert frame.encode() == data


def test_loose_forms_normalise_on_reencode() -> None:
    assert decode(bytes.fromhex("0700000001 02")).encode() == bytes.fromhex("0700000001 01")
    old_gone = frame_header(FrameType.PEER_GONE, 32) + K1.raw
    assert decode(old_gone).encode() == frame_header(FrameType.PEER_GONE, 33) + K1.raw + b"\x00"


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=60), max_size=6), st.integers(0, 200))
def test_frame_decoder_arbitrary_bytes(chunks: list[bytes], limit: int) -> None:
    dec = FrameDecoder(max_frame_len=limit)
    try:
        for chunk in chunks:
            for frame in dec.feed(chunk):
                assert len(frame.encode_payload()) <= limit
    except DecodeError:
        pass


@settings(max_examples=300)
@given(st.integers(0, 255), st.binary(max_size=120))
def test_decode_frame_arbitrary_payload(frame_type: int, payload: bytes) -> None:
    try:
        frame = decode_frame(frame_type, payload)
    except DecodeError as exc:
        assert derp.type_name(frame_type) in str(exc)
        return
    assert decode_frame(frame_type, frame.encode_payload()) == frame
    assert frame.frame_type == frame_type


def test_decode_frame_rejects_non_byte_type() -> None:
    with pytest.raises(BadValueError):
        decode_frame(256, b"")


# --- per-type validation and size limits ----------------------------------------------------------


def test_server_key_needs_magic_and_40_bytes_and_keeps_extra() -> None:
    good = derp.MAGIC + K1.raw
    assert decode_frame(FrameType.SERVER_KEY, good + b"future") == ServerKey(K1, b"future")
    with pytest.raises(TruncatedError, match="SERVER_KEY"):
        decode_frame(FrameType.SERVER_KEY, good[:39])
    with pytest.raises(BadMagicError):
        decode_frame(FrameType.SERVER_KEY, b"DERP\x00\x00\x00\x00" + K1.raw)


@pytest.mark.parametrize(
    ("ftype", "payload", "error"),
    [
        (FrameType.CLIENT_INFO, b"\x00" * 55, TruncatedError),
        (FrameType.CLIENT_INFO, b"\x00" * (CLIENT_INFO_MAX + 1), BadLengthError),
        (FrameType.SERVER_INFO, b"\x00" * 23, TruncatedError),
        (FrameType.SEND_PACKET, b"\x00" * 31, TruncatedError),
        (FrameType.SEND_PACKET, b"\x00" * (32 + MAX_PACKET_SIZE + 1), BadLengthError),
        (FrameType.RECV_PACKET, b"\x00" * (32 + MAX_PACKET_SIZE + 1), BadLengthError),
        (FrameType.FORWARD_PACKET, b"\x00" * 63, TruncatedError),
        (FrameType.FORWARD_PACKET, b"\x00" * (64 + MAX_PACKET_SIZE + 1), BadLengthError),
        (FrameType.NOTE_PREFERRED, b"", TruncatedError),
        (FrameType.NOTE_PREFERRED, b"\x01\x00", BadLengthError),
        (FrameType.KEEP_ALIVE, b"\x00", BadLengthError),
        (FrameType.WATCH_CONNS, b"\x00", BadLengthError),
        (FrameType.CLOSE_PEER, b"\x00" * 33, BadLengthError),
        (FrameType.PEER_GONE, b"\x00" * 34, BadLengthError),
        (FrameType.PEER_PRESENT, b"\x00" * 40, BadLengthError),
        (FrameType.PING, b"\x00" * 7, TruncatedError),
        (FrameType.PING, b"\x00" * 1001, BadLengthError),
        (FrameType.PONG, b"\x00" * 7, TruncatedError),
        (FrameType.HEALTH, b"\xff\xfe", BadValueError),
        (FrameType.RESTARTING, b"\x00" * 7, TruncatedError),
    ],
    ids=lambda v: v.name if isinstance(v, FrameType) else None,
)
def test_bad_payloads(ftype: FrameType, payload: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error, match=ftype.name):
        decode_frame(ftype, payload)


def test_size_limits_accept_the_maximum() -> None:
    assert decode_frame(FrameType.SEND_PACKET, K1.raw + b"\x00" * MAX_PACKET_SIZE) == SendPacket(
        K1, b"\x00" * MAX_PACKET_SIZE
    )
    assert isinstance(decode_frame(FrameType.CLIENT_INFO, b"\x00" * CLIENT_INFO_MAX), ClientInfo)
    ping = decode_frame(FrameType.PING, b"\x01" * 1000)
    assert isinstance(ping, Ping) and ping.pong() == Pong(b"\x01" * 8)


def test_decoder_limit_checks_the_header_before_the_payload() -> None:
    dec = FrameDecoder(max_frame_len=100)
    assert dec.feed(UnknownFrame(0x30, b"a" * 100).encode()) == [UnknownFrame(0x30, b"a" * 100)]
    with pytest.raises(BadLengthError):
        dec.feed(frame_header(FrameType.SEND_PACKET, 101))
    assert FrameDecoder().max_frame_len == derp.CLIENT_MAX_FRAME == 1 << 20


def test_decode_whole_frame_length_mismatch() -> None:
    with pytest.raises(TruncatedError):
        decode(b"\x06\x00\x00")
    with pytest.raises(TruncatedError):
        decode(frame_header(FrameType.PING, 8) + b"1234567")
    with pytest.raises(BadLengthError):
        decode(KeepAlive().encode() + b"\x00")


def test_encode_refuses_more_than_write_limit() -> None:
    with pytest.raises(BadLengthError):
        UnknownFrame(0x30, b"\x00" * (WRITE_MAX_FRAME + 1)).encode()


def test_constructors_validate() -> None:
    with pytest.raises(BadValueError):
        SendPacket(K1, b"\x00" * (MAX_PACKET_SIZE + 1))
    with pytest.raises(BadValueError):
        ClientInfo(K1, b"short", b"")
    with pytest.raises(BadValueError):
        Ping(b"1234567")
    with pytest.raises(BadValueError):
        Restarting(-1, 0)
    with pytest.raises(BadValueError):
        PeerGone(K1, 256)
    with pytest.raises(BadValueError):
        UnknownFrame(FrameType.PING, b"")
    with pytest.raises(BadValueError):
        PeerPresent(K1, None, PeerPresentFlags.REGULAR)


def test_peer_gone_old_form_and_reasons() -> None:
    assert decode_frame(FrameType.PEER_GONE, K1.raw) == PeerGone(K1, PeerGoneReason.DISCONNECTED)
    gone = decode_frame(FrameType.PEER_GONE, K1.raw + b"\x01")
    assert gone == PeerGone(K1, PeerGoneReason.NOT_HERE)
    assert isinstance(gone, PeerGone) and gone.reason is PeerGoneReason.NOT_HERE
    assert decode_frame(FrameType.PEER_GONE, K1.raw + b"\x07") == PeerGone(K1, 7)


def test_peer_present_forms() -> None:
    ep = Endpoint.parse("1.2.3.4:567")
    ip_port = ep.packed16() + (567).to_bytes(2, "big")
    assert decode_frame(FrameType.PEER_PRESENT, K1.raw) == PeerPresent(K1)
    assert decode_frame(FrameType.PEER_PRESENT, K1.raw + ip_port) == PeerPresent(K1, ep)
    full = decode_frame(FrameType.PEER_PRESENT, K1.raw + ip_port + b"\x09")
    assert full == PeerPresent(K1, ep, PeerPresentFlags.REGULAR | PeerPresentFlags.NOT_IDEAL)
    assert len(full.encode_payload()) == 51
    newer = decode_frame(FrameType.PEER_PRESENT, K1.raw + ip_port + b"\x01more")
    assert newer == PeerPresent(K1, ep, PeerPresentFlags.REGULAR, b"more")
    assert ip_port[:12] == b"\x00" * 10 + b"\xff\xff"  # v4 as v4-mapped v6, §2.3


def test_note_preferred_nonzero_is_home() -> None:
    assert decode_frame(FrameType.NOTE_PREFERRED, b"\x02") == NotePreferred(True)
    assert NotePreferred(False).encode() == bytes.fromhex("070000000100")


def test_unknown_frames_are_kept_in_a_stream() -> None:
    stream = bytes.fromhex("42 00000003") + b"abc" + KeepAlive().encode() + bytes.fromhex("ff 00000000")
    assert FrameDecoder().feed(stream) == [UnknownFrame(0x42, b"abc"), KeepAlive(), UnknownFrame(0xFF, b"")]


def test_summaries() -> None:
    assert SendPacket(K1, b"\x00" * 124).summary() == "DERP SendPacket to nodekey:00010203.. 124B"
    assert PeerGone(K2, PeerGoneReason.NOT_HERE).summary() == "DERP PeerGone nodekey:64656667.. (not-here)"
    assert Health("").summary() == "DERP Health OK"
    assert Ping(bytes(range(1, 9))).summary() == "DERP Ping 0102030405060708"
    assert "1.2.3.4:5" in PeerPresent(K1, Endpoint.parse("1.2.3.4:5"), PeerPresentFlags.REGULAR).summary()
    assert "0x42" in UnknownFrame(0x42, b"").summary()
