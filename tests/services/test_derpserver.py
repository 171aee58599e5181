"""The DERP relay service on loopback: real sockets, real TLS, in-process (protocols.md §2)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.services.derpwire import client_tls, connect, open_raw, read_head, self_signed
from tests.support import free_tcp_port
from toolkit.codec import derp
from toolkit.crypto.keys import node_key_pair
from toolkit.errors import UsageError
from toolkit.services.derpserver import DerpLimits, DerpServer
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

MESH_KEY = "5e" * 32


@contextlib.asynccontextmanager
async def running(**kwargs: object) -> AsyncIterator[DerpServer]:
    server = DerpServer(node_key_pair(b"derp service")[0], [Endpoint.parse("127.0.0.1:0")], **kwargs)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_start_lists_url_and_key_and_binds_port_zero() -> None:
    async def main() -> None:
        server = DerpServer(node_key_pair(b"k")[0], [Endpoint.parse("127.0.0.1:0")])
        where = await server.start()
        try:
            port = server.endpoints[0].port
            assert port != 0
            assert where == [f"http://127.0.0.1:{port}/derp", str(server.public_key)]
            assert server.url() == where[0] and where[1].startswith("nodekey:")
        finally:
            await server.stop()

    run(main)


def test_wildcard_listener_url_is_loopback() -> None:
    async def main() -> None:
        server = DerpServer(node_key_pair(b"k")[0], [Endpoint.parse("0.0.0.0:0")])
        where = await server.start()
        try:
            port = server.endpoints[0].port
            assert where[0] == f"http://0.0.0.0:{port}/derp" and server.url() == f"http://127.0.0.1:{port}/derp"
            client = await connect("127.0.0.1", port)
            assert client.server_key == server.public_key
            client.close()
        finally:
            await server.stop()

    run(main)


def test_bind_error_is_a_usage_error() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            server = DerpServer(node_key_pair(b"k")[0], [Endpoint.parse(f"127.0.0.1:{taken.getsockname()[1]}")])
            with pytest.raises(UsageError, match=r"cannot listen on tcp 127\.0\.0\.1"):
                await server.start()

    run(main)


def test_upgrade_golden_bytes() -> None:
    async def main() -> None:
        async with running() as server:
            ep = server.endpoints[0]
            reader, writer = await open_raw(str(ep.ip), ep.port)
            writer.write(b"GET /derp HTTP/1.1\r\nHost: derp.test\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n")
            head, rest = await read_head(reader)
            key = server.public_key
            assert head == (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n"
                b"Derp-Version: 2\r\nDerp-Public-Key: " + key.hex().encode() + b"\r\n\r\n"
            )
            rest += await asyncio.wait_for(reader.readexactly(45 - len(rest)), 5)
            assert rest == bytes.fromhex("010000002844455250f09f9491") + key.raw
            writer.close()

    run(main)


async def _request(ep: Endpoint, data: bytes) -> tuple[bytes, bool]:
    """Send raw bytes, read one response head; also whether the server then closed the connection."""
    reader, writer = await open_raw(str(ep.ip), ep.port)
    writer.write(data)
    head, _ = await read_head(reader)
    try:
        closed = await asyncio.wait_for(reader.read(1), 0.3) == b""
    except TimeoutError:
        closed = False
    writer.close()
    return head, closed


@pytest.mark.parametrize(
    ("request_bytes", "status", "closes"),
    [
        (b"GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n", b"200", False),
        (b"HEAD /derp/latency-check HTTP/1.1\r\nHost: x\r\n\r\n", b"200", False),
        (b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n", b"426", False),
        (b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", b"426", False),
        (b"GET /elsewhere HTTP/1.1\r\nHost: x\r\n\r\n", b"404", False),
        (b"GET /elsewhere HTTP/1.0\r\n\r\n", b"404", True),
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage", b"400", True),
    ],
)
def test_plain_http_answers(request_bytes: bytes, status: bytes, closes: bool) -> None:
    async def main() -> None:
        async with running() as server:
            head, closed = await _request(server.endpoints[0], request_bytes)
            assert head.startswith(b"HTTP/1.1 " + status + b" "), head
            assert closed is closes

    run(main)


def test_relay_ping_and_peer_gone_over_tcp() -> None:
    async def main() -> None:
        async with running() as server:
            ep = server.endpoints[0]
            a, b = await connect("127.0.0.1", ep.port), await connect("127.0.0.1", ep.port, fast_start=True)
            assert a.server_key == server.public_key and a.server_info == derp.ServerInfoJSON()
            a.send_packet(b.pub, b"hello over tcp")
            assert await b.frame_of(derp.RecvPacket) == derp.RecvPacket(a.pub, b"hello over tcp")
            b.send(derp.Ping(b"pingpong").encode())
            assert await b.frame_of(derp.Pong) == derp.Pong(b"pingpong")
            a.close()
            assert await b.frame_of(derp.PeerGone) == derp.PeerGone(a.pub, derp.PeerGoneReason.DISCONNECTED)
            b.close()

    run(main)


def test_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)

    async def main() -> None:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        async with running(ssl_context=context) as server:
            assert server.url().startswith("https://127.0.0.1:")
            port = server.endpoints[0].port
            a = await connect("127.0.0.1", port, ssl_context=client_tls(cert))
            b = await connect("127.0.0.1", port, ssl_context=client_tls(cert))
            a.send_packet(b.pub, b"over TLS")
            assert await b.frame_of(derp.RecvPacket) == derp.RecvPacket(a.pub, b"over TLS")
            assert (await _probe_tls(port, cert)).startswith(b"HTTP/1.1 200 OK\r\n")
            a.close()
            b.close()

    run(main)


async def _probe_tls(port: int, cert: Path) -> bytes:
    reader, writer = await open_raw("127.0.0.1", port, client_tls(cert))
    writer.write(b"GET /derp/probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head, _ = await read_head(reader)
    writer.close()
    return head


def test_mesh_watch_over_tcp() -> None:
    async def main() -> None:
        async with running(mesh_key=MESH_KEY) as server:
            port = server.endpoints[0].port
            a = await connect("127.0.0.1", port)
            mesh = await connect("127.0.0.1", port, mesh_key=MESH_KEY)
            mesh.send(derp.WatchConns().encode())
            seen = {}
            while len(seen) < 2:
                f = await mesh.frame_of(derp.PeerPresent)
                seen[f.key] = f  # type: ignore[attr-defined]
            local_port = a.writer.get_extra_info("sockname")[1]
            assert seen[a.pub] == derp.PeerPresent(
                a.pub, Endpoint.parse(f"127.0.0.1:{local_port}"), derp.PeerPresentFlags.REGULAR
            )
            a.close()
            assert await mesh.frame_of(derp.PeerGone) == derp.PeerGone(a.pub, derp.PeerGoneReason.DISCONNECTED)
            mesh.close()

    run(main)


def test_stalled_reader_is_cut_off_and_others_keep_relaying() -> None:
    async def main() -> None:
        timing = Timing().replace(derp_write_timeout=0.3)
        async with running(timing=timing, limits=DerpLimits(queue_depth=8)) as server:
            port = server.endpoints[0].port
            a, b = await connect("127.0.0.1", port), await connect("127.0.0.1", port)
            stalled = await connect("127.0.0.1", port)  # never reads again
            chunk = derp.SendPacket(stalled.pub, bytes(60_000)).encode() * 8
            deadline = asyncio.get_running_loop().time() + 20
            while any(c.key == stalled.pub for c in server.clients()):
                assert asyncio.get_running_loop().time() < deadline, server.summary()
                a.send(chunk)
                await a.drain()
                await asyncio.sleep(0.01)
            assert server.core.closed["write_timeout"] == 1 and server.core.dropped["queue_full"] > 0
            a.send_packet(b.pub, b"still relaying")
            assert await b.frame_of(derp.RecvPacket) == derp.RecvPacket(a.pub, b"still relaying")
            for c in (a, b, stalled):
                c.close()

    run(main)


def test_health_and_restarting_on_stop() -> None:
    async def main() -> None:
        server = DerpServer(node_key_pair(b"k")[0], [Endpoint.parse(f"127.0.0.1:{free_tcp_port()}")])
        await server.start()
        a = await connect("127.0.0.1", server.endpoints[0].port)
        server.set_health("maintenance soon")
        assert await a.frame_of(derp.Health) == derp.Health("maintenance soon")
        await server.stop(reconnect_in=0.25, try_for=9.0)
        assert await a.frame_of(derp.Restarting) == derp.Restarting(250, 9000)
        assert await a.closed()
        assert "closed: server_stopping 1" in server.summary()

    run(main)


def test_handshake_timeout_closes_a_silent_connection() -> None:
    async def main() -> None:
        async with running(timing=DEFAULT.replace(derp_handshake_timeout=0.2)) as server:
            reader, writer = await open_raw("127.0.0.1", server.endpoints[0].port)
            assert await asyncio.wait_for(reader.read(), 3) == b""
            writer.close()
            assert server.core.closed["handshake_timeout"] == 1

    run(main)
