"""The TURN client (toolkit/services/turnclient.py) against a real coturn, and against a scripted fake server.

coturn runs with long-term credentials (realm ``natkit``, user alice:secret), relay ports
40000-40999 on 127.0.0.1 and ``--allow-loopback-peers``. Peers are plain UDP sockets on 127.0.0.1. The ChannelData
and TURN attribute codec has its own tests (tests/codec/test_stun_turn.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.coturn import Coturn, start_coturn
from toolkit.codec import stun
from toolkit.services.turnclient import CHANNEL_MIN, TurnClient, TurnError
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

T = TypeVar("T")
USER, PASSWORD = "alice", "secret"


@pytest.fixture(scope="module")
def coturn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    extra = ("--allow-loopback-peers", "--relay-ip=127.0.0.1")
    yield from start_coturn(
        tmp_path_factory.mktemp("turn"), stun_only=False, users=(f"{USER}:{PASSWORD}",), extra=extra
    )


def server_of(c: Coturn) -> Endpoint:
    return Endpoint.parse(f"{c.ips[0]}:{c.port}")


def run(coro: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(coro(), 20))


def udp_peer() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


async def recv_from(sock: socket.socket, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
    return await asyncio.wait_for(asyncio.get_running_loop().sock_recvfrom(sock, 4096), timeout)


def endpoint(sock: socket.socket) -> Endpoint:
    host, port = sock.getsockname()
    return Endpoint.parse(f"{host}:{port}")


# --- against coturn ------------------------------------------------------------------------------------


def test_allocate_learns_realm_and_returns_relayed_and_mapped(coturn: Coturn) -> None:
    async def go() -> None:
        client = TurnClient(server_of(coturn), USER, PASSWORD)
        try:
            relayed = await client.allocate()
            assert client.realm == "natkit"  # learnt from the 401 (RFC 8489 §9.2.4)
            assert str(relayed.ip) == "127.0.0.1" and 40000 <= relayed.port <= 40999
            assert client.mapped is not None and client.local is not None
            assert client.mapped.port == client.local.port  # no NAT on loopback
            assert client.lifetime > 0
        finally:
            await client.close()

    run(go)


def test_wrong_password_is_a_401_turn_error(coturn: Coturn) -> None:
    async def go() -> None:
        client = TurnClient(server_of(coturn), USER, "not-the-password")
        try:
            with pytest.raises(TurnError) as info:
                await client.allocate()
            assert info.value.code == 401
        finally:
            await client.close()

    run(go)


def test_permission_then_channel_then_delete(coturn: Coturn) -> None:
    """Without a permission coturn drops the peer's datagram; with one it arrives as a Data indication,
    with a channel as ChannelData; what A sends reaches the peer from the relayed address; after a
    Refresh with LIFETIME 0 the allocation stops relaying and a Refresh is answered 437."""

    async def go() -> None:
        client = TurnClient(server_of(coturn), USER, PASSWORD)
        peer = udp_peer()
        try:
            relayed = await client.allocate()
            peer.sendto(b"too early", relayed.as_tuple())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.recv(), 0.3)

            await client.create_permission(endpoint(peer))
            peer.sendto(b"via indication", relayed.as_tuple())
            assert await asyncio.wait_for(client.recv(), 2) == (endpoint(peer), b"via indication")
            assert client.received_by["data-indication"] == 1

            await client.send(endpoint(peer), b"send indication")  # no channel yet: a Send indication
            assert await recv_from(peer) == (b"send indication", relayed.as_tuple())

            number = await client.bind_channel(endpoint(peer))
            assert number == CHANNEL_MIN and client.channel(endpoint(peer)) == number
            await client.send(endpoint(peer), b"channel data")
            assert await recv_from(peer) == (b"channel data", relayed.as_tuple())
            peer.sendto(b"back on the channel", relayed.as_tuple())
            assert await asyncio.wait_for(client.recv(), 2) == (endpoint(peer), b"back on the channel")
            assert client.received_by["channel-data"] == 1
            assert not client.dropped

            assert await client.refresh(0) == 0  # delete (RFC 8656 §8); coturn does it on its next 1-s tick
            relayed_again = True
            for _ in range(15):
                peer.sendto(b"still there?", relayed.as_tuple())
                try:
                    await asyncio.wait_for(client.recv(), 0.2)
                except TimeoutError:
                    relayed_again = False
                    break
                await asyncio.sleep(0.2)
            assert not relayed_again, "the allocation still relayed 3 s after Refresh with LIFETIME 0"
            with pytest.raises(TurnError) as info:
                await client.refresh(600)
            assert info.value.code == 437  # Allocation Mismatch (RFC 8656 §8.2): no allocation any more
        finally:
            peer.close()
            await client.close()

    run(go)


def test_two_allocations_relay_to_each_other(coturn: Coturn) -> None:
    """The bench's setup: A and B allocate and bind channels to each other's relayed addresses."""

    async def go() -> None:
        a = TurnClient(server_of(coturn), USER, PASSWORD)
        b = TurnClient(server_of(coturn), USER, PASSWORD)
        try:
            ra, rb = await a.allocate(), await b.allocate()
            await a.bind_channel(rb)
            await b.bind_channel(ra)
            for i in range(50):
                await a.send(rb, b"a%d" % i)
                await b.send(ra, b"b%d" % i)
            got_b = [await asyncio.wait_for(b.recv(), 2) for _ in range(50)]
            got_a = [await asyncio.wait_for(a.recv(), 2) for _ in range(50)]
            assert got_b == [(ra, b"a%d" % i) for i in range(50)]
            assert got_a == [(rb, b"b%d" % i) for i in range(50)]
            assert a.received_by == {"channel-data": 50} and b.received_by == {"channel-data": 50}
        finally:
            await a.close()
            await b.close()

    run(go)


# --- against a scripted server: retransmission and junk ------------------------------------------------


def test_retransmits_and_drops_junk_from_a_fake_server(tmp_path: Path) -> None:
    """The fake server ignores the first request (RFC 8489 §6.2.1 retransmission), sends junk from itself
    and from another socket, then answers Allocate with 401 and a success."""

    async def go() -> None:
        fake, other = udp_peer(), udp_peer()
        client = TurnClient(endpoint(fake), USER, PASSWORD, timing=DEFAULT.replace(stun_rto=0.05))
        task = asyncio.create_task(client.allocate())
        try:
            first, addr = await recv_from(fake)
            again, addr2 = await recv_from(fake)  # the retransmission: same bytes, same source
            assert again == first and addr2 == addr
            request = stun.decode(first)
            assert request.method == stun.Method.ALLOCATE and request.get(stun.Username) is None
            bad_stun = bytes.fromhex("0101 0008 2112a442") + bytes(12) + bytes.fromhex("0020 0064") + b"abcd"
            fake.sendto(bad_stun, addr)  # a STUN header, then an attribute longer than the message
            fake.sendto(b"\x40\x00\x00\x10abc", addr)  # truncated ChannelData
            fake.sendto(b"\x40\x01\x00\x01x", addr)  # ChannelData on a channel nobody bound
            fake.sendto(b"\xff plain junk", addr)
            other.sendto(b"from elsewhere", addr)
            unauthorized = stun.Message(
                stun.Class.ERROR,
                stun.Method.ALLOCATE,
                request.txid,
                (stun.ErrorCode(401, "Unauthorized"), stun.Realm("fake"), stun.Nonce("n1")),
            )
            fake.sendto(unauthorized.encode(), addr)
            while True:  # the authenticated retry (retransmissions of the first request may come first)
                data, _ = await recv_from(fake)
                retry = stun.decode(data)
                if retry.txid != request.txid:
                    break
            assert retry.get(stun.Username) == stun.Username(USER)
            assert stun.verify_integrity(data, stun.long_term_key(USER, "fake", PASSWORD)) is True
            relayed = Endpoint.parse("127.0.0.1:49999")
            ok = stun.Message(stun.Class.SUCCESS, stun.Method.ALLOCATE, retry.txid, (stun.XorRelayedAddress(relayed),))
            fake.sendto(ok.encode(), addr)
            fake.sendto(ok.encode(), addr)  # a duplicate answer: nobody waits for it any more
            assert await asyncio.wait_for(task, 2) == relayed
            await asyncio.sleep(0.05)
            assert any(r.startswith("stun-") for r in client.dropped), client.dropped
            for reason in ("channeldata-truncated", "unknown-channel", "not-turn", "not-from-server"):
                assert client.dropped[reason] >= 1, (reason, client.dropped)
            assert client.dropped["unmatched-response"] >= 1
        finally:
            task.cancel()
            client.relayed = None  # the fake server would not answer the Refresh of close()
            await client.close()
            fake.close()
            other.close()

    run(go)
