"""The sans-IO DERP client core under a bad or silent server: closes with reasons (bad magic, key
mismatch, oversized frame, HTTP status, ...), keys known up front, fast start, timeouts, the trace
against the TRANSITIONS table, and Hypothesis garbage: the core never raises (protocols.md §2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sansio.derpclientwire import (
    OTHER_PRIV,
    OTHER_PUB,
    PEER,
    SERVER_PUB,
    connected,
    frames,
    hello,
    make,
    server_info,
    stream,
)
from toolkit.codec import derp
from toolkit.sansio.derpclient import TRANSITIONS, State
from toolkit.sansio.derpevents import CLOSE_REASONS, DROP_REASONS, Closed
from toolkit.sansio.trace import TraceLog


@pytest.mark.parametrize(
    ("server_bytes", "reason"),
    [
        (derp.upgrade_response(SERVER_PUB) + derp.frame_header(1, 40) + b"NOTDERP!" + SERVER_PUB.raw, "bad-server-key"),
        (derp.upgrade_response(SERVER_PUB) + derp.frame_header(1, 20) + b"x" * 20, "bad-server-key"),
        (hello(key=OTHER_PUB), "key-mismatch"),
        (derp.upgrade_response(SERVER_PUB) + derp.KeepAlive().encode(), "unexpected-frame"),
        (hello() + derp.frame_header(5, derp.CLIENT_MAX_FRAME + 1), "frame-too-large"),
        (hello() + server_info(priv=OTHER_PRIV), "bad-server-info"),
        (derp.http_response(426, "Upgrade Required", b"DERP requires connection upgrade"), "http-status"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad-upgrade"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", "bad-upgrade"),
    ],
    ids=["bad-magic", "short-key", "mismatch", "not-server-key", "oversized", "wrong-seal", "426", "not-http", "ws"],
)
def test_bad_server_closes_with_reason(server_bytes: bytes, reason: str) -> None:
    client = make()
    client.data_to_send()
    client.receive_data(server_bytes, 0.5)
    events = client.take_events()
    assert isinstance(events[-1], Closed) and events[-1].reason == reason
    assert client.state is State.CLOSED and client.close_event == events[-1]
    assert reason in CLOSE_REASONS
    client.receive_data(derp.KeepAlive().encode(), 0.6)  # ignored after the close
    assert client.take_events() == [] and client.get_timer() is None


def test_http_status_message_has_the_status_and_body() -> None:
    client = make()
    client.receive_data(derp.http_response(426, "Upgrade Required", b"DERP requires connection upgrade"), 0.5)
    assert client.http_status == 426
    assert client.close_event is not None
    assert "426 Upgrade Required: DERP requires connection upgrade" in client.close_event.message


def test_key_given_up_front_must_match_the_header() -> None:
    client = make(server_key=OTHER_PUB)
    client.receive_data(hello(), 0.5)
    assert client.close_event is not None and client.close_event.reason == "key-mismatch"


def test_key_given_up_front_sends_client_info_after_the_101() -> None:
    client = make(server_key=SERVER_PUB)
    client.data_to_send()
    client.receive_data(hello(header_key=None)[: -len(derp.ServerKey(SERVER_PUB).encode())], 0.1)
    assert client.state is State.AWAITING_SERVER_INFO
    assert [type(f) for f in frames(client.data_to_send())] == [derp.ClientInfo]
    client.receive_data(derp.ServerKey(SERVER_PUB).encode() + server_info(), 0.2)  # the late ServerKey agrees
    assert client.state is State.CONNECTED


def test_fast_start_with_known_key() -> None:
    client = make(fast_start=True, server_key=SERVER_PUB)
    assert client.state is State.AWAITING_SERVER_INFO
    out = client.data_to_send()
    request = derp.upgrade_request("derp.test", fast_start=True)
    assert out.startswith(request) and b"Derp-Fast-Start: 1\r\n" in request
    assert [type(f) for f in frames(out[len(request) :])] == [derp.ClientInfo]
    client.receive_data(derp.ServerKey(SERVER_PUB).encode() + server_info(), 0.1)
    assert client.state is State.CONNECTED
    client.receive_data(derp.ServerKey(OTHER_PUB).encode(), 0.2)
    assert client.close_event is not None and client.close_event.reason == "key-mismatch"


def test_fast_start_without_key_waits_for_server_key() -> None:
    client = make(fast_start=True)
    assert client.state is State.AWAITING_SERVER_KEY
    client.receive_data(derp.ServerKey(SERVER_PUB).encode() + server_info(), 0.1)
    assert client.state is State.CONNECTED and client.header_key is None


def test_read_timeout_after_120_s_of_silence() -> None:
    client = connected()
    client.receive_data(derp.KeepAlive().encode(), 50.0)
    assert client.get_timer() == pytest.approx(170.0)
    client.handle_timer(169.9)
    assert client.state is State.CONNECTED
    client.handle_timer(170.0)
    assert client.close_event is not None and client.close_event.reason == "read-timeout"


def test_handshake_timeout() -> None:
    client = make()
    client.receive_data(hello(), 1.0)
    client.handle_timer(9.99)
    assert client.state is State.AWAITING_SERVER_INFO
    client.handle_timer(10.0)
    assert client.close_event is not None and client.close_event.reason == "handshake-timeout"


def test_eof_and_local_close() -> None:
    client = connected()
    client.receive_eof(3.0)
    assert client.take_events() == [Closed("eof", "the server closed the connection")]
    other = connected()
    other.close(3.0)
    assert other.take_events() == [Closed("closed", "closed locally")]
    with pytest.raises(ValueError, match="unknown close reason"):
        other.close(3.0, "whatever")


def test_note_preferred_after_connect() -> None:
    client = connected()
    client.note_preferred(True)
    client.note_preferred(False)
    client.watch_conns()
    assert client.close_peer(PEER)
    assert client.forward_packet(PEER, OTHER_PUB, b"mesh")
    assert frames(client.data_to_send()) == [
        derp.NotePreferred(True),
        derp.NotePreferred(False),
        derp.WatchConns(),
        derp.ClosePeer(PEER),
        derp.ForwardPacket(PEER, OTHER_PUB, b"mesh"),
    ]


def test_trace_follows_the_transition_table() -> None:
    log = TraceLog()
    client = make(tracer=log)
    client.receive_data(stream(), 1.0)
    client.send_packet(PEER, b"out")
    client.receive_eof(2.0)
    transitions = log.of_kind("transition")
    path = [r.detail.split(" (")[0] for r in transitions]
    assert path == [
        "Idle -> AwaitingUpgrade",
        "AwaitingUpgrade -> AwaitingServerKey",
        "AwaitingServerKey -> AwaitingServerInfo",
        "AwaitingServerInfo -> Connected",
        "Connected -> Closed",
    ]
    for record in transitions:
        old, new = (State(s) for s in record.detail.split(" (")[0].split(" -> "))
        assert TRANSITIONS[(old, record.reason or "")] is new
    received = [r.detail for r in log.of_kind("received")]
    assert "HTTP 101 Switching Protocols" in received and any("RecvPacket" in d for d in received)
    assert any(r.raw == derp.SendPacket(PEER, b"out").encode() for r in log.of_kind("sent"))
    reached = {s for (_, _), s in TRANSITIONS.items()} | {State.IDLE}
    assert reached == set(State)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_garbage_after_handshake_never_raises(chunks: list[bytes]) -> None:
    client = connected()
    for chunk in chunks:
        client.receive_data(chunk, 1.0)
    client.handle_timer(2.0)
    for ev in client.take_events():
        if isinstance(ev, Closed):
            assert ev.reason in CLOSE_REASONS
    assert set(client.counters) <= set(DROP_REASONS)


@settings(max_examples=200)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=400))
def test_mutated_server_stream_never_raises(noise: bytes, at: int) -> None:
    data = bytearray(stream())
    at = min(at, len(data))
    data[at : at + len(noise)] = noise
    client = make()
    client.receive_data(bytes(data), 1.0)
    client.data_to_send()
    events = client.take_events()
    closes = [e for e in events if isinstance(e, Closed)]
    assert len(closes) <= 1 and all(e.reason in CLOSE_REASONS for e in closes)
    assert (client.state is State.CLOSED) == bool(closes)
