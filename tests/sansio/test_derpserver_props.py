"""Property tests of the DERP relay core: no input raises, bad input stays on its own connection, and every
packet reaches exactly its addressee with the sender's key (protocols.md §2.4)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sansio.derpharness import Harness
from toolkit.codec import derp
from toolkit.sansio.derpserver_conn import CLOSE_REASONS, DROP_REASONS, State

chunks = st.lists(st.binary(max_size=300), max_size=8)


def _still_relays(h: Harness) -> None:
    a, b = h.connect(), h.connect()
    a.send_packet(b, b"after the storm")
    assert b.packets() == [(a.pub, b"after the storm")]


def _reasons_known(h: Harness) -> None:
    assert set(h.core.dropped) <= set(DROP_REASONS)
    assert set(h.core.closed) <= set(CLOSE_REASONS)


@settings(max_examples=200)
@given(chunks)
def test_any_bytes_before_the_upgrade(data: list[bytes]) -> None:
    h = Harness(trace=False)
    c = h.open()
    for chunk in data:
        c.send(chunk)
    if c.closed is None:  # else the harness has already reported the connection lost
        assert h.core.state_of(c.conn_id) in (State.AWAITING_HTTP, State.AWAITING_CLIENT_INFO)
    else:
        assert h.core.state_of(c.conn_id) is None and c.closed.reason in CLOSE_REASONS
    _reasons_known(h)
    _still_relays(h)


@settings(max_examples=200)
@given(chunks)
def test_any_bytes_instead_of_client_info(data: list[bytes]) -> None:
    h = Harness(trace=False)
    c = h.open()
    c.send(derp.upgrade_request("x"))
    for chunk in data:
        c.send(chunk)
    assert c.closed is not None or h.core.state_of(c.conn_id) is State.AWAITING_CLIENT_INFO
    assert h.core.clients() == []
    _reasons_known(h)
    _still_relays(h)


frames = st.lists(
    st.tuples(st.integers(0, 255), st.binary(max_size=80)).map(lambda t: derp.frame_header(t[0], len(t[1])) + t[1]),
    max_size=10,
)


@settings(max_examples=200)
@given(frames, st.booleans())
def test_any_frames_after_the_handshake(stream: list[bytes], trace: bool) -> None:
    h = Harness(trace=trace)
    a, b = h.connect(), h.connect()
    bad = h.connect()
    for frame in stream:
        bad.send(frame)
    a.send_packet(b, b"unaffected")
    got = b.packets()
    assert (a.pub, b"unaffected") in got
    assert all(src == bad.pub for src, _ in got if _ != b"unaffected")  # only bad's own packets, as itself
    _reasons_known(h)


@settings(max_examples=150)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.binary(max_size=40)), max_size=40), st.booleans())
def test_every_packet_reaches_exactly_its_addressee(sends: list[tuple[int, int, bytes]], trace: bool) -> None:
    h = Harness(trace=trace)
    clients = [h.connect() for _ in range(4)]
    for i, j, payload in sends:
        clients[i].send_packet(clients[j], payload)
    for j, receiver in enumerate(clients):
        expected = [(clients[i].pub, p) for i, dst, p in sends if dst == j]
        assert receiver.packets() == expected
    assert h.core.packets_relayed == len(sends)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), st.binary(max_size=30)), max_size=30), st.data())
def test_fast_path_and_traced_path_write_the_same_bytes(
    sends: list[tuple[int, int, bytes]], data: st.DataObject
) -> None:
    """Index 3 is a key nobody has: NotHere answers and drops must match too."""
    cut = data.draw(st.integers(1, 50))

    def run(trace: bool) -> list[bytes]:
        h = Harness(trace=trace)
        clients = [h.connect() for _ in range(3)]
        keys = [c.pub for c in clients] + [h.open(seed=b"absent").pub]
        streams: list[bytes] = [b"", b"", b""]
        for i, j, payload in sends:
            streams[i] += derp.SendPacket(keys[j], payload).encode()
        for client, stream in zip(clients, streams, strict=True):
            for k in range(0, len(stream), cut):
                client.send(stream[k : k + cut])
        return [bytes(c.raw) for c in clients]

    assert run(False) == run(True)
