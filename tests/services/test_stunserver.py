"""The STUN server on real sockets: in-process on loopback (IPv4, IPv6, TCP, RFC 5780 on 127.0.0.1 +
127.0.0.2), against independent clients (aioice's STUN transactions and ICE gathering, Debian's
``stun``), fuzzed with Hypothesis while it runs, and as ``natkit stun-server`` (start line, SIGTERM,
stop line, one-line errors)."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aioice import Candidate, Connection
from aioice import stun as ai
from aioice.ice import StunProtocol, get_host_addresses, server_reflexive_candidate
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.sansio.test_stunserver import SEEDS, mutated
from tests.support import ROOT, free_udp_port, natkit_service, port_free, require_tool
from toolkit.codec import stun
from toolkit.codec.stun import Class, OtherAddress, ResponseOrigin
from toolkit.errors import UsageError
from toolkit.sansio.stunserver import COOKIE
from toolkit.services.stunserver import StunServer
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint, TxID

E = Endpoint.parse


def txid(n: int) -> TxID:
    return TxID(n.to_bytes(12, "big"))


def udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def local(sock: socket.socket) -> Endpoint:
    host, port = sock.getsockname()[:2]
    return E(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


async def exchange(sock: socket.socket, data: bytes, dst: Endpoint, timeout: float = 3.0) -> tuple[bytes, Endpoint]:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, data, dst.as_tuple())
    reply, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 4096), timeout)
    return reply, local_of(addr)


def local_of(addr: Any) -> Endpoint:
    return E(f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}")


@asynccontextmanager
async def running(listen: Sequence[Endpoint], **kw: Any) -> AsyncIterator[StunServer]:
    server = StunServer(listen, **kw)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def rfc5780_ports() -> tuple[int, int]:
    """Two ports P != Q free for UDP and TCP on both 127.0.0.1 and 127.0.0.2."""
    for _ in range(50):
        p, q = free_udp_port("127.0.0.1"), free_udp_port("127.0.0.2")
        if p != q and all(port_free(ip, port) for ip in ("127.0.0.1", "127.0.0.2") for port in (p, q)):
            return p, q
    raise AssertionError("no two ports free on both 127.0.0.1 and 127.0.0.2")


# --- in process ------------------------------------------------------------------------------------------------


def test_udp_ipv4_and_ipv6_answer_tailscale_and_rfc8489_clients() -> None:
    async def main() -> None:
        async with running([E("127.0.0.1:0"), E("[::1]:0")]) as server:
            assert server.mode == "basic" and all(ep.port for ep in server.endpoints)
            for ep in server.endpoints:
                sock = udp(str(ep.ip))
                with sock:
                    reply, src = await exchange(sock, stun.tailnode_request(txid(1)), ep)
                    assert src == ep and reply == stun.binding_response(txid(1), local(sock))
                    reply, _ = await exchange(sock, stun.binding_request(txid(2), software="test"), ep)
                    msg = stun.decode(reply)
                    assert msg.mapped_endpoint == local(sock) and stun.verify_fingerprint(reply) is True
            assert server.core.counters["answered"] == 4 and server.core.counters["tailnode"] == 2

    asyncio.run(main())


def test_rfc5780_mode_routes_change_request_and_response_port_on_two_loopback_addresses() -> None:
    p, q = rfc5780_ports()
    a, b = E(f"127.0.0.1:{p}"), E(f"127.0.0.2:{q}")
    table = {(False, False): a, (True, False): E(f"127.0.0.2:{p}"), (False, True): E(f"127.0.0.1:{q}"), (True, True): b}

    async def main() -> None:
        async with running([a, b]) as server:
            assert server.mode == "rfc5780" and set(server.endpoints) == set(table.values())
            with udp() as sock, udp() as other:
                for n, ((ip, port), origin) in enumerate(table.items()):
                    req = stun.binding_request(txid(n), change_ip=ip, change_port=port)
                    reply, src = await exchange(sock, req, a)
                    msg = stun.decode(reply)
                    assert src == origin and msg.get(ResponseOrigin) == ResponseOrigin(origin)
                    assert msg.get(OtherAddress) == OtherAddress(b) and msg.mapped_endpoint == local(sock)
                # RESPONSE-PORT: the answer goes to the request's source IP at that port
                loop = asyncio.get_running_loop()
                req = stun.binding_request(txid(9), response_port=local(other).port)
                await loop.sock_sendto(sock, req, b.as_tuple())
                reply, src = await asyncio.wait_for(loop.sock_recvfrom(other, 4096), 3)
                assert local_of(src) == b and stun.decode(reply).mapped_endpoint == local(sock)
            assert server.core.counters["probes"] == 4

    asyncio.run(main())


def test_a_bind_failure_is_a_usage_error_and_releases_what_was_bound() -> None:
    p, q = rfc5780_ports()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind(("127.0.0.2", p))  # B:P, the third of the four sockets

    async def main() -> None:
        server = StunServer([E(f"127.0.0.1:{p}"), E(f"127.0.0.2:{q}")])
        with pytest.raises(UsageError, match=f"cannot listen on udp 127.0.0.2:{p}"):
            await server.start()
        assert server._udp == {} and server._servers == []

    with blocker:
        asyncio.run(main())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", p))  # released


async def read_message(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(20)
    return head + await reader.readexactly(int.from_bytes(head[2:4], "big"))


def test_tcp_frames_by_header_length_and_closes_on_garbage() -> None:
    async def main() -> None:
        async with running([E("127.0.0.1:0")]) as server:
            ep = server.endpoints[0]
            reader, writer = await asyncio.open_connection(*ep.as_tuple())
            me = local_of(writer.get_extra_info("sockname"))
            writer.write(stun.binding_request(txid(1)) + stun.tailnode_request(txid(2)))
            third = stun.binding_request(txid(3), software="split")
            writer.write(third[:7])
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(third[7:])
            replies = [stun.decode(await asyncio.wait_for(read_message(reader), 3)) for _ in range(3)]
            assert [m.txid for m in replies] == [txid(1), txid(2), txid(3)]
            assert all(m.mapped_endpoint == me for m in replies)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by the server
            writer.close()
            assert server.core.counters["tcp-closed:garbage"] == 1
            assert server.core.counters["dropped:tcp-garbage"] == 1

    asyncio.run(main())


def test_tcp_on_ipv6_and_idle_connections_are_closed() -> None:
    async def main() -> None:
        async with running([E("[::1]:0")], timing=DEFAULT.replace(stun_tcp_idle_timeout=0.3)) as server:
            ep = server.endpoints[0]
            reader, writer = await asyncio.open_connection(*ep.as_tuple())
            writer.write(stun.binding_request(txid(4)))
            assert stun.decode(await asyncio.wait_for(read_message(reader), 3)).mapped_endpoint.is_ipv6  # type: ignore[union-attr]
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 3) == b""
            assert 0.2 < time.monotonic() - started < 2.5
            writer.close()
            assert server.core.counters["tcp-closed:idle"] == 1

    asyncio.run(main())


def test_no_tcp_binds_udp_only() -> None:
    async def main() -> None:
        server = StunServer([E("127.0.0.1:0")], tcp=False)
        where = await server.start()
        try:
            assert where[0].startswith("udp 127.0.0.1:") and not any(w.startswith("tcp") for w in where)
        finally:
            await server.stop()

    asyncio.run(main())


# --- independent clients ---------------------------------------------------------------------------------------


async def aioice_protocol(host: str) -> StunProtocol:
    """aioice's own STUN socket (its transaction machinery: retransmissions, TxID matching, parsing)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(Connection(ice_controlling=True)), local_addr=(host, 0)
    )
    sockname = protocol.transport.get_extra_info("sockname")
    protocol.local_candidate = Candidate("1", 1, "udp", 1, sockname[0], sockname[1], "host")
    return protocol


def test_aioice_stun_transactions_get_the_mapped_address_v4_and_v6() -> None:
    async def main() -> None:
        async with running([E("127.0.0.1:0"), E("[::1]:0")]) as server:
            v4, v6 = server.endpoints
            protocol = await aioice_protocol("127.0.0.1")
            try:
                candidate, _ = await server_reflexive_candidate(protocol, v4.as_tuple())
                me = protocol.transport.get_extra_info("sockname")
                assert (candidate.type, candidate.host, candidate.port) == ("srflx", me[0], me[1])
            finally:
                await protocol.close()
            protocol = await aioice_protocol("::1")
            try:
                request = ai.Message(message_method=ai.Method.BINDING, message_class=ai.Class.REQUEST)
                response, _ = await protocol.request(request, v6.as_tuple())
                assert response.message_class == ai.Class.RESPONSE
                assert response.attributes["XOR-MAPPED-ADDRESS"] == protocol.transport.get_extra_info("sockname")[:2]
                assert response.attributes["SOFTWARE"] == "natkit"
            finally:
                await protocol.close()

    asyncio.run(main())


def test_aioice_ice_gathering_finds_a_server_reflexive_candidate() -> None:
    hosts = get_host_addresses(use_ipv4=True, use_ipv6=False)
    if not hosts:
        pytest.skip(reason="aioice gathers on non-loopback IPv4 addresses and this host has none")

    async def main() -> None:
        async with running([E("0.0.0.0:0")], tcp=False) as server:
            conn = Connection(ice_controlling=True, stun_server=(hosts[0], server.endpoints[0].port), use_ipv6=False)
            try:
                await conn.gather_candidates()
                host = {(c.host, c.port) for c in conn.local_candidates if c.type == "host"}
                srflx = [c for c in conn.local_candidates if c.type == "srflx"]
                assert srflx and all((c.host, c.port) in host for c in srflx)  # no NAT: mapped = host
            finally:
                await conn.close()
            assert server.core.counters["answered"] >= len(srflx)

    asyncio.run(main())


def test_debian_stun_client_finds_an_open_internet_on_the_rfc5780_server() -> None:
    stun_bin = require_tool("stun", "stun-client")
    p, q = rfc5780_ports()
    with natkit_service("stun-server", "--listen", f"127.0.0.1:{p}", "--listen", f"127.0.0.2:{q}") as svc:
        assert "RFC 5780 mode" in svc.start_line
        run = subprocess.run([stun_bin, f"127.0.0.1:{p}", "-v"], capture_output=True, text=True, timeout=60)
        out = run.stdout + run.stderr
        # stund's tests I, II (change IP), III (change port) and I(2) (to CHANGED-ADDRESS) all answered
        for test in ("test I = 1", "test II = 1", "test III = 1", "test I(2) = 1"):
            assert test in out, out
        assert "Primary: Open" in out and run.returncode == 1, out  # 1 = StunTypeOpen
        assert svc.stop() == 0
    assert re.search(r"answered \d+ \(classic \d+\)", svc.output())


# --- Hypothesis against the running service ----------------------------------------------------------------------


def test_fuzzed_datagrams_never_crash_the_running_server() -> None:
    p, q = rfc5780_ports()
    a = E(f"127.0.0.1:{p}")
    with natkit_service("stun-server", "--listen", str(a), "--listen", f"127.0.0.2:{q}", "--no-tcp") as svc:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sent: set[bytes] = set()
        received: list[bytes] = []

        def drain() -> None:
            while True:
                try:
                    received.append(sock.recv(65536))
                except BlockingIOError:
                    return

        # no RESPONSE-PORT or PADDING seeds: a mutated port could aim replies at other tests' sockets
        @settings(max_examples=200)
        @given(st.one_of(st.binary(max_size=64), mutated(SEEDS[:6])))
        def fuzz(data: bytes) -> None:
            if len(data) >= 20:
                sent.add(data[8:20] if data[4:8] == COOKIE else data[4:20])
            sock.sendto(data, a.as_tuple())
            drain()

        with sock:
            fuzz()
            time.sleep(0.3)
            drain()
            assert received, "the fuzzing got no answer at all"
            for reply in received:  # every reply is well formed and answers something we sent
                if reply[4:8] == COOKIE:
                    msg, key = stun.decode(reply), reply[8:20]
                    assert stun.verify_fingerprint(reply) in (None, True)
                else:
                    key, msg = stun.decode_classic(reply)
                assert msg.msg_class in (Class.SUCCESS, Class.ERROR) and key in sent
            sock.sendto(stun.tailnode_request(txid(77)), a.as_tuple())
            deadline = time.monotonic() + 3
            answer = b""
            while not answer.startswith(b"\x01\x01") or answer[8:20] != txid(77).raw:
                assert time.monotonic() < deadline, "no answer after the fuzzing"
                time.sleep(0.01)
                try:
                    answer = sock.recv(65536)
                except BlockingIOError:
                    continue
            assert answer == stun.binding_response(txid(77), local(sock))
        assert svc.stop() == 0
    stop = svc.output().splitlines()[-1]
    assert "stopped after" in stop and re.search(r"dropped [1-9]\d* \(", stop), stop


# --- the CLI ------------------------------------------------------------------------------------------------------


def natkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_cli_starts_answers_and_stops_on_sigterm() -> None:
    with natkit_service("stun-server", "--listen", "127.0.0.1:0", "--software", "lab-stun") as svc:
        m = re.fullmatch(
            r"natkit stun-server: listening on udp (127\.0\.0\.1:\d+), tcp \1, basic mode .*", svc.start_line
        )
        assert m, svc.start_line
        server = E(m.group(1))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(3)
            sock.sendto(stun.binding_request(txid(5)), server.as_tuple())
            msg = stun.decode(sock.recv(4096))
            assert msg.software == "lab-stun" and msg.mapped_endpoint == E(f"127.0.0.1:{sock.getsockname()[1]}")
            sock.sendto(b"\xff" * 24, server.as_tuple())
            time.sleep(0.2)
        assert svc.stop() == 0
    last = svc.output().splitlines()[-1]
    assert re.fullmatch(
        r"natkit stun-server: stopped after \d+\.\d s \(answered 1, errors 0, dropped 1 \(not-stun 1\)\)", last
    ), last


def test_cli_bad_listen_is_one_line_exit_2() -> None:
    run = natkit("stun-server", "--listen", "localhost:3478")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("natkit: error: --listen 'localhost:3478'"), run.stderr


def test_cli_address_in_use_is_one_line_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        run = natkit("stun-server", "--listen", f"127.0.0.1:{port}")
    assert run.returncode == 2 and run.stdout == ""
    assert (
        run.stderr
        == f"natkit: error: cannot listen on udp 127.0.0.1:{port}: something else listens there: stop it or pick another --listen\n"
    )
