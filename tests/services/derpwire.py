"""A minimal DERP client for the relay's tests, built from the codec and crypto only (asyncio streams).

Independent of natkit's real client (``toolkit.services.derpclient``), so the server is tested against
bytes the tests build themselves.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

from toolkit.codec import derp
from toolkit.crypto.derp import open_server_info, seal_client_info
from toolkit.crypto.keys import node_key_pair
from toolkit.types import NodePrivateKey, NodePublicKey

TIMEOUT = 5.0


@dataclass
class RawClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    priv: NodePrivateKey
    pub: NodePublicKey
    server_key: NodePublicKey
    server_info: derp.ServerInfoJSON
    http_head: bytes
    decoder: derp.FrameDecoder

    async def frame(self, timeout: float = TIMEOUT) -> derp.Frame:
        """The next frame; raises EOFError when the server closed the connection."""
        while True:
            frame = self.decoder.next_frame()
            if frame is not None:
                return frame
            data = await asyncio.wait_for(self.reader.read(1 << 16), timeout)
            if not data:
                raise EOFError("server closed the connection")
            self.decoder.receive_data(data)

    async def frame_of(self, kind: type[derp.Frame], timeout: float = TIMEOUT) -> derp.Frame:
        """The next frame of ``kind``, skipping others (KeepAlive, ...)."""
        while True:
            frame = await self.frame(timeout)
            if isinstance(frame, kind):
                return frame

    async def closed(self, timeout: float = TIMEOUT) -> bool:
        """True once the server closes the connection (frames before that are discarded)."""
        try:
            while True:
                await self.frame(timeout)
        except (EOFError, ConnectionError):
            return True

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def send_packet(self, dst: NodePublicKey, packet: bytes) -> None:
        self.writer.write(derp.SendPacket(dst, packet).encode())

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


async def open_raw(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ssl_context, server_hostname=host if ssl_context else None), TIMEOUT
    )


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP response head and the bytes read after it."""
    buf = b""
    while (split := derp.split_http_head(buf)) is None:
        data = await asyncio.wait_for(reader.read(4096), TIMEOUT)
        if not data:
            raise EOFError(f"closed before a full HTTP head: {buf!r}")
        buf += data
    return split


async def connect(
    host: str,
    port: int,
    *,
    seed: bytes | None = None,
    mesh_key: str = "",
    ssl_context: ssl.SSLContext | None = None,
    fast_start: bool = False,
) -> RawClient:
    """Upgrade, read ServerKey, send ClientInfo, read ServerInfo (protocols.md §2.4)."""
    priv, pub = node_key_pair(seed)
    reader, writer = await open_raw(host, port, ssl_context)
    writer.write(derp.upgrade_request(host, fast_start=fast_start))
    head, rest = (b"", b"") if fast_start else await read_head(reader)
    if head:
        assert derp.parse_upgrade_response(head).status == 101, head
    decoder = derp.FrameDecoder(derp.WRITE_MAX_FRAME)
    decoder.receive_data(rest)
    client = RawClient(reader, writer, priv, pub, pub, derp.ServerInfoJSON(), head, decoder)
    server_key = await client.frame()
    assert isinstance(server_key, derp.ServerKey), server_key
    client.server_key = server_key.key
    info = derp.ClientInfoJSON(mesh_key=mesh_key)
    writer.write(seal_client_info(info, priv, server_key.key).encode())
    server_info = await client.frame()
    assert isinstance(server_info, derp.ServerInfo), server_info
    client.server_info = open_server_info(server_info, priv, server_key.key)
    return client


def self_signed(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A throwaway certificate for ``host`` (an IP SAN) and its key, as PEM files in ``directory``."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "natkit derp test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "derp.crt", directory / "derp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def client_tls(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))
