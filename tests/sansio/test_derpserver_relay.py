"""The DERP relay core relaying packets: RecvPacket, PeerGone, Ping, bad frames, timers (protocols.md §2.3-2.4)."""

from __future__ import annotations

import pytest

from tests.sansio.derpharness import Harness
from toolkit.codec import derp
from toolkit.crypto.derp import seal_client_info
from toolkit.crypto.keys import node_key_pair

GONE = derp.PeerGoneReason


# --- relaying (protocols.md §2.4 step 5) --------------------------------------------------------


@pytest.mark.parametrize("trace", [False, True])
def test_send_packet_becomes_recv_packet_from_the_sender(trace: bool) -> None:
    h = Harness(trace=trace)
    a, b = h.connect(), h.connect()
    a.send_packet(b, b"ping")
    b.send_packet(a, b"")
    a.send_packet(b, bytes(derp.MAX_PACKET_SIZE))
    assert b.packets() == [(a.pub, b"ping"), (a.pub, bytes(derp.MAX_PACKET_SIZE))]
    assert a.packets() == [(b.pub, b"")]
    assert h.core.packets_relayed == 3


def test_fast_and_traced_paths_write_the_same_bytes() -> None:
    def scenario(trace: bool) -> list[bytes]:
        h = Harness(trace=trace)
        a, b, c = h.connect(), h.connect(), h.connect()
        batch = b"".join(derp.SendPacket(dst.pub, b"%d" % i).encode() for i, dst in enumerate([b, c, a, b]))
        a.send(batch[:7])
        a.send(batch[7:] + derp.Ping(b"12345678").encode())
        a.send_packet(node_key_pair(b"nobody")[1], b"lost")
        b.hang_up()
        return [bytes(x.raw) for x in (a, b, c)]

    assert scenario(False) == scenario(True)


def test_packets_split_across_reads_in_every_way() -> None:
    h = Harness(trace=False)
    a, b = h.connect(), h.connect()
    stream = b"".join(derp.SendPacket(b.pub, bytes([i]) * i).encode() for i in range(20))
    for i in range(0, len(stream), 7):
        a.send(stream[i : i + 7])
    assert b.packets() == [(a.pub, bytes([i]) * i) for i in range(20)]


def test_unknown_destination_gets_peer_gone_not_here_rate_limited() -> None:
    h = Harness()
    a = h.connect()
    nobody = node_key_pair(b"nobody")[1]
    for _ in range(5):
        a.send_packet(nobody, b"x")
    assert a.take() == [derp.PeerGone(nobody, GONE.NOT_HERE)] * 3  # burst 3
    assert h.core.dropped["unknown_dest"] == 5 and h.core.dropped["peer_gone_limited"] == 2
    assert h.trace.reasons().count("unknown_dest") == 5  # type: ignore[union-attr]
    h.advance(1.0)
    a.send_packet(nobody, b"x")
    a.send_packet(nobody, b"x")
    assert a.take() == [derp.PeerGone(nobody, GONE.NOT_HERE)]  # 1/s


def test_peer_gone_disconnected_goes_to_those_that_received_from_it() -> None:
    h = Harness()
    a, b, c, d = (h.connect() for _ in range(4))
    a.send_packet(b, b"1")
    a.send_packet(c, b"2")
    d.send_packet(a, b"3")  # a received from d, not the other way round
    for x in (a, b, c, d):
        x.take()
    a.hang_up()
    assert b.take() == [derp.PeerGone(a.pub, GONE.DISCONNECTED)]
    assert c.take() == [derp.PeerGone(a.pub, GONE.DISCONNECTED)]
    assert d.take() == []
    b.send_packet(a.pub, b"late")
    assert b.take() == [derp.PeerGone(a.pub, GONE.NOT_HERE)]


@pytest.mark.parametrize("size", [8, 9, 1000])
def test_ping_gets_pong_of_its_first_8_bytes(size: int) -> None:
    h = Harness()
    a = h.connect()
    data = bytes(range(size)) if size < 256 else bytes(size)
    a.send_frame(derp.Ping(data))
    assert a.take() == [derp.Pong(data[:8])]


@pytest.mark.parametrize(
    "frame",
    [
        derp.frame_header(derp.FrameType.PING, 7) + bytes(7),
        derp.frame_header(derp.FrameType.PING, 1001) + bytes(1001),
        derp.frame_header(derp.FrameType.NOTE_PREFERRED, 2) + b"\x01\x01",
        derp.frame_header(derp.FrameType.NOTE_PREFERRED, 0),
        derp.frame_header(derp.FrameType.SEND_PACKET, 31) + bytes(31),
        derp.frame_header(derp.FrameType.SEND_PACKET, 32 + derp.MAX_PACKET_SIZE + 1)
        + bytes(32 + derp.MAX_PACKET_SIZE + 1),
    ],
)
def test_malformed_frame_closes_only_that_connection(frame: bytes) -> None:
    for trace in (False, True):
        h = Harness(trace=trace)
        a, b, bad = h.connect(), h.connect(), h.connect()
        bad.send(frame)
        assert bad.closed is not None and bad.closed.reason == "bad_frame"
        a.send_packet(b, b"still here")
        assert b.packets() == [(a.pub, b"still here")]


def test_frame_over_the_limit_closes_on_its_header() -> None:
    h = Harness()
    a, b, big = h.connect(), h.connect(), h.connect()
    big.send(derp.frame_header(0x42, h.core.limits.max_frame_len + 1))
    assert big.closed is not None and big.closed.reason == "frame_too_large"
    a.send_packet(b, b"ok")
    assert b.packets() == [(a.pub, b"ok")]


def test_unknown_and_server_only_frames_are_skipped_by_length() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    a.send(derp.UnknownFrame(0x42, b"future").encode() + derp.KeepAlive().encode() + b"\x05\x00\x00\x00\x01x")
    a.send_packet(b, b"after")
    assert a.closed is None and b.packets() == [(a.pub, b"after")]
    assert h.core.dropped["unknown_frame"] == 3


def test_note_preferred_is_counted() -> None:
    h = Harness()
    a = h.connect()
    a.send_frame(derp.NotePreferred(True))
    assert h.core.counts["note_preferred"] == 1 and h.core.clients()[0].preferred
    a.send_frame(derp.NotePreferred(False))
    assert not h.core.clients()[0].preferred


def test_keepalive_every_60s_plus_jitter() -> None:
    h = Harness()
    a = h.connect()
    timer = h.core.get_timer()
    assert timer is not None and h.now + 60 <= timer < h.now + 65
    h.advance(59.9)
    assert a.take() == []
    h.advance(5.1)
    assert a.take() == [derp.KeepAlive()]
    h.advance(65.0)
    assert a.take() == [derp.KeepAlive()]


def test_health_goes_to_every_client_and_to_newcomers() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    h.core.set_health("disk full", h.now)
    h.pump()
    assert a.take() == [derp.Health("disk full")] and b.take() == [derp.Health("disk full")]
    c = h.connect()
    assert c.take() == [derp.Health("disk full")]
    h.core.set_health("", h.now)
    h.pump()
    assert a.take() == [derp.Health("")]


def test_shutdown_sends_restarting_then_closes() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    pending = h.open()
    h.core.shutdown(h.now, reconnect_in=0.5, try_for=20.0)
    h.pump()
    for x in (a, b):
        assert x.take() == [derp.Restarting(500, 20000)]
        assert x.closed is not None and x.closed.reason == "server_stopping" and not x.closed.abort
    assert pending.closed is not None
    assert h.core.clients() == []


def test_large_frames_trickled_in_small_pieces() -> None:
    h = Harness(trace=False)
    b = h.connect()
    a = h.open()
    a.send(derp.upgrade_request("x"))
    a.start_frames(b"")
    info = seal_client_info(derp.ClientInfoJSON(app_name="x" * 5000), a.priv, h.core.public_key).encode()
    big = derp.SendPacket(b.pub, bytes(range(256)) * 256).encode()
    stream = info + big + derp.Ping(b"trickled").encode()
    for i in range(0, len(stream), 97):
        a.send(stream[i : i + 97])
    assert b.packets() == [(a.pub, bytes(range(256)) * 256)]
    assert a.take()[-1] == derp.Pong(b"trickled")


def test_events_and_data_to_send_for_a_simulator() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    events = []
    while (event := h.core.next_event()) is not None:
        events.append(event)
    assert [(type(e).__name__, e.key) for e in events] == [("ClientConnected", a.pub), ("ClientConnected", b.pub)]
    h.core.data_received(a.conn_id, derp.SendPacket(b.pub, b"pulled").encode(), h.now)
    assert h.core.data_to_send(a.conn_id) == b""
    assert derp.decode(h.core.data_to_send(b.conn_id)) == derp.RecvPacket(a.pub, b"pulled")
    assert h.core.pending_writes() == []
    a.hang_up()
    gone = h.core.next_event()
    assert gone is not None and type(gone).__name__ == "ClientDisconnected" and gone.reason == "hangup"  # type: ignore[union-attr]
