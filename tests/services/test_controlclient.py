"""The control client against the real server on loopback: register, update, DERP map, netmap streams that
reconnect after a server restart, re-registration when the server forgot the node, and the SSE parser."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import free_tcp_port
from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.errors import UsageError
from toolkit.sansio.control_api import sse_event
from toolkit.sansio.control_netmap import NetMap
from toolkit.services.controlclient import ControlClient, ControlError, SSEParser
from toolkit.services.controlserver import ControlServer
from toolkit.timing import DEFAULT
from toolkit.types import Endpoint

KEY = "lab-key"
FAST = DEFAULT.replace(control_stream_keepalive=0.3, control_long_poll=0.5, derp_reconnect_min=0.05)
DERP = DERPMap({1: DERPRegion(1, "lab", "Lab", (DERPNode("1a", 1, "derp.lab", ipv4="10.0.0.2", scheme="http"),))})
E = Endpoint.parse


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@asynccontextmanager
async def serving(db: str | Path = ":memory:", port: int = 0, **kwargs: Any) -> AsyncIterator[ControlServer]:
    kwargs.setdefault("timing", FAST)
    server = ControlServer([E(f"127.0.0.1:{port}")], db, [KEY], **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def client(url: str, seed: int, authkey: str = KEY) -> ControlClient:
    priv = node_key_pair(bytes([seed]) * 4)[0]
    return ControlClient(url, authkey, priv, disco_key_pair(bytes([seed]) * 4)[1], f"node{seed}", timing=FAST)


async def next_netmap(stream: AsyncIterator[NetMap], timeout: float = 2.0) -> NetMap:
    return await asyncio.wait_for(anext(stream), timeout)


def test_register_gives_addresses_and_is_idempotent() -> None:
    async def scenario() -> None:
        async with serving() as server:
            alice = client(server.url, 1)
            me = await alice.register([E("192.0.2.1:41641")], 0)
            assert [str(a) for a in me.addresses] == ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]
            assert me.node_key == alice.node_key and me.endpoints == (E("192.0.2.1:41641"),) and me.name == "node1"
            token = alice.token
            again = await alice.register([E("192.0.2.1:41641")], 0)
            assert again.addresses == me.addresses and again.id == me.id and alice.token != token
            await alice.close()

    run(scenario())


def test_ipv6_listen_address() -> None:
    async def scenario() -> None:
        server = ControlServer([E("[::1]:0")], ":memory:", [KEY], timing=FAST)
        try:
            where = await server.start()
        except UsageError as exc:
            pytest.skip(reason=f"no IPv6 loopback: {exc}")
        try:
            assert where[0].startswith("tcp [::1]:") and server.url.startswith("http://[::1]:")
            alice = client(server.url, 1)
            assert (await alice.register([E("[2001:db8::1]:41641")])).endpoints == (E("[2001:db8::1]:41641"),)
            await alice.close()
        finally:
            await server.stop()

    run(scenario())


def test_two_clients_follow_each_other_and_updates_arrive_within_a_second() -> None:
    async def scenario() -> None:
        async with serving() as server:
            alice, bob = client(server.url, 1), client(server.url, 2)
            await alice.register([E("192.0.2.1:41641")], 0)
            await bob.register([E("192.0.2.2:41641")], 0)
            a_maps, b_maps = alice.netmaps(), bob.netmaps()
            first = await next_netmap(a_maps)
            assert [p.name for p in first.peers] == ["node2"] and first.self_node.online
            seen = await next_netmap(b_maps)
            while not (peer := seen.peer(alice.node_key)) or not peer.online:
                seen = await next_netmap(b_maps)
            started = time.monotonic()
            await alice.update(endpoints=[E("203.0.113.1:41641")], disco_key=disco_key_pair(b"new!")[1])
            while (peer := seen.peer(alice.node_key)) is None or peer.endpoints != (E("203.0.113.1:41641"),):
                seen = await next_netmap(b_maps)
            assert time.monotonic() - started < 1.0
            assert peer.disco_key == disco_key_pair(b"new!")[1] == alice.disco_key
            await a_maps.aclose()
            await b_maps.aclose()
            await alice.close()
            await bob.close()

    run(scenario())


def test_derp_map_and_long_poll() -> None:
    async def scenario() -> None:
        async with serving(derp_map=DERP) as server:
            alice, bob = client(server.url, 1), client(server.url, 2)
            await alice.register([], 1)
            assert await alice.derp_map() == DERP
            now = await alice.netmap()
            assert now.derp_map == DERP and now.self_node.home_derp == 1
            poll = asyncio.create_task(alice.netmap(since=now.version))
            await asyncio.sleep(0.1)
            assert not poll.done()
            await bob.register([], 1)
            moved = await asyncio.wait_for(poll, 1)
            assert moved.version > now.version and moved.peer(bob.node_key) is not None
            with pytest.raises(ControlError) as info:
                await alice.update(home_derp=5)
            assert info.value.status == 400 and "HomeDERP" in info.value.message
            await alice.close()
            await bob.close()
        async with serving() as server:
            alice = client(server.url, 1)
            with pytest.raises(ControlError) as info:
                await alice.derp_map()
            assert info.value.status == 404 and "--derp-map" in info.value.message
            await alice.close()

    run(scenario())


def test_wrong_authkey_is_a_control_error() -> None:
    async def scenario() -> None:
        async with serving() as server:
            mallory = client(server.url, 3, authkey="guess")
            with pytest.raises(ControlError) as info:
                await mallory.register()
            assert info.value.status == 401 and "pre-auth key" in str(info.value)
            with pytest.raises(UsageError):
                await mallory.update(home_derp=0)  # no token yet
            await mallory.close()

    run(scenario())


def test_the_stream_reconnects_after_a_server_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        port = free_tcp_port()
        db = tmp_path / "c.db"
        async with serving(db, port) as server:
            alice = client(server.url, 1)
            await alice.register([E("192.0.2.1:41641")], 0)
            maps = alice.netmaps()
            before = await next_netmap(maps)
        async with serving(db, port):  # same port, same database: the node is still known
            after = await next_netmap(maps, timeout=5)
            assert after.self_node.addresses == before.self_node.addresses and after.version > before.version
        await maps.aclose()
        await alice.close()

    run(scenario())


def test_a_server_that_forgot_the_node_gets_it_registered_again() -> None:
    async def scenario() -> None:
        port = free_tcp_port()
        async with serving(":memory:", port) as server:
            alice = client(server.url, 1)
            await alice.register([E("192.0.2.1:41641")], 0)
            old_token = alice.token
        async with serving(":memory:", port) as fresh:  # an empty database
            node = await alice.update(endpoints=[E("192.0.2.9:41641")])
            assert alice.token != old_token and node.endpoints == (E("192.0.2.9:41641"),)
            assert fresh.core.store.node_by_key(alice.node_key) is not None
            maps = alice.netmaps()
            assert (await next_netmap(maps)).self_node.node_key == alice.node_key
            await maps.aclose()
        await alice.close()

    run(scenario())


def test_the_kept_alive_connection_is_reopened_when_the_server_closed_it() -> None:
    async def scenario() -> None:
        async with serving(timing=FAST.replace(control_idle_timeout=0.2)) as server:
            alice = client(server.url, 1)
            await alice.register()
            await asyncio.sleep(0.5)  # the server closes the idle connection meanwhile
            assert (await alice.netmap()).self_node.node_key == alice.node_key
            await alice.close()

    run(scenario())


@pytest.mark.parametrize("url", ["https://control.lab", "ftp://x", "control.lab:8081", "http://"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(UsageError, match="http://HOST:PORT"):
        client(url, 1)


# --- the SSE parser ---------------------------------------------------------------------------------------


def test_sse_parser_reads_events_comments_and_crlf() -> None:
    parser = SSEParser()
    data = b": hello\r\nevent: netmap\r\ndata: {\r\ndata: }\r\n\r\ndata: plain\n\n: keepalive\n\nevent: x\n\n"
    assert parser.feed(data) == [("netmap", "{\n}"), ("message", "plain")]
    assert parser.comments == 2


@settings(max_examples=200)
@given(
    events=st.lists(st.tuples(st.sampled_from(["netmap", "x"]), st.text(max_size=30)), max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_sse_parser_gives_the_same_events_however_the_bytes_are_split(events: list[Any], cuts: list[int]) -> None:
    events = [(name, text.replace("\r", "")) for name, text in events]
    wire = b"".join(sse_event(name, text) + b": keepalive\n\n" for name, text in events)
    parser, got, last = SSEParser(), [], 0
    for cut in [*sorted(c for c in cuts if c <= len(wire)), len(wire)]:
        got += parser.feed(wire[last:cut])
        last = cut
    assert got == [(name, text) for name, text in events]
