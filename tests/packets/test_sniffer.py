"""Live capture: on ``lo`` while real sockets send, and inside a network namespace the test creates."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import require_root, require_tool, wait_until
from toolkit.codec import stun
from toolkit.crypto import keys
from toolkit.errors import UsageError
from toolkit.packets import crafter, pcapio
from toolkit.packets.dissect import Event
from toolkit.packets.keyring import Keyring
from toolkit.packets.sniffer import Sniffer, open_capture_socket, read_file
from toolkit.types import TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"sniffer-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"sniffer-b")
_, NODE = keys.node_key_pair(b"sniffer-node")
TX = TxID(bytes(range(1, 13)))


def _ours(events: list[Event], port: int) -> list[Event]:
    return [e for e in events if e.src.endswith(f":{port}")]


@pytest.fixture
def udp_pair() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    yield a, b
    a.close()
    b.close()


@pytest.mark.root
def test_live_capture_on_lo_sees_real_datagrams_and_opens_disco(
    udp_pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    require_root()
    a, b = udp_pair
    port_a, port_b = a.getsockname()[1], b.getsockname()[1]
    out = tmp_path / "lo.pcapng"
    sniffer = Sniffer("lo", keyring=Keyring([B_PRIV]), write=out, timeout=20).start()
    try:
        a.sendto(stun.tailnode_request(TX), b.getsockname())
        a.sendto(crafter.disco_ping(A_PRIV, B_PUB, txid=TX, node_key=NODE), b.getsockname())
        a.sendto(crafter.wireguard_transport(9, 1, 32), b.getsockname())
        assert wait_until(lambda: len(_ours(sniffer.events, port_a)) >= 3, timeout=10)
    finally:
        sniffer.stop()
        sniffer.join(5)
    mine = _ours(sniffer.events, port_a)
    assert [e.kind for e in mine] == ["stun", "disco", "wireguard"]  # once each: lo's sent copy is skipped
    assert all(e.dst == f"127.0.0.1:{port_b}" for e in mine)
    assert mine[0].summary == 'STUN Binding Request  software="tailnode" fingerprint ok'
    assert mine[1].summary == f"disco Ping tx=0102.. {NODE.short()} from {A_PUB.short()} to {B_PUB.short()}"
    assert "###[ disco Ping ]###" in mine[1].dissection()
    assert sniffer.stats.disco_opened >= 1
    # the pcapng written during the capture reads back through the same pipeline
    records = list(pcapio.read_records(out))
    assert records and all(r.linktype == pcapio.LINKTYPE_LINUX_SLL for r in records)
    again = _ours(list(read_file(out, Keyring([B_PRIV]))), port_a)
    assert [e.summary for e in again] == [e.summary for e in mine]


@pytest.mark.root
def test_count_stops_the_capture(udp_pair: tuple[socket.socket, socket.socket]) -> None:
    require_root()
    a, b = udp_pair
    sniffer = Sniffer("lo", count=2, timeout=20).start()
    deadline = time.monotonic() + 10
    while sniffer.running and time.monotonic() < deadline:
        a.sendto(stun.tailnode_request(TX), b.getsockname())
        time.sleep(0.05)
    sniffer.join(5)
    assert len(sniffer.events) == 2


@pytest.mark.root
def test_timeout_stops_an_idle_capture() -> None:
    require_root()
    start = time.monotonic()
    Sniffer("lo", timeout=0.3).run()
    assert time.monotonic() - start < 3


@pytest.mark.root
def test_live_capture_inside_a_network_namespace(netns: str) -> None:
    require_tool("ip", "iproute2")
    port = 47000 + int(time.time()) % 1000
    own_ns = os.readlink("/proc/self/ns/net")
    sniffer = Sniffer("lo", netns=netns, timeout=20).start()
    try:
        # a datagram sent inside the namespace, by a process living there
        code = (
            "import socket, sys; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.bind(('127.0.0.1', {port})); s.sendto(bytes.fromhex(sys.argv[1]), ('127.0.0.1', {port + 1}))"
        )
        request = stun.tailnode_request(TX).hex()
        subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", code, request], check=True, timeout=20)
        assert wait_until(lambda: _ours(sniffer.events, port), timeout=10)
    finally:
        sniffer.stop()
        sniffer.join(5)
    (event,) = _ours(sniffer.events, port)
    assert event.kind == "stun" and event.dst == f"127.0.0.1:{port + 1}"
    assert os.readlink("/proc/self/ns/net") == own_ns  # only the helper thread entered the namespace


@pytest.mark.root
def test_errors_are_one_line_usage_errors() -> None:
    require_root()
    with pytest.raises(UsageError, match="no network interface 'natkit-nope0'"):
        open_capture_socket("natkit-nope0")
    with pytest.raises(UsageError, match="network namespace 'natkit-no-such-ns' does not exist"):
        open_capture_socket("lo", netns="natkit-no-such-ns")


def test_without_root_live_capture_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", refuse)
    with pytest.raises(UsageError, match="live capture needs root"):
        open_capture_socket("lo")


@pytest.mark.root
def test_unknown_interface_inside_a_namespace_names_the_namespace(netns: str) -> None:
    with pytest.raises(UsageError, match=f"no network interface 'eth9' here .*in network namespace '{netns}'"):
        open_capture_socket("eth9", netns=netns)
