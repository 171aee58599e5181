"""An in-memory harness for the DERP relay core: a fake clock, the core, and clients built from the codec.

Clients speak real DERP bytes (``toolkit.codec.derp`` + ``toolkit.crypto.derp``), so the tests drive
:class:`~toolkit.sansio.derpserver.DerpServerCore` exactly as sockets would, without any.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field

from toolkit.codec import derp
from toolkit.crypto.derp import open_server_info, seal_client_info
from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.derpserver import DerpServerCore
from toolkit.sansio.derpserver_conn import Close, DerpLimits
from toolkit.sansio.trace import TraceLog
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

MESH_KEY = "ab" * 32


class Rng:
    """Deterministic bytes for the core (nonces, jitter)."""

    def __init__(self, seed: bytes = b"derp") -> None:
        self._counter = itertools.count()
        self._seed = seed

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self._seed + next(self._counter).to_bytes(8, "big")).digest()
        return out[:n]


@dataclass
class Client:
    """One connection's client side: what it received, decoded."""

    harness: Harness
    conn_id: int
    priv: NodePrivateKey
    pub: NodePublicKey
    remote: Endpoint
    raw: bytearray = field(default_factory=bytearray)  # every byte the server wrote to this connection
    closed: Close | None = None
    _decoder: derp.FrameDecoder = field(default_factory=lambda: derp.FrameDecoder(derp.WRITE_MAX_FRAME))
    _http_done: bool = False
    frames: list[derp.Frame] = field(default_factory=list)  # every frame received, in order

    def send(self, data: bytes) -> None:
        self.harness.core.data_received(self.conn_id, data, self.harness.now)
        self.harness.pump()

    def send_frame(self, frame: derp.Frame) -> None:
        self.send(frame.encode())

    def send_packet(self, dst: Client | NodePublicKey, packet: bytes) -> None:
        key = dst.pub if isinstance(dst, Client) else dst
        self.send_frame(derp.SendPacket(key, packet))

    def feed(self, data: bytes) -> None:
        self.raw += data
        if not self._http_done:
            return
        self.frames.extend(self._decoder.feed(data))

    def start_frames(self, after_http: bytes) -> None:
        self._http_done = True
        self.frames.extend(self._decoder.feed(after_http))

    def take(self, kind: type[derp.Frame] | None = None) -> list[derp.Frame]:
        """The frames received since the last take (only those of ``kind`` when given); clears them all."""
        got = [f for f in self.frames if kind is None or isinstance(f, kind)]
        self.frames.clear()
        return got

    def packets(self) -> list[tuple[NodePublicKey, bytes]]:
        return [(f.src, f.packet) for f in self.take(derp.RecvPacket)]  # type: ignore[attr-defined]

    def hang_up(self) -> None:
        self.harness.core.connection_lost(self.conn_id, self.harness.now)
        self.harness.pump()


class Harness:
    def __init__(
        self,
        *,
        limits: DerpLimits | None = None,
        timing: Timing = DEFAULT,
        mesh_key: str = MESH_KEY,
        trace: bool = True,
        seed: bytes = b"server",
    ) -> None:
        self.now = 1000.0
        self.trace = TraceLog() if trace else None
        server_priv, _ = node_key_pair(seed)
        self.core = DerpServerCore(
            server_priv, rng=Rng(), timing=timing, limits=limits, mesh_key=mesh_key, tracer=self.trace
        )
        self.clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self._seeds = itertools.count(1)

    def pump(self) -> None:
        """Deliver what the core wants written and closed."""
        for conn_id, data in self.core.pending_writes():
            self.clients[conn_id].feed(data)
        for close in self.core.connections_to_close():
            self.clients[close.conn_id].closed = close
            self.core.connection_lost(close.conn_id, self.now)
        # closing can queue more frames (PeerGone) for others
        for conn_id, data in self.core.pending_writes():
            self.clients[conn_id].feed(data)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while (t := self.core.get_timer()) is not None and t <= self.now:
            self.core.handle_timer(self.now)
            self.pump()

    def open(self, seed: bytes | None = None) -> Client:
        """A raw TCP connection, nothing sent yet."""
        conn_id = next(self._ids)
        priv, pub = node_key_pair(seed if seed is not None else b"client-%d" % next(self._seeds))
        client = Client(self, conn_id, priv, pub, Endpoint.parse(f"192.0.2.{conn_id % 250 + 1}:{40000 + conn_id}"))
        self.clients[conn_id] = client
        self.core.connection_made(conn_id, client.remote, self.now)
        return client

    def connect(
        self, seed: bytes | None = None, *, mesh_key: str = "", fast_start: bool = False, is_prober: bool = False
    ) -> Client:
        """A client through the upgrade and the handshake; its frames start after ServerInfo."""
        client = self.open(seed)
        client.send(derp.upgrade_request("derp.test", fast_start=fast_start))
        head = b""
        if not fast_start:
            split = derp.split_http_head(bytes(client.raw))
            assert split is not None, client.raw
            head, _ = split
            assert derp.parse_upgrade_response(head).status == 101
        client.start_frames(bytes(client.raw[len(head) :]))
        server_key = client.take()
        assert server_key == [derp.ServerKey(self.core.public_key)], server_key
        info = derp.ClientInfoJSON(mesh_key=mesh_key, is_prober=is_prober)
        client.send_frame(seal_client_info(info, client.priv, self.core.public_key))
        frames = client.take()
        assert frames and isinstance(frames[0], derp.ServerInfo), frames
        client.server_info = open_server_info(frames[0], client.priv, self.core.public_key)  # type: ignore[attr-defined]
        client.frames.extend(frames[1:])
        return client
