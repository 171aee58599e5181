"""`stun_query` over real sockets: against coturn, a silent port, and small scripted UDP responders."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.coturn import Coturn, start_coturn
from toolkit.codec import stun
from toolkit.errors import UsageError
from toolkit.sansio.trace import TraceLog
from toolkit.services.stunclient import (
    StunErrorResponse,
    StunTimeout,
    discover_nat,
    open_udp_socket,
    resolve_server,
    split_host_port,
    stun_query,
)
from toolkit.timing import Timing
from toolkit.types import Endpoint, TxID

FAST = Timing(stun_rto=0.05, stun_rc=3, stun_rm=4)  # sends at 0, 0.05, 0.15 s; gives up at 0.35 s


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    yield from start_coturn(tmp_path_factory.mktemp("coturn1"), ("127.0.0.1",))


def _ep(server: Coturn) -> Endpoint:
    return Endpoint.parse(f"{server.ips[0]}:{server.port}")


class Responder:
    """A UDP socket on 127.0.0.1 that hands each request to ``answer`` (None: stay silent)."""

    def __init__(self, answer: Callable[[stun.Message, int], bytes | None]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.endpoint = Endpoint.parse(f"127.0.0.1:{self.sock.getsockname()[1]}")
        self.seen: list[float] = []
        self._answer, self._stop = answer, threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.seen.append(time.monotonic())
            reply = self._answer(stun.decode(data), len(self.seen))
            if reply is not None:
                self.sock.sendto(reply, addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def responder() -> Iterator[Callable[[Callable[[stun.Message, int], bytes | None]], Responder]]:
    made: list[Responder] = []

    def make(answer: Callable[[stun.Message, int], bytes | None]) -> Responder:
        made.append(Responder(answer))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_query_coturn(coturn: Coturn) -> None:
    log = TraceLog()
    r = asyncio.run(stun_query(_ep(coturn), tracer=log))
    assert r.mapped == r.local and str(r.local.ip) == "127.0.0.1"  # loopback: no NAT
    assert r.source == _ep(coturn) and r.sends == 1 and r.karn_rtt == r.rtt
    assert 0 < r.rtt < 0.5
    assert r.software is not None and r.software.startswith("Coturn")
    assert r.other_address is None  # one address: coturn does no RFC 5780
    assert [rec.kind for rec in log.records] == ["sent", "received", "transition"]
    assert r.to_dict()["mapped"] == str(r.local)


def test_query_from_a_socket_the_caller_owns(coturn: Coturn) -> None:
    async def main() -> tuple[Endpoint, Endpoint, int]:
        with open_udp_socket(_ep(coturn)) as sock:
            a = await stun_query(_ep(coturn), sock=sock)
            b = await stun_query(_ep(coturn), sock=sock)
            assert sock.fileno() != -1  # still open
            return a.mapped, b.mapped, sock.getsockname()[1]

    a, b, port = asyncio.run(main())
    assert a == b and a.port == port


def test_query_from_a_given_local_port(coturn: Coturn) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    r = asyncio.run(stun_query(_ep(coturn), local=Endpoint.parse(f"127.0.0.1:{port}")))
    assert r.local.port == port == r.mapped.port


def test_silent_server_times_out_on_schedule(responder: Callable[..., Responder]) -> None:
    silent = responder(lambda msg, n: None)
    started = time.monotonic()
    with pytest.raises(StunTimeout, match=r"no answer from 127\.0\.0\.1:\d+: 3 requests in 0\.35 s"):
        asyncio.run(stun_query(silent.endpoint, timing=FAST))
    took = time.monotonic() - started
    assert 0.33 <= took < 1.5
    gaps = [b - silent.seen[0] for b in silent.seen]  # RFC 8489 §6.2.1: at 0, RTO and 3 RTO (never early)
    assert len(gaps) == 3 and 0.045 <= gaps[1] < 0.12 and 0.145 <= gaps[2] < 0.25


def test_retransmitted_query_is_answered(responder: Callable[..., Responder]) -> None:
    mapped = Endpoint.parse("198.51.100.9:4242")
    third = responder(lambda msg, n: stun.binding_response(msg.txid, mapped) if n == 3 else None)
    r = asyncio.run(stun_query(third.endpoint, timing=FAST))
    assert r.mapped == mapped and r.sends == 3 and r.karn_rtt is None and r.rtt < 0.1


def test_error_response(responder: Callable[..., Responder]) -> None:
    refuses = responder(lambda msg, n: stun.error_response(msg.txid, stun.Method.BINDING, 400, "Bad Request"))
    with pytest.raises(StunErrorResponse, match="400 Bad Request") as info:
        asyncio.run(stun_query(refuses.endpoint, timing=FAST))
    assert info.value.code == 400


def test_junk_and_foreign_answers_are_ignored(responder: Callable[..., Responder]) -> None:
    mapped = Endpoint.parse("198.51.100.9:4242")

    def answer(msg: stun.Message, n: int) -> bytes | None:
        if n == 1:
            return b"definitely not STUN"
        if n == 2:
            return stun.binding_response(TxID(bytes(12)), Endpoint.parse("192.0.2.66:1"))
        return stun.binding_response(msg.txid, mapped)

    sender = responder(answer)
    log = TraceLog()
    r = asyncio.run(stun_query(sender.endpoint, timing=FAST, tracer=log))
    assert r.mapped == mapped and r.sends == 3
    assert log.reasons() == ["not-stun", "wrong-txid"]


def test_discover_against_a_one_address_server(coturn: Coturn) -> None:
    report = asyncio.run(discover_nat(_ep(coturn), hairpin=True, lifetime=True, timing=FAST))
    assert report.behind_nat is False and report.hairpinning is True
    assert report.mapping is None and report.filtering is None and not report.lifetime_tested
    assert any("OTHER-ADDRESS" in note for note in report.notes)
    assert [e.test for e in report.tests] == ["mapping test I", "hairpinning"]


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("stun.example.org", "stun.example.org", 3478),
        ("stun.example.org:19302", "stun.example.org", 19302),
        ("192.0.2.1", "192.0.2.1", 3478),
        ("192.0.2.1:5", "192.0.2.1", 5),
        ("2001:db8::1", "2001:db8::1", 3478),
        ("[2001:db8::1]", "2001:db8::1", 3478),
        ("[2001:db8::1]:5349", "2001:db8::1", 5349),
    ],
)
def test_split_host_port(text: str, host: str, port: int) -> None:
    assert split_host_port(text) == (host, port)


@pytest.mark.parametrize("text", ["", ":3478", "host:0", "host:65536", "host:x", "[2001:db8::1", "[::1]x"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        split_host_port(text)


def test_resolve_names() -> None:
    ep = asyncio.run(resolve_server("localhost:4000"))
    assert ep.ip.is_loopback and ep.port == 4000
    with pytest.raises(UsageError, match="cannot resolve"):
        asyncio.run(resolve_server("no-such-host.invalid"))


def test_unbindable_local_address() -> None:
    with pytest.raises(UsageError, match=r"cannot bind a UDP socket to 192\.0\.2\.254:0"):
        open_udp_socket(Endpoint.parse("127.0.0.1:3478"), Endpoint.parse("192.0.2.254:0"))
