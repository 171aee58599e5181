"""The coordination server in the sim (toolkit/lab/sim/control.py, control_client.py): natkit's ControlCore over
the sim's TCP, HTTP/1.1 with the asyncio server's bytes, and the node's callback client, through the NATs of
labs/easy-easy.yaml: registration, netmap streams, updates, 401s, restarts, and what a capture shows."""

from __future__ import annotations

import asyncio
import http.client
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.lab.labservices import LAB_AUTHKEY
from toolkit.lab.sim.control import ControlServerDriver, SimControlClient
from toolkit.lab.sim.lab import SimLab
from toolkit.lab.sim.packet import TCP, Packet
from toolkit.lab.sim.tcp import TcpConnection, connect
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import Topology
from toolkit.sansio.control_netmap import NetMap, RegisterBody, UpdateBody
from toolkit.services.controlclient import ControlError
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

LABS = Path(__file__).resolve().parents[3] / "labs"
CONTROL = Endpoint.parse("198.51.100.30:8081")


def body(seed: int, hostname: str, authkey: str = LAB_AUTHKEY, port: int = 41641) -> RegisterBody:
    nk = node_key_pair(bytes([seed]) * 4)[1]
    dk = disco_key_pair(bytes([seed]) * 4)[1]
    return RegisterBody(authkey, nk, dk, (Endpoint.parse(f"192.168.{seed}.100:{port}"),), 1, hostname)


def world(seed: int = 1) -> SimWorld:
    w = SimWorld(Topology.from_yaml(LABS / "easy-easy.yaml"), seed=seed)
    w.start_control_server("control1")
    return w


def two_nodes(w: SimWorld) -> tuple[SimControlClient, SimControlClient, list[NetMap], list[NetMap]]:
    alice, bob = w.control_client("alice"), w.control_client("bob")
    alice.register(body(1, "alice"))
    bob.register(body(2, "bob"))
    maps_a: list[NetMap] = []
    maps_b: list[NetMap] = []
    alice.follow(maps_a.append)
    bob.follow(maps_b.append)
    w.sched.run_for(2.0)
    return alice, bob, maps_a, maps_b


def peer_names(netmap: NetMap) -> list[str]:
    return [p.name for p in netmap.peers]


def test_two_nodes_behind_nats_register_and_see_each_other() -> None:
    w = world()
    alice, bob, maps_a, maps_b = two_nodes(w)
    assert alice.token and bob.token and alice.token != bob.token
    assert alice.self_node is not None and bob.self_node is not None
    assert str(alice.self_node.ipv4) == "100.64.0.1" and str(bob.self_node.ipv4) == "100.64.0.2"
    assert peer_names(maps_a[-1]) == ["bob"] and peer_names(maps_b[-1]) == ["alice"]
    assert maps_a[-1].peers[0].node_key == body(2, "bob").node_key
    assert maps_a[-1].peers[0].online and maps_b[-1].peers[0].online  # both streams are open
    assert maps_a[-1].derp_map is not None and 1 in maps_a[-1].derp_map.regions  # the lab's DERP map
    assert alice.stream_open and bob.stream_open
    # through the NATs: each home router holds TCP mappings to the control server only
    for router, host in (("r1", "alice"), ("r2", "bob")):
        entries = w.nat_table(router)
        assert entries and all(e.proto == "tcp" and e.peers == (CONTROL,) for e in entries)
        assert all(e.private.ip == w.topology.host(host).v4 for e in entries)
    derp = alice.derp_map()
    w.sched.run_for(1.0)
    assert derp.value().regions[1].nodes[0].host_name == "derp1"


def test_an_update_reaches_the_other_stream() -> None:
    w = world()
    alice, _bob, maps_a, maps_b = two_nodes(w)
    before = len(maps_b)
    new = (Endpoint.parse("203.0.113.7:41641"), Endpoint.parse("192.168.1.100:41641"))
    seen: list[object] = []
    call = alice.update(UpdateBody(endpoints=new), on_done=seen.append)
    w.sched.run_for(1.0)
    assert call.done and call.value().endpoints == new and seen == [call.result]
    assert len(maps_b) == before + 1
    assert maps_b[-1].peers[0].endpoints == new and maps_b[-1].version > maps_b[before - 1].version
    assert maps_a[-1].self_node.endpoints == new  # the sender's own stream tells it too


def test_a_bad_authkey_gets_401_with_the_message() -> None:
    w = world()
    mallory = w.control_client("alice")
    errors: list[ControlError] = []
    call = mallory.register(body(3, "mallory", authkey="wrong-key"), on_error=errors.append)
    w.sched.run_for(1.0)
    assert call.done and call.error is not None and errors == [call.error]
    assert call.error.status == 401 and "unknown pre-auth key" in call.error.message
    with pytest.raises(ControlError, match="401 unknown pre-auth key"):
        call.value()
    assert mallory.token is None and w.control_servers["control1"].core.counters["bad-authkey"] == 1


def test_a_restart_with_the_same_store_keeps_nodes_and_streams_reconnect() -> None:
    w = world()
    alice, bob, maps_a, maps_b = two_nodes(w)
    ids = (alice.self_node.id, bob.self_node.id) if alice.self_node and bob.self_node else ()
    tokens = (alice.token, bob.token)
    w.control_servers["control1"].close()
    w.sched.run_for(3.0)  # the server is down: the streams are gone, the clients keep dialling
    assert not alice.stream_open and not bob.stream_open
    w.start_control_server("control1")
    w.sched.run_for(10.0)
    assert alice.stream_open and bob.stream_open and alice.stream_connects == 2
    assert (alice.token, bob.token) == tokens  # the same tokens still work: nothing was registered again
    assert alice.counters["stream-401"] == 0
    assert (maps_a[-1].self_node.id, maps_b[-1].self_node.id) == ids
    assert peer_names(maps_a[-1]) == ["bob"] and maps_a[-1].peers[0].online
    call = bob.update(UpdateBody(endpoints=(Endpoint.parse("203.0.113.9:41641"),)))
    w.sched.run_for(1.0)
    assert call.value().id == ids[1]
    assert maps_a[-1].peers[0].endpoints == (Endpoint.parse("203.0.113.9:41641"),)
    assert len(w.control_servers["control1"].core.store.nodes()) == 2


def test_a_server_that_forgot_everything_makes_clients_register_again() -> None:
    w = world()
    alice, bob, maps_a, maps_b = two_nodes(w)
    w.control_servers["control1"].close()
    del w.control_stores["control1"]  # a new database: old tokens are unknown
    w.start_control_server("control1")
    w.sched.run_for(10.0)
    assert alice.counters["stream-401"] == 1 and alice.stream_open and bob.stream_open
    assert peer_names(maps_a[-1]) == ["bob"] and peer_names(maps_b[-1]) == ["alice"]
    call = alice.update(UpdateBody(home_derp=1))
    w.sched.run_for(1.0)
    assert call.value().name == "alice"


def test_calls_wait_for_a_server_that_is_down_and_then_go_through() -> None:
    w = world()
    w.control_servers["control1"].close()
    client = w.control_client("alice")
    call = client.register(body(1, "alice"))
    w.sched.run_for(5.0)
    assert not call.done and client.counters["transport-errors"] == 0  # SYNs still retransmitted
    w.start_control_server("control1")
    w.sched.run_for(20.0)
    assert call.done and call.value().name == "alice"
    strict = w.control_client("bob", retry=False)
    w.control_servers["control1"].close()
    failed = strict.register(body(2, "bob"))
    w.sched.run_for(DEFAULT.control_request_timeout + 1)
    assert failed.error is not None and failed.error.status == 0


def _records(w: SimWorld, run: Callable[[], object]) -> list[tuple[Endpoint, Endpoint, bytes]]:
    """The TCP payloads the control server's interface saw, in order: (source, destination, bytes)."""
    capture = w.capture("control1", "eth0")
    run()
    packets = [Packet.parse(p.raw) for p in capture.packets]
    return [(p.src, p.dst, p.payload) for p in packets if p.proto == TCP and p.payload]


def _stream_bytes(segments: list[tuple[Endpoint, Endpoint, bytes]], src: Endpoint, dst: Endpoint) -> bytes:
    return b"".join(p for s, d, p in segments if s == src and d == dst)


class _Sock:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))


def test_the_capture_shows_http_1_1_that_http_client_reads() -> None:
    w = world(seed=5)
    segments = _records(w, lambda: two_nodes(w))
    requests = [p for s, d, p in segments if d == CONTROL and p.startswith(b"POST ")]
    assert requests and all(b" HTTP/1.1\r\nHost: 198.51.100.30:8081\r\n" in p for p in requests)
    assert any(p.startswith(b"POST /machine/register HTTP/1.1\r\n") for p in requests)
    streams = [p for s, d, p in segments if d == CONTROL and p.startswith(b"GET /machine/map?stream=1 HTTP/1.1")]
    assert len(streams) == 2 and all(b"Authorization: Bearer " in p for p in streams)
    # the public side of r1's NAT talks to the server; the register answer parses with http.client
    r1 = w.topology.router("r1").wan_v4
    (public,) = {s for s, d, p in segments if s.ip == r1 and p.startswith(b"POST /machine/register ")}
    (stream,) = {s for s, d, p in segments if s.ip == r1 and p.startswith(b"GET /machine/map?stream=1 ")}
    answer_bytes = _stream_bytes(segments, CONTROL, public)
    assert answer_bytes.startswith(b"HTTP/1.1 200 OK\r\nDate: Tue, 14 Nov 2023 22:13:2")  # EPOCH + virtual time
    response = http.client.HTTPResponse(_Sock(answer_bytes))  # type: ignore[arg-type]
    response.begin()
    assert response.status == 200 and response.version == 11 and not response.will_close
    assert response.getheader("Content-Type") == "application/json" and b'"Token":' in response.read()
    events = _stream_bytes(segments, CONTROL, stream)
    head, _, rest = events.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Type: text/event-stream" in head
    assert b"Connection: close" in head and b"Content-Length" not in head  # ends with the connection
    assert rest.startswith(b"event: netmap\ndata: {")
    # same seed, same bytes
    assert _records(world(seed=5), lambda: None) == []
    again = world(seed=5)
    assert _records(again, lambda: two_nodes(again)) == segments


class RawClient:
    """A hand-written HTTP client on a sim TCP connection, for what the node's client never sends."""

    def __init__(self, w: SimWorld, host: str = "alice") -> None:
        self.data = bytearray()
        self.closed: str | None = None
        self.conn: TcpConnection = connect(w.machine(host), CONTROL, on_data=self.data.extend, on_closed=self._closed)
        self.conn.on_eof = lambda: self._closed("eof")
        w.sched.run_for(0.5)

    def _closed(self, reason: str) -> None:
        self.closed = self.closed or reason

    def send(self, data: bytes) -> None:
        self.conn.send(data)


def test_http_limits_and_keep_alive_match_the_asyncio_server() -> None:
    w = world()
    c = RawClient(w)
    c.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
    w.sched.run_for(0.5)
    assert c.data.count(b"HTTP/1.1 200 OK\r\n") == 2 and b'{"Status":"ok"}' in c.data and c.closed is None
    c.send(b"GET /health HTTP/1.1\r\n\r\n")  # no Host
    w.sched.run_for(0.5)
    assert b"HTTP/1.1 400 Bad Request\r\n" in c.data and b"needs a Host header" in c.data and c.closed == "eof"
    big = RawClient(w)
    big.send(b"POST /machine/register HTTP/1.1\r\nHost: x\r\nContent-Length: 999999\r\n\r\n")
    w.sched.run_for(0.5)
    assert big.data.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in big.data
    slow = RawClient(w)
    slow.send(b"GET /hea")
    w.sched.run_for(DEFAULT.control_request_timeout + 1)
    assert b"HTTP/1.1 408 Request Timeout\r\n" in slow.data and slow.closed == "eof"
    idle = RawClient(w)
    w.sched.run_for(DEFAULT.control_request_timeout + 1)
    assert idle.data == b"" and idle.closed == "eof"  # a new connection that says nothing is closed
    old = RawClient(w)
    old.send(b"GET /health HTTP/1.0\r\n\r\n")
    w.sched.run_for(0.5)
    assert old.data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in old.data
    assert w.control_servers["control1"].counters == {"bad-http": 1, "too-large": 1, "timeout": 1}


def test_long_poll_and_keepalives_on_the_virtual_clock() -> None:
    fast = DEFAULT.replace(control_stream_keepalive=2.0, control_long_poll=5.0)
    w = SimWorld(Topology.from_yaml(LABS / "easy-easy.yaml"), seed=1)
    server: ControlServerDriver = w.start_control_server("control1", timing=fast)
    alice, bob, maps_a, _maps_b = two_nodes(w)
    version = maps_a[-1].version
    c = RawClient(w, "alice")
    c.send(
        f"GET /machine/map?since={version} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n\r\n".encode()
    )
    w.sched.run_for(1.0)
    assert c.data == b""  # waiting for a change
    bob.update(UpdateBody(endpoints=(Endpoint.parse("203.0.113.5:1"),)))
    w.sched.run_for(0.5)
    assert c.data.startswith(b"HTTP/1.1 200 OK\r\n") and b"203.0.113.5:1" in c.data
    c.data.clear()
    c.send(
        f"GET /machine/map?since={version + 1} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n\r\n".encode()
    )
    w.sched.run_for(fast.control_long_poll + 0.5)  # nothing changes: answered at the deadline
    assert c.data.startswith(b"HTTP/1.1 200 OK\r\n")
    w.sched.run_for(2 * fast.control_stream_keepalive + 0.5)
    assert alice.stream_open and server.core.get_timer() is not None
    assert alice.stream.parser.comments >= 2  # ": keepalive" lines arrived on the stream


def test_simlab_up_runs_the_control_server() -> None:
    async def main() -> None:
        lab = SimLab(Topology.from_yaml(LABS / "easy-easy.yaml"), seed=2)
        await lab.up()
        try:
            assert lab.world is not None and not lab.skipped
            status = {e.name: e for e in lab.status().elements}
            assert status["control1"].services == ("control-server tcp 198.51.100.30:8081",)
            client = lab.world.control_client("bob")
            call = client.register(body(2, "bob"))
            await lab.sleep(1.0)
            assert str(call.value().ipv4) == "100.64.0.1"
            assert (await lab.logs("control1").__anext__()).startswith("natkit control-server: listening on tcp ")
        finally:
            await lab.down()

    asyncio.run(main())


def test_an_update_answered_401_registers_again_and_is_sent_once_more() -> None:
    w = world()
    client = w.control_client("alice")
    client.register(body(1, "alice"))
    w.sched.run_for(1.0)
    old_token = client.token
    w.control_servers["control1"].close()
    del w.control_stores["control1"]  # the server forgets the token
    w.start_control_server("control1")
    new = (Endpoint.parse("203.0.113.44:41641"),)
    call = client.update(UpdateBody(endpoints=new))
    w.sched.run_for(2.0)
    assert call.value().endpoints == new and client.token != old_token
    assert client.counters["errors"] == 0 and client.counters["answers"] == 3  # register, register again, update
    assert [n.endpoints for n in w.control_servers["control1"].core.store.nodes()] == [new]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]))
def test_garbage_never_breaks_the_sim_server(garbage: bytes, tail: bytes) -> None:
    w = world()
    c = RawClient(w)
    c.send(garbage + tail)
    w.sched.run_for(DEFAULT.control_request_timeout + 1)
    event("answered" if c.data.startswith(b"HTTP/1.1 ") else "silent")
    if c.data:
        assert re.match(rb"HTTP/1\.1 [1-5][0-9][0-9] ", bytes(c.data))
    ok = RawClient(w, "bob")
    ok.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    w.sched.run_for(0.5)
    assert ok.data.startswith(b"HTTP/1.1 200 OK\r\n")


def _masked(data: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: X\r\n", data)


def test_the_sim_server_answers_byte_for_byte_like_the_asyncio_server() -> None:
    requests = (
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /machine/map HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\n"
        b"POST /machine/register HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n[1,2]"
        b"GET /derpmap HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /health HTTP/1.0\r\n\r\n"
    )

    async def asyncio_answer() -> bytes:
        from toolkit.lab.labservices import derp_map
        from toolkit.services.controlserver import ControlServer

        topo = Topology.from_yaml(LABS / "easy-easy.yaml")
        server = ControlServer([Endpoint.parse("127.0.0.1:0")], ":memory:", [LAB_AUTHKEY], derp_map(topo))
        await server.start()
        try:
            host, port = server.endpoints[0].as_tuple()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(requests)
            data = await asyncio.wait_for(reader.read(), 5.0)  # the HTTP/1.0 request closes the connection
            writer.close()
            return data
        finally:
            await server.stop()

    w = world()
    c = RawClient(w)
    c.send(requests)
    w.sched.run_for(1.0)
    assert c.closed == "eof" and bytes(c.data).count(b"HTTP/1.1 ") == 7
    assert _masked(bytes(c.data)) == _masked(asyncio.run(asyncio_answer()))
