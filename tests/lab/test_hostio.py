"""Host sockets and DERP clients (toolkit/lab/hostio.py) on the sim backend, and the host agent in-process.

The ``check_*`` coroutines take a lab that is up on any backend; tests/lab/netns/test_hostio_netns.py and
tests/lab/docker/test_hostio_docker.py run the same ones through the agent process.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets

from toolkit.codec import stun
from toolkit.codec.derp import PeerGoneReason, ServerInfoJSON
from toolkit.crypto.keys import generate_node_key, public_key
from toolkit.lab.backend import Lab
from toolkit.lab.hostagent import Agent, event_from_json, event_to_json
from toolkit.lab.labprobe import expected_public
from toolkit.lab.registry import open_lab
from toolkit.lab.sim import SimLab
from toolkit.sansio.derpevents import Closed, Connected, PeerGoneReceived, PongReceived
from toolkit.types import Endpoint, TxID

STUN = Endpoint.parse("198.51.100.10:3478")


async def check_stun(lab: Lab) -> None:
    """A binding request from alice (behind r1's easy NAT) is answered with r1's public address."""
    sock = await lab.udp_socket("alice")
    assert sock.host == "alice" and sock.local.ip == lab.topology.host("alice").v4 and sock.local.port > 0
    txid = TxID(secrets.token_bytes(12))
    sock.sendto(stun.binding_request(txid), str(STUN))
    got = await sock.recv(timeout=5.0)
    assert got is not None, f"no STUN answer on {lab.backend}: {sock.errors}"
    data, src = got
    msg = stun.decode(data)
    assert src == STUN and msg.txid == txid
    assert msg.mapped_endpoint is not None and str(msg.mapped_endpoint.ip) == expected_public(lab.topology, "alice")
    assert str(msg.mapped_endpoint.ip) == str(lab.topology.router("r1").wan_v4)
    await sock.close()


async def check_bind_and_timeout(lab: Lab) -> None:
    """A fixed port is the bound port; recv returns None after its timeout; recv_all collects the rest."""
    sock = await lab.udp_socket("alice", bind="0.0.0.0:40000")
    assert sock.local == Endpoint(lab.topology.host("alice").v4, 40000)
    before = lab.now()
    assert await sock.recv(timeout=0.3) is None
    assert lab.now() - before >= 0.3 - 1e-9
    for _ in range(3):
        sock.sendto(stun.binding_request(TxID(secrets.token_bytes(12))), STUN)
    answers = await sock.recv_all(wait=2.0)
    assert len(answers) == 3 and all(src == STUN for _, src in answers)
    await sock.close()


async def check_derp(lab: Lab) -> None:
    """alice relays a payload to bob through the lab's DERP server; a send to an unknown key: PeerGone."""
    alice_priv, bob_priv = generate_node_key(b"a" * 32), generate_node_key(b"b" * 32)
    alice = await lab.derp_client("alice", key=alice_priv)
    bob = await lab.derp_client("bob", key=bob_priv, server="derp1")
    await alice.wait_connected()
    await bob.wait_connected()
    assert alice.connected and alice.public_key == public_key(alice_priv)
    assert any(isinstance(e, Connected) for e in alice.events), alice.events
    alice.send_packet(bob.public_key, b"hello bob")
    assert await bob.wait_received(1, timeout=5.0), (bob.received, bob.errors)
    assert bob.received == [(alice.public_key, b"hello bob")]
    nobody = public_key(generate_node_key(b"n" * 32))
    alice.send_packet(nobody, b"anyone?")
    gone = await alice.wait_event(PeerGoneReceived, timeout=5.0)
    assert isinstance(gone, PeerGoneReceived) and gone.key == nobody and gone.reason == PeerGoneReason.NOT_HERE
    await alice.close()
    await bob.close()
    assert not alice.connected


def _sim(body: object) -> None:
    async def main() -> None:
        lab = open_lab("easy-easy", "sim", seed=3)
        assert isinstance(lab, SimLab)
        async with lab:
            await body(lab)  # type: ignore[operator]

    asyncio.run(main())


def test_stun_from_alice_sim() -> None:
    _sim(check_stun)


def test_bind_and_timeout_sim() -> None:
    _sim(check_bind_and_timeout)


def test_derp_relay_sim() -> None:
    _sim(check_derp)


def test_realtime_sim_recv_paces_the_wall_clock() -> None:
    async def main() -> None:
        lab = open_lab("easy-easy", "sim", seed=3, realtime=True)
        async with lab:
            sock = await lab.udp_socket("alice")
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert await sock.recv(timeout=0.2) is None
            assert loop.time() - started >= 0.19
            sock.sendto(stun.binding_request(TxID(secrets.token_bytes(12))), STUN)
            assert await sock.recv(timeout=2.0) is not None
            assert loop.time() - started < 1.5  # stopped at the answer, not at the timeout

    asyncio.run(main())


# --- the agent, in this process ------------------------------------------------------------------------


def test_derp_events_round_trip_as_json() -> None:
    key = public_key(generate_node_key(b"k" * 32))
    events = [
        Connected(key, ServerInfoJSON(2, 100, 200)),
        PeerGoneReceived(key, PeerGoneReason.DISCONNECTED),
        PeerGoneReceived(key, 0x42),
        PongReceived(b"12345678", 0.25),
        Closed("eof", "the server closed the TCP connection"),
    ]
    for event in events:
        assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_agent_survives_malformed_commands() -> None:
    async def main() -> list[dict[str, object]]:
        out = io.StringIO()
        agent = Agent(out)
        bad = ["{not json", "[1, 2]", '{"op": "fly", "id": 1}', '{"op": "udp-open", "id": "x"}',
               '{"op": "udp-send", "id": 9, "dst": "127.0.0.1:9", "data": "00"}',
               '{"op": "udp-open", "id": 2, "bind": "not an endpoint"}']  # fmt: skip
        for line in bad:
            await agent.handle_line(line)
        await agent.handle_line('{"op": "udp-open", "id": 3, "bind": "127.0.0.1:0"}')
        opened = json.loads(out.getvalue().splitlines()[-1])
        echo = await asyncio.get_running_loop().create_datagram_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", 0))
        port = echo[0].get_extra_info("sockname")[1]
        echo[0].sendto(b"ping", Endpoint.parse(opened["local"]).as_tuple())
        await asyncio.sleep(0.1)
        echo[0].close()
        await agent.handle_line('{"op": "udp-close", "id": 3}')
        await agent.close()
        events = [json.loads(line) for line in out.getvalue().splitlines()]
        assert events[-2]["ev"] == "udp-datagram" and events[-2]["src"] == f"127.0.0.1:{port}"
        return events

    events = asyncio.run(main())
    assert [e["ev"] for e in events[:6]] == ["error"] * 6
    assert [e["id"] for e in events[:6]] == [None, None, 1, None, 9, 2]
    assert events[6]["ev"] == "udp-opened" and events[-1] == {"ev": "udp-closed", "id": 3}
    assert bytes.fromhex(str(events[-2]["data"])) == b"ping"
