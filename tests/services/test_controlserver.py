"""The control server on real sockets: netmap streams and long polls between two nodes, HTTP keep-alive and
limits (413, 431, 408 for slow clients), Hypothesis fuzz over raw TCP against the running process, restarts
that keep every node, and ``natkit control-server`` (start line, SIGTERM, one-line errors). Independent
clients: the standard library's ``http.client`` and curl."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import ipaddress
import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support import ROOT, free_tcp_port, natkit_service, require_tool
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.sansio.control_netmap import RegisterBody
from toolkit.services.controlserver import ControlServer
from toolkit.services.controlstore import SQLiteStore
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

KEY = "lab-key"
FAST = DEFAULT.replace(control_stream_keepalive=0.3, control_long_poll=0.5)


def body_for(seed: int, hostname: str = "") -> dict[str, Any]:
    nk = node_key_pair(bytes([seed]) * 4)[1]
    dk = disco_key_pair(bytes([seed]) * 4)[1]
    obj = RegisterBody(KEY, nk, dk, (Endpoint.parse(f"192.0.2.{seed}:41641"),), 0, hostname or f"n{seed}").to_obj()
    return obj


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@asynccontextmanager
async def serving(db: str | Path = ":memory:", **kwargs: Any) -> AsyncIterator[ControlServer]:
    kwargs.setdefault("timing", FAST)
    server = ControlServer([Endpoint.parse("127.0.0.1:0")], db, [KEY], **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Conn:
    """One raw HTTP/1.1 connection: write requests, read responses (Content-Length bodies)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: ControlServer) -> Conn:
        return cls(*await asyncio.open_connection(*server.endpoints[0].as_tuple()))

    def send(self, method: str, target: str, obj: Any = None, token: str | None = None, extra: str = "") -> None:
        body = b"" if obj is None else json.dumps(obj).encode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: t\r\n{auth}{extra}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)

    async def response(self) -> tuple[int, dict[str, str], Any]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status = int(head.split(" ", 2)[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)}
        if headers.get("content-type") == "text/event-stream":
            return status, headers, None
        body = await self.reader.readexactly(int(headers["content-length"]))
        return status, headers, json.loads(body)

    async def call(self, method: str, target: str, obj: Any = None, token: str | None = None) -> Any:
        self.send(method, target, obj, token)
        status, _, body = await self.response()
        assert status == 200, body
        return body

    async def event(self, timeout: float = 1.0) -> dict[str, Any]:
        """The next ``netmap`` event of a stream (keepalive comments skipped)."""
        while True:
            chunk = (await asyncio.wait_for(self.reader.readuntil(b"\n\n"), timeout)).decode()
            if chunk.startswith("event: netmap\n"):
                return json.loads(chunk.split("data: ", 1)[1])

    def close(self) -> None:
        self.writer.close()


async def registered(server: ControlServer, seed: int) -> tuple[Conn, str]:
    conn = await Conn.open(server)
    answer = await conn.call("POST", "/machine/register", body_for(seed))
    return conn, answer["Token"]


# --- two nodes ------------------------------------------------------------------------------------------


def test_two_nodes_see_each_other_and_updates_arrive_within_a_second() -> None:
    async def scenario() -> None:
        async with serving() as server:
            a, token_a = await registered(server, 1)
            b, token_b = await registered(server, 2)
            stream_a, stream_b = await Conn.open(server), await Conn.open(server)
            stream_a.send("GET", "/machine/map?stream=1", token=token_a)
            stream_b.send("GET", "/machine/map?stream=1", token=token_b)
            for s in (stream_a, stream_b):
                status, headers, _ = await s.response()
                assert status == 200 and headers["content-type"] == "text/event-stream"
            first_a = await stream_a.event()
            assert [p["Name"] for p in first_a["Peers"]] == ["n2"]
            first_b = await stream_b.event()
            assert first_b["Peers"][0]["NodeKey"] == body_for(1)["NodeKey"]
            while (await stream_a.event())["Peers"][0]["Online"] is not True:  # b's stream came up
                pass
            started = time.monotonic()
            await b.call("POST", "/machine/update", {"Endpoints": ["203.0.113.7:41641"], "HomeDERP": 0}, token_b)
            while (seen := await stream_a.event())["Peers"][0]["Endpoints"] != ["203.0.113.7:41641"]:
                pass
            assert time.monotonic() - started < 1.0 and seen["Version"] == server.core.version
            stream_b.close()
            while (await stream_a.event())["Peers"][0]["Online"] is not False:  # b's stream went away
                pass
            for conn in (a, b, stream_a):
                conn.close()

    run(scenario())


def test_stream_keepalives_arrive() -> None:
    async def scenario() -> None:
        async with serving() as server:
            conn, token = await registered(server, 1)
            conn.send("GET", "/machine/map?stream=1", token=token)
            await conn.response()
            await conn.event()
            started = time.monotonic()
            assert await asyncio.wait_for(conn.reader.readuntil(b"\n\n"), 2) == b": keepalive\n\n"
            assert 0.1 < time.monotonic() - started < 1.0
            conn.close()

    run(scenario())


def test_long_poll_answers_on_change_and_after_the_timeout() -> None:
    async def scenario() -> None:
        async with serving() as server:
            a, token_a = await registered(server, 1)
            b, token_b = await registered(server, 2)
            version = server.core.version
            a.send("GET", f"/machine/map?since={version}", token=token_a)
            await asyncio.sleep(0.1)
            started = time.monotonic()
            await b.call("POST", "/machine/update", {"HomeDERP": 0, "Endpoints": ["203.0.113.1:1"]}, token_b)
            status, _, netmap = await asyncio.wait_for(a.response(), 1)
            assert status == 200 and netmap["Version"] == version + 1 and time.monotonic() - started < 1.0
            started = time.monotonic()
            netmap = await a.call("GET", f"/machine/map?since={version + 1}", token=token_a)
            assert netmap["Version"] == version + 1 and 0.4 < time.monotonic() - started < 2.0
            a.close()
            b.close()

    run(scenario())


def test_keep_alive_serves_many_requests_on_one_connection() -> None:
    async def scenario() -> None:
        async with serving() as server:
            conn = await Conn.open(server)
            for _ in range(3):
                conn.send("GET", "/health")
            replies = [await conn.response() for _ in range(3)]  # pipelined, answered in order
            assert [r[0] for r in replies] == [200, 200, 200] and replies[0][2] == {"Status": "ok"}
            conn.send("GET", "/", extra="Connection: close\r\n")
            status, headers, info = await conn.response()
            assert status == 200 and headers["connection"] == "close" and info["Server"] == "natkit control-server"
            assert await conn.reader.read() == b""
            conn.close()

    run(scenario())


# --- HTTP limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST /machine/register HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"NOT A REQUEST\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: t\r\n bad fold\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST /machine/register HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        (b"GET http://t/ HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ],
)
def test_refused_requests_get_an_error_and_the_connection_closes(raw: bytes, status: int) -> None:
    async def scenario() -> None:
        async with serving() as server:
            conn = await Conn.open(server)
            conn.writer.write(raw)
            got, headers, body = await conn.response()
            assert got == status and headers["connection"] == "close" and body["error"]
            assert await asyncio.wait_for(conn.reader.read(), 2) == b""
            ok = await Conn.open(server)
            assert await ok.call("GET", "/health") == {"Status": "ok"}  # the server keeps serving
            conn.close()
            ok.close()

    run(scenario())


def test_expect_100_continue_gets_the_interim_answer() -> None:
    async def scenario() -> None:
        async with serving() as server:
            conn = await Conn.open(server)
            conn.send("POST", "/machine/register", body_for(1), extra="Expect: 100-continue\r\n")
            assert await conn.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            status, _, answer = await conn.response()
            assert status == 200 and answer["Node"]["ID"] == 1
            conn.close()

    run(scenario())


def test_slow_loris_is_cut_off_without_hurting_others() -> None:
    async def scenario() -> None:
        async with serving(timing=FAST.replace(control_request_timeout=0.5)) as server:
            slow = await Conn.open(server)
            started = time.monotonic()

            async def dribble() -> None:
                for byte in b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"z" * 100:
                    slow.writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            dribbler = asyncio.create_task(dribble())
            latencies = []
            for _ in range(5):
                fast = await Conn.open(server)
                t0 = time.monotonic()
                assert await fast.call("GET", "/health") == {"Status": "ok"}
                latencies.append(time.monotonic() - t0)
                fast.close()
                await asyncio.sleep(0.05)
            status, _, body = await asyncio.wait_for(slow.response(), 3)
            assert status == 408 and "0.5 s" in body["error"]
            assert 0.4 < time.monotonic() - started < 1.5 and max(latencies) < 0.3
            assert await asyncio.wait_for(slow.reader.read(), 2) == b""
            dribbler.cancel()
            slow.close()
            assert server.counters["timeout"] == 1

    run(scenario())


def test_silent_and_idle_connections_are_closed() -> None:
    async def scenario() -> None:
        async with serving(timing=FAST.replace(control_request_timeout=0.3, control_idle_timeout=0.8)) as server:
            silent = await Conn.open(server)
            started = time.monotonic()
            assert await asyncio.wait_for(silent.reader.read(), 3) == b""  # never said a word
            assert 0.2 < time.monotonic() - started < 0.7
            conn = await Conn.open(server)
            assert await conn.call("GET", "/health") == {"Status": "ok"}
            started = time.monotonic()
            assert await asyncio.wait_for(conn.reader.read(), 3) == b""  # kept alive, then idle too long
            assert 0.7 < time.monotonic() - started < 2.0
            conn.close()
            silent.close()

    run(scenario())


def test_stop_ends_streams_and_polls() -> None:
    async def scenario() -> None:
        server = ControlServer([Endpoint.parse("127.0.0.1:0")], ":memory:", [KEY], timing=DEFAULT)
        await server.start()
        a, token = await registered(server, 1)
        b = await Conn.open(server)
        b.send("GET", "/machine/map?stream=1", token=token)
        await b.response()
        await b.event()
        a.send("GET", f"/machine/map?since={server.core.version}", token=token)
        await asyncio.sleep(0.1)
        await asyncio.wait_for(server.stop(), 3)
        assert await asyncio.wait_for(a.reader.read(), 2) == b""  # the poll ends without an answer
        assert await asyncio.wait_for(b.reader.read(), 2) == b""  # and so does the stream
        a.close()
        b.close()

    run(scenario())


# --- the process: restart, CLI, fuzz, independent clients -----------------------------------------------


def client_call(port: int, method: str, path: str, obj: Any = None, token: str | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=None if obj is None else json.dumps(obj), headers=headers)
    reply = conn.getresponse()
    answer = json.loads(reply.read())
    conn.close()
    return reply.status, answer


def start(db: Path, port: int, *extra: str) -> Any:
    return natkit_service("control-server", "--db", str(db), "--authkey", KEY, "--listen", f"127.0.0.1:{port}", *extra)


def test_restart_keeps_nodes_keys_and_addresses(tmp_path: Path) -> None:
    db = tmp_path / "control.db"
    port = free_tcp_port()
    with start(db, port) as server:
        assert server.start_line == f"natkit control-server: listening on tcp 127.0.0.1:{port}"
        answers = [client_call(port, "POST", "/machine/register", body_for(seed))[1] for seed in (1, 2)]
        assert server.stop() == 0
        assert "stopped after" in server.output() and "2 new nodes, 2 requests answered" in server.output()
    port = free_tcp_port()
    with start(db, port):
        status, netmap = client_call(port, "GET", "/machine/map", token=answers[0]["Token"])
        assert status == 200
        assert netmap["Self"]["Addresses"] == answers[0]["Node"]["Addresses"]
        assert netmap["Self"]["NodeKey"] == answers[0]["Node"]["NodeKey"]
        assert [p["Addresses"] for p in netmap["Peers"]] == [answers[1]["Node"]["Addresses"]]
        third = client_call(port, "POST", "/machine/register", body_for(3))[1]
        assert third["Node"]["Addresses"] == ["100.64.0.3/32", "fd7a:115c:a1e0::3/128"]
        again = client_call(port, "POST", "/machine/register", body_for(2))[1]
        assert again["Node"]["ID"] == 2 and again["Node"]["Addresses"] == answers[1]["Node"]["Addresses"]
    store = SQLiteStore(db)
    assert store.authkey_uses() == {hashlib.sha256(KEY.encode()).hexdigest(): 4}  # the pre-auth key, hashed
    assert [n.addr_v4 for n in store.nodes()] == [ipaddress.IPv4Address(f"100.64.0.{i}") for i in (1, 2, 3)]
    store.close()


def test_curl_reads_the_event_stream(tmp_path: Path) -> None:
    curl = require_tool("curl")
    port = free_tcp_port()
    with start(tmp_path / "c.db", port):
        token = client_call(port, "POST", "/machine/register", body_for(1, "alice"))[1]["Token"]
        url = f"http://127.0.0.1:{port}/machine/map?stream=1"
        result = subprocess.run(
            [curl, "-sN", "--max-time", "1.5", "-H", f"Authorization: Bearer {token}", url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 28  # curl's "timed out": the stream stays open
        event, data = result.stdout.split("\n")[:2]
        assert event == "event: netmap" and json.loads(data.removeprefix("data: "))["Self"]["Name"] == "alice"


def natkit(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--authkey", "k"], "--db FILE"),
        (["--db", "x.db"], "--authkey KEY"),
        (["--db", "x.db", "--authkey", "a b"], "--authkey 'a b'"),
        (["--db", "x.db", "--authkey", "k", "--derp-map", "missing.json"], "--derp-map missing.json: cannot read"),
        (["--db", "x.db", "--authkey", "k", "--derp-map", "bad.json"], "'RegionID' must be a int"),
        (["--db", "x.db", "--authkey", "k", "--derp-map", "notjson.json"], "not JSON"),
        (["--db", "notadb", "--authkey", "k", "--listen", "127.0.0.1:0"], "not a natkit control database"),
        (["--db", "nodir/x.db", "--authkey", "k", "--listen", "127.0.0.1:0"], "cannot open"),
        (["--db", "x.db", "--authkey", "k", "--listen", "nonsense"], "--listen 'nonsense'"),
    ],
)
def test_cli_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "bad.json").write_text('{"Regions": {"1": {"RegionID": "one"}}}')
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "notadb").write_bytes(b"this is not sqlite" * 100)
    args = [a if a.startswith(("-", "127.")) or a in ("k", "a b") else str(tmp_path / a) for a in args]
    result = natkit("control-server", *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("natkit: error:"), result.stderr
    assert words in lines[0].replace(str(tmp_path) + "/", "")


def test_cli_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = natkit(
            "control-server", "--db", str(tmp_path / "c.db"), "--authkey", "k", "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 2 and "cannot listen on tcp" in result.stderr


def test_cli_with_a_derp_map_serves_it(tmp_path: Path) -> None:
    derp = {"Regions": {"1": {"RegionID": 1, "RegionCode": "lab", "Nodes": [{"Name": "1a", "HostName": "d.lab"}]}}}
    (tmp_path / "derp.json").write_text(json.dumps(derp))
    port = free_tcp_port()
    with start(tmp_path / "c.db", port, "--derp-map", str(tmp_path / "derp.json")) as server:
        status, served = client_call(port, "GET", "/derpmap")
        assert status == 200 and served["Regions"]["1"]["Nodes"][0]["HostName"] == "d.lab"
        assert server.stop() == 0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_tcp_port()
    with start(tmp_path_factory.mktemp("fuzz") / "c.db", port):
        yield port


RESPONSE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [A-Za-z -]+\r\n")
LATIN1 = st.text(alphabet=st.characters(codec="latin-1"), max_size=12)
METHODS = st.sampled_from(["GET", "POST", "PUT", "get", ""]) | LATIN1
TARGETS = st.sampled_from(["/", "/health", "/derpmap", "/machine/register", "/machine/map?since=0", "*", ""]) | LATIN1
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1x", ""])
NAMES = st.sampled_from(["Host", "Content-Length", "Connection", "Transfer-Encoding", "Authorization", "Expect"])
VALUES = st.sampled_from(["t", "5", "0", "-1", "99999999", "close", "chunked", "Bearer x", "100-continue"])
BODIES = st.binary(max_size=120) | st.sampled_from([b'{"AuthKey": 1}', b"{}", b"[]", b'{"NodeKey": "nodekey:00"}'])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    """A request-shaped message with any of its parts wrong (or all right)."""
    sane = draw(st.booleans())  # a valid frame around wrong content, or anything goes
    method = draw(st.sampled_from(["GET", "POST"]) if sane else METHODS)
    target = draw(st.sampled_from(["/", "/health", "/machine/register", "/machine/map"]) if sane else TARGETS)
    line = f"{method} {target} {'HTTP/1.1' if sane else draw(VERSIONS)}\r\n"
    headers = draw(st.lists(st.tuples(NAMES | LATIN1, VALUES | LATIN1), max_size=0 if sane else 4))
    body = draw(BODIES)
    if sane or draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    if sane or draw(st.booleans()):
        headers.append(("Host", "t"))
    head = line + "".join(f"{k}: {v}\r\n" for k, v in draw(st.permutations(headers))) + "\r\n"
    return head.encode("latin-1") + body


def parse_responses(data: bytes) -> list[int]:
    """Every response in ``data`` is well formed: status line, headers, a JSON body of Content-Length bytes."""
    statuses = []
    while data:
        match = RESPONSE.match(data)
        assert match is not None, data[:200]
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep
        headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        status = int(match.group(1))
        if status == 100:
            data = rest
            continue
        length = int(headers[b"Content-Length"])
        body = json.loads(rest[:length])
        assert isinstance(body, dict) and len(rest) >= length
        if status >= 400:
            assert body["error"]
        statuses.append(status)
        data = rest[length:]
    return statuses


@settings(max_examples=200)
@given(data=st.lists(requests(), min_size=1, max_size=3).map(b"".join) | st.binary(max_size=300))
def test_fuzzed_bytes_get_well_formed_answers_and_the_server_keeps_serving(running: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", running), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    for status in parse_responses(received) or [0]:
        event(f"status {status}")
    assert client_call(running, "GET", "/health") == (200, {"Status": "ok"})
