"""Server bytes for the sans-IO DERP client tests, built from the codec and crypto (protocols.md §2.3)."""

from __future__ import annotations

from toolkit.codec import derp
from toolkit.crypto.derp import seal_server_info
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.derpclient import DerpClientConn, State
from toolkit.sansio.derpevents import (
    Connected,
    KeepAliveReceived,
    PacketReceived,
    PeerGoneReceived,
    PingReceived,
)
from toolkit.types import NodePrivateKey, NodePublicKey

SERVER_PRIV, SERVER_PUB = node_key_pair(b"derp-server")
CLIENT_PRIV, CLIENT_PUB = node_key_pair(b"derp-client")
OTHER_PRIV, OTHER_PUB = node_key_pair(b"derp-other")
PEER = NodePublicKey(bytes(range(32)))
NONCE = bytes(range(24))


def rng(n: int) -> bytes:
    return b"\x07" * n


def make(start: bool = True, **kw: object) -> DerpClientConn:
    client = DerpClientConn(CLIENT_PRIV, rng=rng, host="derp.test", **kw)  # type: ignore[arg-type]
    if start:
        client.start(0.0)
    return client


def hello(header_key: NodePublicKey | None = SERVER_PUB, key: NodePublicKey = SERVER_PUB) -> bytes:
    """The server's 101 and ServerKey frame."""
    head = derp.upgrade_response(header_key) if header_key is not None else b""
    if header_key is None:
        head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    return head + derp.ServerKey(key).encode()


def server_info(info: derp.ServerInfoJSON | None = None, priv: NodePrivateKey = SERVER_PRIV) -> bytes:
    return seal_server_info(info or derp.ServerInfoJSON(), priv, CLIENT_PUB, nonce=NONCE).encode()


def frames(data: bytes) -> list[derp.Frame]:
    return derp.FrameDecoder().feed(data)


def connected(**kw: object) -> DerpClientConn:
    client = make(**kw)
    client.receive_data(hello() + server_info(), 0.1)
    assert client.state is State.CONNECTED
    client.data_to_send()
    client.take_events()
    return client


def stream() -> bytes:
    return (
        hello()
        + server_info()
        + derp.RecvPacket(PEER, b"hello").encode()
        + derp.Ping(b"pingpong").encode()
        + derp.UnknownFrame(0x42, b"skip me").encode()
        + derp.KeepAlive().encode()
        + derp.PeerGone(PEER, derp.PeerGoneReason.NOT_HERE).encode()
        + derp.RecvPacket(OTHER_PUB, b"").encode()
    )


EXPECTED = [
    Connected(SERVER_PUB, derp.ServerInfoJSON()),
    PacketReceived(PEER, b"hello"),
    PingReceived(b"pingpong"),
    KeepAliveReceived(),
    PeerGoneReceived(PEER, derp.PeerGoneReason.NOT_HERE),
    PacketReceived(OTHER_PUB, b""),
]
