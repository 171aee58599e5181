"""Helpers for the DERP client's service tests: relays (in-process and as processes), a self-signed
certificate, small fake servers that answer the upgrade wrongly, and an async polling helper."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from tests.support import NatkitService
from toolkit.crypto.keys import generate_node_key
from toolkit.services.derpserver import DerpServer
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

FAST = DEFAULT.replace(derp_reconnect_min=0.05, derp_reconnect_max=0.4)
_URL = re.compile(r"(https?://\S+?/derp)\b")


def run(coro: Awaitable[object], timeout: float = 30.0) -> object:
    async def main() -> object:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def relay(timing: Timing = DEFAULT, **kw: object) -> AsyncIterator[DerpServer]:
    """An in-process natkit DERP server on 127.0.0.1 (a free port)."""
    server = DerpServer(generate_node_key(), [Endpoint.parse("127.0.0.1:0")], timing=timing, **kw)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def start_process(*args: str) -> NatkitService:
    """``natkit derp-server ARGS`` as a child process (started off the event loop)."""
    return await asyncio.to_thread(NatkitService, ["derp-server", *args], None, 15.0)


def url_of(service: NatkitService) -> str:
    match = _URL.search(service.start_line)
    assert match, service.start_line
    return match.group(1)


def self_signed(directory: Path, name: str = "derp.test") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and 127.0.0.1 (cert.pem, key.pem) made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@contextlib.asynccontextmanager
async def fake_server(answer: bytes | None) -> AsyncIterator[str]:
    """A TCP server that answers any request with ``answer`` (None: says nothing); yields its URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            if answer is not None:
                writer.write(answer)
                await writer.drain()
            await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/derp"
    finally:
        server.close()
        await server.wait_closed()
