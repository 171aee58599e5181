"""The DERP relay core, driven with bytes built by the codec and crypto (no sockets): protocols.md §2."""

from __future__ import annotations

import pytest

from tests.sansio.derpharness import Harness
from toolkit.codec import derp
from toolkit.crypto.derp import seal_client_info
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.derpserver_conn import MIN_BURST, DerpLimits, State
from toolkit.timing import DEFAULT

GONE = derp.PeerGoneReason


def http(client, text: str) -> bytes:  # type: ignore[no-untyped-def]
    """Send one request head; return what the server wrote back (and forget it)."""
    before = len(client.raw)
    client.send(text.replace("\n", "\r\n").encode() + b"\r\n\r\n")
    return bytes(client.raw[before:])


# --- HTTP (protocols.md §2.1) -------------------------------------------------------------------


def test_upgrade_answers_101_then_server_key_golden() -> None:
    h = Harness()
    c = h.open()
    c.send(derp.upgrade_request("derp.test"))
    expected_101 = derp.upgrade_response(h.core.public_key)
    assert expected_101.startswith(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n")
    assert b"Derp-Version: 2\r\nDerp-Public-Key: " + h.core.public_key.hex().encode() in expected_101
    server_key = bytes.fromhex("0100000028") + b"DERP\xf0\x9f\x94\x91" + h.core.public_key.raw
    assert bytes(c.raw) == expected_101 + server_key
    assert h.core.state_of(c.conn_id) is State.AWAITING_CLIENT_INFO


def test_fast_start_skips_the_101() -> None:
    h = Harness()
    c = h.connect(fast_start=True)
    assert bytes(c.raw).startswith(b"\x01\x00\x00\x00\x28DERP")
    assert h.core.state_of(c.conn_id) is State.CONNECTED


@pytest.mark.parametrize("path", ["/derp/probe", "/derp/latency-check"])
def test_probe_paths_answer_empty_200_and_keep_the_connection(path: str) -> None:
    h = Harness()
    c = h.open()
    for _ in range(2):
        answer = http(c, f"GET {path} HTTP/1.1\nHost: x")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"Content-Length: 0\r\n\r\n")
        assert b"Access-Control-Allow-Origin: *" in answer
    assert c.closed is None and h.core.state_of(c.conn_id) is State.AWAITING_HTTP
    assert http(c, f"POST {path} HTTP/1.1\nHost: x").startswith(b"HTTP/1.1 405 ")
    # and the same connection can still upgrade
    c.send(derp.upgrade_request("x"))
    assert h.core.state_of(c.conn_id) is State.AWAITING_CLIENT_INFO


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        ("GET /derp HTTP/1.1\nHost: x", b"426"),  # no Upgrade
        ("GET /derp HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade", b"426"),  # not implemented
        ("GET /derp HTTP/1.1\nHost: x\nUpgrade: h2c\nConnection: Upgrade", b"426"),
        ("GET /nope HTTP/1.1\nHost: x", b"404"),
        ("GET /generate_204 HTTP/1.1\nHost: x", b"204"),
        ("GET / HTTP/1.1\nHost: x", b"200"),
    ],
)
def test_plain_requests(request_head: str, status: bytes) -> None:
    h = Harness()
    c = h.open()
    answer = http(c, request_head)
    assert answer.startswith(b"HTTP/1.1 " + status + b" ")
    assert c.closed is None  # HTTP/1.1 keep-alive
    if request_head.startswith("GET / "):
        assert h.core.public_key.hex().encode() in answer
    if status == b"204":
        assert b"Content-Length" not in answer and answer.endswith(b"\r\n\r\n")


def test_head_request_has_no_body() -> None:
    h = Harness()
    c = h.open()
    answer = http(c, "HEAD / HTTP/1.1\nHost: x")
    assert answer.endswith(b"\r\n\r\n") and b"Content-Length: " in answer and b"natkit" not in answer


@pytest.mark.parametrize("head", ["GET /nope HTTP/1.0", "GET /derp/probe HTTP/1.1\nConnection: close"])
def test_requests_not_kept_alive_are_closed_after_the_answer(head: str) -> None:
    h = Harness()
    c = h.open()
    answer = http(c, head)
    assert b"Connection: close" in answer
    assert c.closed is not None and c.closed.reason == "http_done" and not c.closed.abort


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
        b"\x00\x00\x00\x00",
        b"GET\t/derp HTTP/1.1\r\n",
        b"GET /derp HTTP/1.1\r\nbad header line\r\n\r\n",
        b"GET derp HTTP/1.1\r\n\r\n",
        b"POST /derp HTTP/1.1\r\nContent-Length: 5\r\nUpgrade: DERP\r\n\r\nhello",
        b"GET /derp HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n",  # head over 8 KiB
    ],
)
def test_garbage_before_the_upgrade_gets_400_and_a_close(garbage: bytes) -> None:
    h = Harness()
    c = h.open()
    other = h.connect()
    c.send(garbage)
    assert bytes(c.raw).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert c.closed is not None and c.closed.reason == "bad_http"
    assert h.core.closed["bad_http"] == 1
    assert "bad_http" in h.trace.reasons()  # type: ignore[union-attr]
    assert other.closed is None


def test_head_in_single_bytes() -> None:
    h = Harness()
    c = h.open()
    for b in derp.upgrade_request("derp.test"):
        c.send(bytes([b]))
    assert bytes(c.raw).startswith(b"HTTP/1.1 101 ")


def test_no_complete_head_within_the_handshake_timeout() -> None:
    h = Harness()
    slow, idle = h.open(), h.open()
    slow.send(b"GET /derp HTTP/1.1\r\n")
    h.advance(DEFAULT.derp_handshake_timeout - 0.5)
    assert slow.closed is None
    h.advance(1.0)
    assert slow.closed is not None and slow.closed.reason == "handshake_timeout"
    assert idle.closed is not None and idle.closed.reason == "handshake_timeout"


# --- handshake (protocols.md §2.4 steps 2-4) ----------------------------------------------------


def upgraded(h: Harness):  # type: ignore[no-untyped-def]
    c = h.open()
    c.send(derp.upgrade_request("x"))
    c.start_frames(b"")
    return c


@pytest.mark.parametrize(
    "first",
    [
        derp.SendPacket(node_key_pair(b"x")[1], b"hi").encode(),  # not a ClientInfo
        derp.frame_header(derp.FrameType.CLIENT_INFO, 55) + bytes(55),  # too short
        derp.frame_header(derp.FrameType.CLIENT_INFO, (256 << 10) + 1),  # too long: closed on the header
        derp.frame_header(derp.FrameType.CLIENT_INFO, 100) + bytes(100),  # does not open
    ],
)
def test_bad_client_info_closes(first: bytes) -> None:
    h = Harness()
    c = upgraded(h)
    c.send(first)
    assert c.closed is not None and c.closed.reason == "bad_client_info"
    assert h.core.clients() == []


def test_client_info_sealed_to_another_server_closes() -> None:
    h = Harness()
    c = upgraded(h)
    _, other_server = node_key_pair(b"another server")
    c.send_frame(seal_client_info(derp.ClientInfoJSON(), c.priv, other_server))
    assert c.closed is not None and c.closed.reason == "bad_client_info"


def test_client_info_claiming_another_key_closes() -> None:
    h = Harness()
    victim_pub = node_key_pair(b"victim")[1]
    c = upgraded(h)
    frame = seal_client_info(derp.ClientInfoJSON(), c.priv, h.core.public_key)
    c.send_frame(derp.ClientInfo(victim_pub, frame.nonce, frame.box))  # c cannot seal as the victim
    assert c.closed is not None and c.closed.reason == "bad_client_info"


def test_no_client_info_within_the_timeout() -> None:
    h = Harness()
    c = upgraded(h)
    h.advance(DEFAULT.derp_handshake_timeout + 0.1)
    assert c.closed is not None and c.closed.reason == "handshake_timeout"


def test_server_info_and_frames_pipelined_after_client_info() -> None:
    h = Harness()
    b = h.connect()
    a = upgraded(h)
    info = seal_client_info(derp.ClientInfoJSON(), a.priv, h.core.public_key).encode()
    a.send(info + derp.SendPacket(b.pub, b"early").encode())
    assert b.packets() == [(a.pub, b"early")]
    assert isinstance(a.frames[0], derp.ServerInfo)


def test_server_info_announces_the_rate_limit() -> None:
    plain = Harness().connect()
    assert plain.server_info == derp.ServerInfoJSON()  # type: ignore[attr-defined]
    assert derp.ServerInfoJSON().to_json() == b'{"version":2}'
    limited = Harness(limits=DerpLimits(rate_bytes_per_s=5000, burst_bytes=100)).connect()
    assert limited.server_info == derp.ServerInfoJSON(2, 5000, MIN_BURST)  # type: ignore[attr-defined]
