"""The crafter: valid bytes checked by the codecs, and crafted STUN accepted by a real peer (coturn).

coturn (Debian ``turnserver``) is started on 127.0.0.1 and a free port by the fixture and killed
on teardown. A crafted Binding Request is sent from a real socket and with scapy's ``send()``; the
response, decoded by the codec, maps to the sending socket's address. coturn also drops a request
whose FINGERPRINT is wrong, which shows the crafter's FINGERPRINT is what makes it accepted.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP

from tests.support import free_udp_port, require_root, require_tool
from toolkit.codec import derp, disco, stun, wireguard
from toolkit.crypto import disco as disco_crypto
from toolkit.crypto import keys
from toolkit.packets import crafter, pcapio
from toolkit.packets.derp import DERPReassembler
from toolkit.packets.disco import Disco
from toolkit.packets.stun import STUN
from toolkit.packets.wireguard import WireGuardTransport
from toolkit.types import Endpoint, TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"crafter-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"crafter-b")
_, NODE = keys.node_key_pair(b"crafter-node")
TX = TxID(bytes(range(1, 13)))


def test_default_request_is_tailscales() -> None:
    assert crafter.stun_binding_request(TX) == stun.tailnode_request(TX)  # protocols.md §3.1


def test_stun_integrity_and_fingerprint_verify() -> None:
    key = stun.short_term_key("secret")
    wire = crafter.stun_binding_request(TX, software=None, username="alice:bob", integrity_key=key)
    assert stun.verify_integrity(wire, key) is True
    assert stun.verify_integrity(wire, b"other") is False
    assert stun.verify_fingerprint(wire) is True
    assert int.from_bytes(wire[2:4], "big") == len(wire) - 20
    msg = stun.decode(wire)
    assert [type(a).__name__ for a in msg.attributes] == ["Username", "MessageIntegrity", "Fingerprint"]
    resp = crafter.stun_binding_response(TX, Endpoint.parse("[2001:db8::1]:9"), integrity_key=key)
    assert stun.verify_integrity(resp, key) and stun.decode(resp).mapped_endpoint == Endpoint.parse("[2001:db8::1]:9")


def test_change_request_for_rfc5780() -> None:
    msg = stun.decode(crafter.stun_binding_request(TX, change_ip=True, change_port=True))
    assert msg.get(stun.ChangeRequest) == stun.ChangeRequest(True, True)


def test_disco_crafts_open_with_the_receiver_key() -> None:
    ping = crafter.disco_ping(A_PRIV, B_PUB, txid=TX, node_key=NODE)
    assert len(ping) == disco.PING_PACKET_SIZE  # 124 bytes, protocols.md §1.2
    assert disco_crypto.open_message(ping, B_PRIV) == (A_PUB, disco.Ping(TX, NODE))
    pong = crafter.disco_pong(B_PRIV, A_PUB, TX, Endpoint.parse("1.2.3.4:5"))
    assert len(pong) == disco.PONG_PACKET_SIZE
    cmm = crafter.disco_call_me_maybe(A_PRIV, B_PUB, [Endpoint.parse("1.2.3.4:5"), Endpoint.parse("[::1]:6")])
    assert len(cmm) == disco.CALL_ME_MAYBE_PACKET_BASE + 2 * 18
    assert disco_crypto.open_message(cmm, B_PRIV)[1] == disco.CallMeMaybe(
        (Endpoint.parse("1.2.3.4:5"), Endpoint.parse("[::1]:6"))
    )
    fixed = crafter.disco_ping(A_PRIV, B_PUB, txid=TX, nonce=bytes(24))
    assert fixed == crafter.disco_ping(A_PRIV, B_PUB, txid=TX, nonce=bytes(24))


def test_wireguard_layouts_decode() -> None:
    assert wireguard.decode(crafter.wireguard_initiation(5)).sender_index == 5
    r = wireguard.decode(crafter.wireguard_response(6, 5))
    assert (r.sender_index, r.receiver_index) == (6, 5)  # type: ignore[union-attr]
    assert wireguard.decode(crafter.wireguard_cookie_reply(5)).receiver_index == 5  # type: ignore[union-attr]
    t = wireguard.decode(crafter.wireguard_transport(5, 9, 17))
    assert isinstance(t, wireguard.Transport) and t.padded and len(t.encrypted_packet) == 32 + 16
    assert wireguard.decode(crafter.wireguard_transport(5, 10)).is_keepalive  # type: ignore[union-attr]


def test_derp_frames_decode() -> None:
    wire = crafter.derp_bytes(derp.KeepAlive(), derp.Ping(bytes(8)))
    assert derp.FrameDecoder().feed(wire) == [derp.KeepAlive(), derp.Ping(bytes(8))]
    assert derp.decode(crafter.derp_send_packet(NODE, b"x")) == derp.SendPacket(NODE, b"x")
    assert derp.decode(crafter.derp_recv_packet(NODE, b"y")) == derp.RecvPacket(NODE, b"y")


def test_udp_packets_have_the_layer_and_correct_checksums() -> None:
    pkt = crafter.udp(crafter.wireguard_transport(1, 2), "10.0.0.1:1", "10.0.0.2:2")
    again = IP(bytes(pkt))
    assert isinstance(again[UDP].payload, WireGuardTransport)
    assert (
        again[UDP].chksum
        == IP(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / bytes(again[UDP].payload)))[UDP].chksum
    )
    v6 = crafter.udp(crafter.disco_ping(A_PRIV, B_PUB), "[2001:db8::1]:1", "[2001:db8::2]:2")
    assert v6.haslayer(Disco) and v6.version == 6


def test_tcp_conversation_reassembles_to_the_same_frames(tmp_path: Path) -> None:
    frames = [derp.ServerKey(NODE), derp.KeepAlive(), derp.Ping(bytes(range(8)))]
    stream = derp.upgrade_response(NODE) + crafter.derp_bytes(*frames)
    packets = crafter.tcp_conversation(
        "10.0.0.1:5000", "10.0.0.2:443", [(True, derp.upgrade_request("h")), (False, stream)], segment=7
    )
    assert packets[0][TCP].flags == "S" and packets[-1][TCP].flags == "A"
    r = DERPReassembler()
    got = []
    for p in packets:
        src = Endpoint.parse(f"{p[IP].src}:{p[TCP].sport}")
        dst = Endpoint.parse(f"{p[IP].dst}:{p[TCP].dport}")
        got += r.add_segment(src, dst, p[TCP].seq, int(p[TCP].flags), bytes(p[TCP].payload))
    assert [e.frame for e in got if e.kind == "frame"] == frames
    path = tmp_path / "c.pcap"
    assert crafter.write_pcap(path, packets) == len(packets)
    assert len(list(pcapio.read_records(path))) == len(packets)


# --- coturn --------------------------------------------------------------------------------------


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[str, int]]:
    exe = require_tool("turnserver", "coturn")
    port = free_udp_port()
    log = tmp_path / "turnserver.log"
    cmd = [exe, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--stun-only", "--no-cli",
           "--no-tls", "--no-dtls", f"--log-file={log}", "--simple-log", f"--pidfile={tmp_path / 'turn.pid'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_stun(("127.0.0.1", port), proc)
        yield "127.0.0.1", port
    finally:
        proc.kill()
        proc.wait(10)


def _wait_for_stun(addr: tuple[str, int], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            assert proc.poll() is None, "turnserver exited"
            s.sendto(crafter.stun_binding_request(), addr)
            try:
                s.recvfrom(2048)
                return
            except TimeoutError:
                continue
    raise AssertionError("coturn did not answer within 10 s")


def _ask(sock: socket.socket, server: tuple[str, int], request: bytes) -> stun.Message | None:
    sock.sendto(request, server)
    try:
        data, _ = sock.recvfrom(2048)
    except TimeoutError:
        return None
    return stun.decode(data)


@pytest.mark.tool
def test_coturn_accepts_crafted_request_and_maps_the_sender(coturn: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(2)
        txid = crafter.new_txid()
        resp = _ask(s, coturn, crafter.stun_binding_request(txid))
        assert resp is not None
        assert resp.txid == txid and resp.msg_class is stun.Class.SUCCESS
        assert resp.mapped_endpoint == Endpoint.parse("{}:{}".format(*s.getsockname()))
        assert STUN(resp.encode()).mysummary().startswith("STUN Binding Success  xor-mapped 127.0.0.1:")


@pytest.mark.tool
def test_coturn_drops_a_request_with_a_wrong_fingerprint(coturn: tuple[str, int]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(1)
        bad = bytearray(crafter.stun_binding_request(crafter.new_txid()))
        bad[-1] ^= 0x01
        assert _ask(s, coturn, bytes(bad)) is None
        assert _ask(s, coturn, crafter.stun_binding_request()) is not None  # the server is still there


@pytest.mark.tool
@pytest.mark.root
def test_crafted_scapy_packet_sent_with_scapy_is_answered(coturn: tuple[str, int]) -> None:
    require_root()
    from scapy.sendrecv import send

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # receives the answer to the packet scapy sends in its name
        s.settimeout(2)
        txid = crafter.new_txid()
        port = s.getsockname()[1]
        send(
            crafter.udp(crafter.stun_binding_request(txid), f"127.0.0.1:{port}", "{}:{}".format(*coturn)), verbose=False
        )
        data, _ = s.recvfrom(2048)
    resp = stun.decode(data)
    assert resp.txid == txid and resp.mapped_endpoint == Endpoint.parse(f"127.0.0.1:{port}")
