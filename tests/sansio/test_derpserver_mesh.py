"""The DERP relay core: mesh frames, duplicate keys, per-client limits and the state table (protocols.md §2)."""

from __future__ import annotations

import pytest

from tests.sansio.derpharness import MESH_KEY, Harness
from tests.sansio.test_derpserver import http, upgraded
from toolkit.codec import derp
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.derpserver_conn import MIN_BURST, TRANSITIONS, DerpLimits, State
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

GONE = derp.PeerGoneReason


# --- mesh (protocols.md §2.3: WatchConns, PeerPresent, ClosePeer, ForwardPacket) ----------------


def test_watch_conns_lists_clients_now_and_later() -> None:
    h = Harness()
    a = h.connect()
    mesh = h.connect(mesh_key=MESH_KEY)
    mesh.send_frame(derp.WatchConns())
    present = {f.key: f for f in mesh.take(derp.PeerPresent)}  # type: ignore[attr-defined]
    assert present[a.pub] == derp.PeerPresent(a.pub, a.remote, derp.PeerPresentFlags.REGULAR)
    assert present[mesh.pub].flags == derp.PeerPresentFlags.MESH_PEER
    c = h.connect(is_prober=True)
    assert mesh.take() == [derp.PeerPresent(c.pub, c.remote, derp.PeerPresentFlags.PROBER)]
    c.hang_up()
    assert mesh.take() == [derp.PeerGone(c.pub, GONE.DISCONNECTED)]


def test_close_peer_and_forward_packet_from_a_mesh_client() -> None:
    h = Harness()
    a, b = h.connect(), h.connect()
    mesh = h.connect(mesh_key=MESH_KEY)
    elsewhere = node_key_pair(b"on another derp")[1]
    mesh.send_frame(derp.ForwardPacket(elsewhere, b.pub, b"via mesh"))
    assert b.packets() == [(elsewhere, b"via mesh")]
    mesh.send_frame(derp.ClosePeer(a.pub))
    assert a.closed is not None and a.closed.reason == "closed_by_mesh"
    assert mesh.closed is None and b.closed is None


@pytest.mark.parametrize(
    "frame",
    [
        derp.WatchConns(),
        derp.ClosePeer(node_key_pair(b"x")[1]),
        derp.ForwardPacket(node_key_pair(b"x")[1], node_key_pair(b"y")[1], b"spoof"),
    ],
)
def test_mesh_frames_from_a_client_without_the_mesh_key_close_it(frame: derp.Frame) -> None:
    h = Harness()
    a = h.connect()
    wrong = h.connect(mesh_key="cd" * 32)
    for c in (a, wrong):
        c.send_frame(frame)
        assert c.closed is not None and c.closed.reason == "not_mesh"
    assert h.core.closed["not_mesh"] == 2


def test_no_client_can_send_with_another_key() -> None:
    h = Harness()
    a, b, c = h.connect(), h.connect(), h.connect()
    a.send_frame(derp.ForwardPacket(c.pub, b.pub, b"spoofed"))  # a is not a mesh client
    assert b.packets() == [] and a.closed is not None
    c.send_packet(b, b"real")
    assert b.packets() == [(c.pub, b"real")]


# --- duplicate keys: Tailscale's lastWriterIsActive -------------------------------------------


def test_duplicate_keys_last_writer_is_active() -> None:
    h = Harness()
    b = h.connect()
    old = h.connect(seed=b"same key")
    new = h.connect(seed=b"same key")
    assert old.closed is None and new.closed is None
    b.send_packet(new.pub, b"1")
    assert new.packets() == [(b.pub, b"1")] and old.packets() == []
    old.send_packet(b, b"from old")  # old speaks: it becomes active
    assert b.packets() == [(old.pub, b"from old")]
    b.send_packet(new.pub, b"2")
    assert old.packets() == [(b.pub, b"2")] and new.packets() == []
    old.hang_up()
    b.send_packet(new.pub, b"3")
    assert new.packets() == [(b.pub, b"3")]
    assert b.take() == []  # the key is still here: no PeerGone
    new.hang_up()
    assert b.take() == [derp.PeerGone(new.pub, GONE.DISCONNECTED)]


# --- limits: stalled readers, queue depth, rate -------------------------------------------------


def test_stalled_reader_queue_keeps_the_newest_and_then_is_cut_off() -> None:
    h = Harness(limits=DerpLimits(queue_depth=4))
    a, b, c = h.connect(), h.connect(), h.connect()
    h.core.pause_writing(b.conn_id, h.now)
    for i in range(10):
        a.send_packet(b, b"%d" % i)
    a.send_packet(c, b"unaffected")
    assert b.packets() == [] and c.packets() == [(a.pub, b"unaffected")]
    assert h.core.dropped["queue_full"] == 6
    h.core.resume_writing(b.conn_id, h.now)
    h.pump()
    assert b.packets() == [(a.pub, b"%d" % i) for i in range(6, 10)]
    h.core.pause_writing(b.conn_id, h.now)
    a.send_packet(b, b"held")
    h.advance(DEFAULT.derp_write_timeout + 0.01)
    assert b.closed is not None and b.closed.reason == "write_timeout" and b.closed.abort
    assert h.core.dropped["gone_disconnected"] == 1
    a.send_packet(c, b"still relaying")
    assert c.packets() == [(a.pub, b"still relaying")] and a.closed is None


def test_pong_limited_while_paused() -> None:
    h = Harness()
    a = h.connect()
    h.core.pause_writing(a.conn_id, h.now)
    for _ in range(3):
        a.send_frame(derp.Ping(b"abcdefgh"))
    assert h.core.dropped["pong_limited"] == 2
    h.core.resume_writing(a.conn_id, h.now)
    h.pump()
    assert a.take() == [derp.Pong(b"abcdefgh")]


@pytest.mark.parametrize("trace", [False, True])
def test_token_bucket_drops_over_the_rate(trace: bool) -> None:
    h = Harness(limits=DerpLimits(rate_bytes_per_s=10_000, burst_bytes=0), trace=trace)
    a, b = h.connect(), h.connect()
    mesh = h.connect(mesh_key=MESH_KEY)
    for _ in range(100):
        a.send_packet(b, bytes(1000))
    passed = MIN_BURST // 1032  # the bucket charges the frame length: key + packet
    assert len(b.packets()) == passed and h.core.dropped["rate_limited"] == 100 - passed
    h.advance(1.0)
    for _ in range(20):
        a.send_packet(b, bytes(1000))
    assert len(b.packets()) == (MIN_BURST % 1032 + 10_000) // 1032
    for _ in range(100):  # mesh clients are exempt
        mesh.send_frame(derp.ForwardPacket(mesh.pub, b.pub, bytes(1000)))
    assert len(b.packets()) == 100


# --- the state machine is data ------------------------------------------------------------------


def test_every_traced_transition_is_in_the_table_and_every_edge_is_used() -> None:
    h = Harness()
    a = h.connect()
    prober = h.open()
    http(prober, "GET /derp/probe HTTP/1.1\nHost: x")
    h.open().send(b"\x00garbage")  # AwaitingHTTP -> Closed
    upgraded(h).send(derp.frame_header(derp.FrameType.SEND_PACKET, 40))  # AwaitingClientInfo -> Closed
    a.hang_up()  # Connected -> Closed
    names = {s.value: s for s in State}
    used = set()
    for record in h.trace.of_kind("transition"):  # type: ignore[union-attr]
        old, _, rest = record.detail.partition(" -> ")
        new = rest.split(" ")[0]
        assert TRANSITIONS[(names[old], record.reason)] is names[new]  # type: ignore[index]
        used.add((names[old], record.reason))
    assert used == set(TRANSITIONS)


def test_connection_lost_of_unknown_or_closed_ids_is_harmless() -> None:
    h = Harness()
    h.core.connection_lost(12345, h.now)
    h.core.data_received(12345, b"x", h.now)
    a = h.connect()
    a.hang_up()
    a.hang_up()
    h.core.connection_made(99, Endpoint.parse("[2001:db8::1]:5"), h.now)
    assert h.core.state_of(99) is State.AWAITING_HTTP
