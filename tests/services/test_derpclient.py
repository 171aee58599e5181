"""The asyncio DERP client against natkit's real DERP relay: in-process and as ``natkit derp-server``
processes, over plain HTTP and TLS (self-signed, InsecureForTests, a CA file), with PeerGone, pings,
health, rate limits, connect errors, and reconnects after SIGKILL and after SIGTERM (Restarting)."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import pytest

from tests.services.derpclienthelp import FAST, fake_server, relay, run, self_signed, start_process, until, url_of
from tests.support import free_tcp_port
from toolkit.codec import derp
from toolkit.codec.derpmap import DERPNode
from toolkit.crypto.keys import generate_node_key, node_key_pair
from toolkit.errors import UsageError
from toolkit.sansio.derpevents import (
    Closed,
    Connected,
    HealthChanged,
    PeerGoneReceived,
    PeerPresentReceived,
    RestartingReceived,
)
from toolkit.sansio.derpserver_conn import DerpLimits
from toolkit.sansio.trace import TraceLog
from toolkit.services.derpclient import DerpClient, DerpClosedError, DerpConnectError, DialFailed
from toolkit.services.derpserver import DerpServer
from toolkit.types import Endpoint


async def _pair(url: str, **kw: object) -> tuple[DerpClient, DerpClient]:
    a = DerpClient(url, generate_node_key(), **kw)  # type: ignore[arg-type]
    b = DerpClient(url, generate_node_key(), **kw)  # type: ignore[arg-type]
    await a.connect()
    await b.connect()
    return a, b


async def _exchange(a: DerpClient, b: DerpClient, tag: bytes) -> None:
    await a.send(b.public_key, b"a->b " + tag)
    assert await asyncio.wait_for(b.recv(), 5) == (a.public_key, b"a->b " + tag)
    await b.send(a.public_key, b"b->a " + tag)
    assert await asyncio.wait_for(a.recv(), 5) == (b.public_key, b"b->a " + tag)


def test_two_clients_exchange_packets_and_ping() -> None:
    async def main() -> None:
        log = TraceLog()
        async with relay() as server:
            a, b = await _pair(server.url(), reconnect=False, tracer=log)
            assert a.connected and a.server_key == server.public_key
            assert a.server_info == derp.ServerInfoJSON()
            assert (await a.next_event()) == Connected(server.public_key, derp.ServerInfoJSON())
            await _exchange(a, b, b"1")
            rtt = await a.ping()
            assert 0 < rtt < 1.0
            assert a.packets_sent == 1 and a.packets_received == 1 and a.bytes_received == len(b"b->a 1")
            assert a.counters()["reconnects"] == 0
            await a.close()
            await b.close()
        details = [r.detail for r in log.of_kind("transition")]
        assert "AwaitingServerInfo -> Connected" in details

    run(main())


def test_ipv6_literal_url() -> None:
    async def main() -> None:
        server = DerpServer(generate_node_key(), [Endpoint.parse("[::1]:0")])
        await server.start()
        try:
            assert server.url().startswith("http://[::1]:")
            a, b = await _pair(server.url(), reconnect=False)
            assert a.target.host == "::1" and a.target.host_header.startswith("[::1]:")
            await _exchange(a, b, b"v6")
            await a.close()
            await b.close()
        finally:
            await server.stop()

    run(main())


def test_bulk_packets_arrive_in_order() -> None:
    async def main() -> None:
        async with relay() as server:
            a, b = await _pair(server.url(), reconnect=False)
            n = 20_000

            async def receive() -> list[int]:
                return [int.from_bytes((await b.recv())[1][:4], "big") for _ in range(n)]

            task = asyncio.create_task(receive())
            for i in range(n):
                await a.send(b.public_key, i.to_bytes(4, "big") + b"x" * 96)
            assert await asyncio.wait_for(task, 20) == list(range(n))
            assert a.dropped == {} and b.packets_received == n
            await a.close()
            await b.close()

    run(main())


def test_a_reader_that_does_not_keep_up_pushes_back_to_the_relay() -> None:
    async def main() -> None:
        async with relay() as server:
            a = DerpClient(server.url(), generate_node_key(), reconnect=False)
            b = DerpClient(server.url(), generate_node_key(), reconnect=False, max_queued=64)
            await a.connect()
            await b.connect()
            for i in range(5000):  # b reads nothing meanwhile: it stops reading, the relay queues then drops
                await a.send(b.public_key, i.to_bytes(4, "big") + b"y" * 1200)
            await until(lambda: server.core.dropped["queue_full"] > 0, 10, "the relay to drop for b")
            seqs = []
            while b.packets_received < 5000 and len(seqs) < b.packets_received:
                seqs.append(int.from_bytes((await asyncio.wait_for(b.recv(), 5))[1][:4], "big"))
            assert seqs == sorted(seqs) and 64 <= len(seqs) < 5000
            await a.send(b.public_key, b"after")  # reading resumed: fresh packets still arrive
            while (await asyncio.wait_for(b.recv(), 5))[1] != b"after":
                pass
            await a.close()
            await b.close()

    run(main())


def test_peer_gone_when_the_peer_disconnects_or_is_unknown() -> None:
    async def main() -> None:
        async with relay() as server:
            a, b = await _pair(server.url(), reconnect=False)
            await _exchange(a, b, b"before")
            await b.close()
            while not isinstance(ev := await asyncio.wait_for(a.next_event(), 5), PeerGoneReceived):
                pass
            assert ev == PeerGoneReceived(b.public_key, derp.PeerGoneReason.DISCONNECTED)
            stranger = node_key_pair(b"nobody")[1]
            await a.send(stranger, b"anyone?")
            while not isinstance(ev := await asyncio.wait_for(a.next_event(), 5), PeerGoneReceived):
                pass
            assert ev == PeerGoneReceived(stranger, derp.PeerGoneReason.NOT_HERE)
            await a.close()

    run(main())


def test_mesh_watcher_sees_peers_come_and_go() -> None:
    mesh_key = "5e" * 32

    async def main() -> None:
        async with relay(mesh_key=mesh_key) as server:
            watcher = DerpClient(server.url(), generate_node_key(), mesh_key=mesh_key, watch_conns=True)
            await watcher.connect()
            peer = DerpClient(server.url(), generate_node_key(), reconnect=False)
            await peer.connect()
            ev = await asyncio.wait_for(watcher.next_event(), 5)
            while not (isinstance(ev, PeerPresentReceived) and ev.key == peer.public_key):
                ev = await asyncio.wait_for(watcher.next_event(), 5)
            assert ev.endpoint is not None and str(ev.endpoint.ip) == "127.0.0.1"
            await peer.close()
            while not isinstance(ev := await asyncio.wait_for(watcher.next_event(), 5), PeerGoneReceived):
                pass
            assert ev.key == peer.public_key
            await watcher.close()
        with pytest.raises(UsageError, match="mesh_key"):
            DerpClient("http://127.0.0.1:1/derp", generate_node_key(), mesh_key="not hex")

    run(main())


def test_health_and_rate_limit_from_the_server() -> None:
    async def main() -> None:
        burst = 70_000
        async with relay(limits=DerpLimits(rate_bytes_per_s=10_000, burst_bytes=burst)) as server:
            a, b = await _pair(server.url(), reconnect=False)
            assert a.server_info is not None and a.server_info.token_bucket_bytes_per_second == 10_000
            server.set_health("disk full")
            while not isinstance(ev := await asyncio.wait_for(a.next_event(), 5), HealthChanged):
                pass
            assert ev == HealthChanged("disk full")
            for _ in range(100):  # 100 x 1037 B > the burst: the client drops the rest itself
                await a.send(b.public_key, b"x" * 1000)
            sent = a.packets_sent
            assert sent == burst // 1037 and a.dropped["rate-limited"] == 100 - sent
            for _ in range(sent):
                await asyncio.wait_for(b.recv(), 5)
            await a.close()
            await b.close()

    run(main())


def test_connect_refused() -> None:
    async def main() -> None:
        port = free_tcp_port()
        client = DerpClient(f"http://127.0.0.1:{port}/derp", generate_node_key())
        with pytest.raises(DerpConnectError, match="connection refused") as info:
            await client.connect(2.0)
        assert info.value.reason == "refused" and not client.connected

    run(main())


_KEY_A, _KEY_B = node_key_pair(b"a")[1], node_key_pair(b"b")[1]


@pytest.mark.parametrize(
    ("answer", "reason", "text"),
    [
        (derp.http_response(426, "Upgrade Required", b"DERP requires connection upgrade"), "http-status", "426"),
        (derp.http_response(404, "Not Found"), "http-status", "404 Not Found"),
        (derp.upgrade_response(_KEY_A) + derp.ServerKey(_KEY_B).encode(), "key-mismatch", "differs from"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad-upgrade", "not HTTP"),
        (None, "timeout", "handshake"),
    ],
    ids=["426", "404", "key-mismatch", "not-http", "silent"],
)
def test_connect_errors_say_what_failed(answer: bytes | None, reason: str, text: str) -> None:
    async def main() -> None:
        async with fake_server(answer) as url:
            client = DerpClient(url, generate_node_key())
            with pytest.raises(DerpConnectError, match=text) as info:
                await client.connect(0.5)
            assert info.value.reason == reason
            assert str(info.value).count("\n") == 0

    run(main())


def test_wrong_path_on_the_real_relay_is_an_http_error() -> None:
    async def main() -> None:
        async with relay() as server:
            client = DerpClient(server.url().replace("/derp", "/nope"), generate_node_key())
            with pytest.raises(DerpConnectError, match="HTTP 404") as info:
                await client.connect(2.0)
            assert info.value.reason == "http-status" and "the path is /derp" in str(info.value)

    run(main())


def test_bad_urls_are_usage_errors() -> None:
    key = generate_node_key()
    for bad in ("ftp://x/derp", "derp.example.com", "http://:80/derp", "http://h:99999/derp"):
        with pytest.raises(UsageError):
            DerpClient(bad, key)
    with pytest.raises(UsageError, match="ssl_context"):
        DerpClient("http://127.0.0.1:1/derp", key, ssl_context=ssl.create_default_context())


def test_tls_self_signed_insecure_for_tests_and_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)

    async def main() -> None:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert, key)
        async with relay(ssl_context=server_ctx) as server:
            url = server.url()
            assert url.startswith("https://")
            port = server.endpoints[0].port
            untrusted = DerpClient(url, generate_node_key())
            with pytest.raises(DerpConnectError, match="certificate not trusted") as info:
                await untrusted.connect(3.0)
            assert info.value.reason == "tls"
            node = DERPNode("t1", 1, "derp.test", ipv4="127.0.0.1", derp_port=port, insecure_for_tests=True)
            insecure = DerpClient(node, generate_node_key(), reconnect=False)
            ca = ssl.create_default_context(cafile=str(cert))
            by_ip = DerpClient(url, generate_node_key(), ssl_context=ca, reconnect=False)
            by_name = DerpClient(
                DERPNode("t2", 1, "derp.test", ipv4="127.0.0.1", derp_port=port), generate_node_key(), ssl_context=ca
            )
            for client in (insecure, by_ip, by_name):
                await client.connect(3.0)
                assert client.server_key == server.public_key
            await _exchange(insecure, by_ip, b"over tls")
            assert by_name.target.host_header == f"derp.test:{port}"
            plain = DerpClient(url.replace("https://", "http://"), generate_node_key())
            with pytest.raises(DerpConnectError, match="TLS or plain HTTP"):
                await plain.connect(3.0)
            for client in (insecure, by_ip, by_name):
                await client.close()

    run(main())


def test_closed_client_raises_and_no_reconnect_means_down() -> None:
    async def main() -> None:
        async with relay() as server:
            a, b = await _pair(server.url(), reconnect=False)
            await b.close()
            with pytest.raises(DerpClosedError):
                await b.send(a.public_key, b"x")
            with pytest.raises(DerpClosedError):
                await b.recv()
        # the relay stopped: a does not reconnect, so recv() ends
        with pytest.raises(DerpClosedError, match="does not reconnect"):
            await asyncio.wait_for(a.recv(), 5)
        assert a.last_close is not None and not a.connected
        assert not a.send_nowait(b.public_key, b"lost")
        assert a.dropped["not-connected"] == 1
        await a.close()

    run(main())


async def _events_until(client: DerpClient, kind: type, timeout: float = 10.0) -> list[object]:
    seen: list[object] = []
    while True:
        ev = await asyncio.wait_for(client.next_event(), timeout)
        seen.append(ev)
        if isinstance(ev, kind):
            return seen


def test_reconnect_after_the_server_is_killed(tmp_path: Path) -> None:
    port = free_tcp_port()
    args = ("--listen", f"127.0.0.1:{port}", "--key-file", str(tmp_path / "derp.key"))

    async def main() -> None:
        service = await start_process(*args)
        try:
            a, b = await _pair(url_of(service), timing=FAST)
            await _events_until(a, Connected)  # the first connection's
            first_key = a.server_key
            await _exchange(a, b, b"1")
            service.proc.send_signal(signal.SIGKILL)  # no Restarting: plain backoff
            await asyncio.to_thread(service.stop)
            await asyncio.sleep(1.0)
            service = await start_process(*args)
            seen = await _events_until(a, Connected)
            await until(lambda: b.connected, 5, "b to reconnect")
            closed = [e for e in seen if isinstance(e, Closed)]
            assert closed and closed[0].reason in ("eof", "transport-error")
            retries = [e.retry_in for e in seen if isinstance(e, DialFailed)]
            assert len(retries) >= 3 and retries[2] > retries[0]  # backing off (jitter 0.5..1.5 per step)
            assert max(retries) <= FAST.derp_reconnect_max
            assert a.reconnects == 1 and a.server_key == first_key  # --key-file kept the key
            await _exchange(a, b, b"2")
            await a.close()
            await b.close()
        finally:
            await asyncio.to_thread(service.stop)

    run(main(), 40)


def test_restarting_on_sigterm_sets_the_reconnect_delay(tmp_path: Path) -> None:
    port = free_tcp_port()
    args = ("--listen", f"127.0.0.1:{port}", "--key-file", str(tmp_path / "derp.key"))
    timing = FAST.replace(derp_reconnect_max=5.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        service = await start_process(*args)
        try:
            a, b = await _pair(url_of(service), timing=timing)
            await _events_until(a, Connected)  # the first connection's
            await _exchange(a, b, b"1")
            stopping_at = loop.time()  # the connection closes after this
            assert await asyncio.to_thread(service.stop) == 0  # SIGTERM: Restarting to every client
            seen = await _events_until(a, Closed)
            restarting = [e for e in seen if isinstance(e, RestartingReceived)]
            assert restarting and restarting[0].reconnect_in > 0 and restarting[0].try_for > 1.5
            first_fail = await asyncio.wait_for(a.next_event(), 10)
            assert isinstance(first_fail, DialFailed)
            assert loop.time() - stopping_at >= restarting[0].reconnect_in - 0.02  # waited as told
            await asyncio.sleep(1.0)
            service = await start_process(*args)
            restarted_at = loop.time()
            seen = await _events_until(a, Connected)
            retries = [first_fail.retry_in] + [e.retry_in for e in seen if isinstance(e, DialFailed)]
            assert retries and all(r == timing.derp_reconnect_min for r in retries)  # fast retries in try_for
            assert loop.time() - restarted_at < 1.0
            await until(lambda: b.connected, 5, "b to reconnect")
            await _exchange(a, b, b"2")
            await a.close()
            await b.close()
        finally:
            await asyncio.to_thread(service.stop)

    run(main(), 40)
