"""Dialing a DERP server: where to connect, TLS, and the errors a failed connect raises.

protocols.md §2.1: the client opens TCP (TLS for ``https``) to the node and upgrades ``GET /derp``.
:func:`resolve_target` turns a :class:`~toolkit.codec.derpmap.DERPNode` or a URL into a
:class:`DialTarget`: the address to connect to, the ``Host`` header, the TLS server name and the TLS
context. For ``https`` with no context given, the default verifying context is used, or, for a node
with ``InsecureForTests``, one that verifies nothing (as Tailscale's test maps do). To trust a lab CA,
pass ``ssl.create_default_context(cafile=...)``.

:class:`DialFailed` is the event a reconnecting client reports for a failed dial.
:class:`DerpConnectError` is what :meth:`toolkit.services.derpclient.DerpClient.connect` raises: a
one-line message saying what failed and what to check, and a ``reason`` tag (``refused``, ``dial``,
``tls``, ``timeout``, ``closed``, or the core's close reason such as ``http-status`` or
``key-mismatch``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TypeAlias
from urllib.parse import urlsplit

from toolkit.codec.derpmap import DERPNode
from toolkit.errors import NatkitError, UsageError
from toolkit.sansio.derpevents import Closed, DerpEvent


class DerpConnectError(NatkitError):
    """connect() failed; ``reason`` is a short tag, the message says what to check."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class DerpClosedError(NatkitError):
    """The client was closed (or its connection broke and it does not reconnect)."""


@dataclass(frozen=True, slots=True)
class DialFailed:
    """An event of a reconnecting client: a dial failed; the next one is in ``retry_in`` seconds."""

    message: str
    reason: str
    retry_in: float


ClientEvent: TypeAlias = DerpEvent | DialFailed


@dataclass(frozen=True, slots=True)
class DialTarget:
    scheme: str
    host: str  # what to connect to (a name or an IP literal)
    port: int
    path: str
    host_header: str
    server_hostname: str | None  # TLS SNI and the name the certificate must carry
    ssl_context: ssl.SSLContext | None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host_header}{self.path}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host_header(host: str, port: int, scheme: str) -> str:
    default = 443 if scheme == "https" else 80
    return _bracket(host) if port == default else f"{_bracket(host)}:{port}"


def insecure_context() -> ssl.SSLContext:
    """TLS without certificate checks: for ``InsecureForTests`` nodes only."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def resolve_target(target: DERPNode | str, ssl_context: ssl.SSLContext | None = None) -> DialTarget:
    """Where and how to dial ``target``; :class:`UsageError` for a URL that is not a DERP URL."""
    insecure = False
    if isinstance(target, DERPNode):
        if target.stun_only:
            raise UsageError(f"DERP node {target.name!r} is STUNOnly: it runs no relay to connect to")
        scheme, host, port, path = target.scheme, target.dial_host(), target.dial_port, "/derp"
        name = target.host_name or host
        insecure = target.insecure_for_tests
    else:
        try:
            parts = urlsplit(str(target).strip())
            port_or_none = parts.port
        except ValueError as exc:
            raise UsageError(f"DERP URL {target!r}: {exc}; write it as http://HOST:PORT/derp") from None
        scheme, host = parts.scheme.lower(), parts.hostname or ""
        if scheme not in ("http", "https") or not host:
            raise UsageError(f"DERP URL {target!r} must look like https://HOST[:PORT]/derp or http://HOST:PORT/derp")
        port = port_or_none or (443 if scheme == "https" else 80)
        path = parts.path if parts.path not in ("", "/") else "/derp"
        name = host
    if scheme == "http":
        if ssl_context is not None:
            raise UsageError(f"an ssl_context was given for the plain-HTTP DERP target {target!r}: use https://")
        ctx = None
    else:
        ctx = ssl_context or (insecure_context() if insecure else ssl.create_default_context())
    return DialTarget(scheme, host, port, path, _host_header(name, port, scheme), name if ctx else None, ctx)


def connect_error(target: DialTarget, exc: BaseException) -> DerpConnectError:
    """The one-line error for a dial that failed before the upgrade."""
    where = f"{target.host}:{target.port}" if ":" not in target.host else f"[{target.host}]:{target.port}"
    if isinstance(exc, ConnectionRefusedError):
        return DerpConnectError(
            f"cannot connect to DERP {target.url}: connection refused at {where} (is a DERP server listening there?)",
            "refused",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DerpConnectError(
            f"TLS with DERP {target.url} failed: certificate not trusted ({exc.verify_message}); "
            "pass an ssl_context that trusts its CA (cafile=...) or mark the node InsecureForTests",
            "tls",
        )
    if isinstance(exc, ssl.SSLError):
        return DerpConnectError(
            f"TLS with DERP {target.url} failed: {exc.reason or exc} (is it serving TLS on {where}?)", "tls"
        )
    if isinstance(exc, TimeoutError):
        return DerpConnectError(f"DERP {target.url} did not complete the handshake in time", "timeout")
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return DerpConnectError(f"cannot connect to DERP {target.url}: {text}", "dial")


def handshake_error(target: DialTarget, closed: Closed) -> DerpConnectError:
    """The one-line error for a connection the core closed during the handshake."""
    hints = {
        "http-status": " (is this URL a DERP server? the path is /derp)",
        "eof": " during the handshake (is it a DERP server, and does it speak TLS or plain HTTP as the URL says?)",
        "bad-upgrade": " (is it a DERP server?)",
        "key-mismatch": " (the server is not the one expected)",
        "bad-server-info": " (the server does not hold the private key of the key it announced)",
    }
    return DerpConnectError(f"DERP {target.url}: {closed.message}{hints.get(closed.reason, '')}", closed.reason)


__all__ = [
    "ClientEvent",
    "DialFailed",
    "DerpClosedError",
    "DerpConnectError",
    "DialTarget",
    "connect_error",
    "handshake_error",
    "insecure_context",
    "resolve_target",
]
