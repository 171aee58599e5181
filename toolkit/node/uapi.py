"""WireGuard's cross-platform userspace API: the text protocol ``wg`` speaks to wireguard-go.

Follows https://www.wireguard.com/xplatform/ ("Configuration Protocol") as wireguard-go's
``device/uapi.go`` and wireguard-tools' ``ipc-uapi.h`` implement it. A device listens on the unix
stream socket ``/var/run/wireguard/NAME.sock``; ``wg show NAME`` and ``wg set NAME ...`` find it there
(before they look for a kernel interface), and so does ``natkit wg show``.

* ``get=1\\n\\n`` is answered with ``key=value`` lines: ``private_key`` and ``listen_port`` for the
  device, then for each peer ``public_key`` (which starts the peer), ``preshared_key``,
  ``protocol_version=1``, ``endpoint``, ``last_handshake_time_sec``/``_nsec`` (wall clock),
  ``tx_bytes``, ``rx_bytes``, ``persistent_keepalive_interval`` and one ``allowed_ip`` per prefix;
  then ``errno=0`` and an empty line. Keys are lowercase hex; ``0``/all-zero means "none".
* ``set=1\\n`` is followed by ``key=value`` lines and an empty line, answered ``errno=N\\n\\n`` where
  N is 0 or a negative errno (``-EINVAL`` for a bad line). natkit supports ``private_key``,
  ``listen_port``, ``replace_peers``, ``fwmark=0`` and per peer ``public_key``, ``remove``,
  ``update_only``, ``preshared_key``, ``endpoint``, ``persistent_keepalive_interval``,
  ``replace_allowed_ips``, ``allowed_ip`` and ``protocol_version=1``. Unlike wireguard-go, natkit
  parses the whole request before applying anything, so a bad line changes nothing.
* A connection may carry several operations; the server answers each.

Keys on this socket are hex (the xplatform page), not the base64 of config files and ``wg show``.
:class:`CoreBackend` answers from a sans-IO :class:`toolkit.sansio.wireguard.WireGuardDevice`
(``peer_status()``, ``add_peer``...); the client functions are what ``natkit wg show`` uses. The
records and their text forms live in :mod:`toolkit.node.uapi_text` and are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from toolkit.crypto.keys import public_key as derive_public_key
from toolkit.errors import UsageError
from toolkit.node.uapi_text import (
    _ZERO,
    DeviceInfo,
    PeerChange,
    PeerInfo,
    SetRequest,
    UapiError,
    _prefix,
    format_get,
    format_set,
    parse_get,
    parse_set,
)
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

SOCKET_DIR = Path("/var/run/wireguard")


# --- server -------------------------------------------------------------------------------------


class UapiBackend(Protocol):
    """What the server needs from a device."""

    def uapi_get(self) -> DeviceInfo: ...

    def uapi_set(self, request: SetRequest) -> None: ...


class _PeerStatus(Protocol):
    """The fields of the core's ``PeerStatus`` the UAPI reads (read-only: frozen dataclasses match)."""

    @property
    def public_key(self) -> NodePublicKey: ...
    @property
    def preshared_key(self) -> bytes | None: ...
    @property
    def endpoint(self) -> Endpoint | None: ...
    @property
    def allowed_ips(self) -> Sequence[str]: ...
    @property
    def last_handshake(self) -> float | None: ...
    @property
    def rx_bytes(self) -> int: ...
    @property
    def tx_bytes(self) -> int: ...
    @property
    def persistent_keepalive(self) -> int | None: ...


class WireGuardCore(Protocol):
    """The part of the sans-IO ``WireGuardDevice`` (wg_contract) the UAPI reads and writes."""

    @property
    def private_key(self) -> NodePrivateKey: ...

    def set_private_key(self, key: NodePrivateKey) -> None: ...

    def add_peer(
        self,
        public_key: NodePublicKey,
        *,
        preshared_key: bytes | None = ...,
        allowed_ips: Iterable[str] = ...,
        endpoint: Endpoint | None = ...,
        persistent_keepalive: int | None = ...,
    ) -> None: ...

    def remove_peer(self, public_key: NodePublicKey) -> None: ...

    def peer_status(self) -> Sequence[_PeerStatus]: ...


@dataclass
class CoreBackend:
    """Answers UAPI requests from a sans-IO WireGuard core. ``listen_port()`` returns the bound port;
    ``rebind(port)`` moves the socket (raises :class:`UapiError` EADDRINUSE when it cannot)."""

    core: WireGuardCore
    listen_port: Callable[[], int | None]
    rebind: Callable[[int], None] | None = None
    on_change: Callable[[], None] | None = field(default=None)

    def uapi_get(self) -> DeviceInfo:
        peers = tuple(
            PeerInfo(
                public_key=s.public_key,
                preshared_key=s.preshared_key if s.preshared_key and s.preshared_key != _ZERO else None,
                endpoint=s.endpoint,
                allowed_ips=tuple(_prefix(p) for p in s.allowed_ips),
                last_handshake=s.last_handshake,
                rx_bytes=s.rx_bytes,
                tx_bytes=s.tx_bytes,
                persistent_keepalive=s.persistent_keepalive or None,
            )
            for s in self.core.peer_status()
        )
        return DeviceInfo(private_key=self.core.private_key, listen_port=self.listen_port(), peers=peers)

    def uapi_set(self, request: SetRequest) -> None:
        if request.fwmark:
            raise UapiError(errno.EINVAL, "natkit does not support fwmark")
        if request.listen_port is not None and request.listen_port != self.listen_port():
            if self.rebind is None:
                raise UapiError(errno.EINVAL, "this device cannot change its listen port")
            self.rebind(request.listen_port)
        if request.private_key is not None:
            self.core.set_private_key(request.private_key)
        current = {s.public_key: s for s in self.core.peer_status()}
        if request.replace_peers:
            for key in list(current):
                self.core.remove_peer(key)
            current.clear()
        for change in request.peers:
            self._apply(change, current)
        if self.on_change is not None:
            self.on_change()

    def _apply(self, change: PeerChange, current: dict[NodePublicKey, _PeerStatus]) -> None:
        key = change.public_key
        if key == derive_public_key(self.core.private_key):
            return  # wireguard-go ignores a peer with the device's own key
        old = current.get(key)
        if change.remove:
            if old is not None:
                self.core.remove_peer(key)
                del current[key]
            return
        if old is None and change.update_only:
            return
        psk = old.preshared_key if old is not None else None
        if change.preshared_key is not None:
            psk = change.preshared_key if change.preshared_key != _ZERO else None
        allowed = [] if old is None or change.replace_allowed_ips else [_prefix(p) for p in old.allowed_ips]
        allowed += [p for p in change.allowed_ips if p not in allowed]
        keepalive = old.persistent_keepalive if old is not None else None
        if change.persistent_keepalive is not None:
            keepalive = change.persistent_keepalive or None
        endpoint = change.endpoint or (old.endpoint if old is not None else None)
        self.core.add_peer(
            key, preshared_key=psk, allowed_ips=allowed, endpoint=endpoint, persistent_keepalive=keepalive
        )
        current.update({s.public_key: s for s in self.core.peer_status() if s.public_key == key})


class UapiServer:
    """Listens on ``DIRECTORY/NAME.sock`` and answers ``get=1``/``set=1`` from ``backend``."""

    def __init__(self, name: str, backend: UapiBackend, *, directory: Path = SOCKET_DIR) -> None:
        self.name = name
        self.backend = backend
        self.path = socket_path(name, directory)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the socket (mode 0600, directory 0755 as wireguard-go makes them). A live socket of
        the same name is a :class:`UsageError`; a stale one (nobody listening) is replaced."""
        self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if interface_answers(self.name, self.path.parent):
            raise UsageError(f"a WireGuard interface {self.name!r} is already running ({self.path})")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        """Stop listening and remove the socket file (only if this server made it)."""
        if self._server is None:
            return
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                op = await reader.readline()
                if op == b"get=1\n":
                    blank = await reader.readline()
                    writer.write(self._answer_get() if blank == b"\n" else _status(errno.EINVAL))
                elif op == b"set=1\n":
                    body = bytearray()
                    while (line := await reader.readline()) not in (b"\n", b""):
                        body += line
                    writer.write(self._answer_set(bytes(body)))
                else:
                    return  # EOF or an unknown operation: wireguard-go hangs up too
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def _answer_get(self) -> bytes:
        try:
            return format_get(self.backend.uapi_get()).encode() + _status(0)
        except UapiError as exc:
            return _status(exc.errno)

    def _answer_set(self, body: bytes) -> bytes:
        try:
            self.backend.uapi_set(parse_set(body.decode("utf-8", "replace")))
        except UapiError as exc:
            return _status(exc.errno)
        return _status(0)


def _status(code: int) -> bytes:
    return f"errno={-code if code else 0}\n\n".encode()


# --- client -------------------------------------------------------------------------------------


def socket_path(name: str, directory: Path = SOCKET_DIR) -> Path:
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"{name!r} is not an interface name")
    return directory / f"{name}.sock"


def interface_answers(name: str, directory: Path = SOCKET_DIR) -> bool:
    """Whether ``NAME.sock`` exists and a process accepts connections on it (``wg``'s own test)."""
    path = socket_path(name, directory)
    try:
        if not stat.S_ISSOCK(path.stat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(str(path))
        return True
    except OSError:
        return False


def list_interfaces(directory: Path = SOCKET_DIR) -> list[str]:
    """Names of the userspace WireGuard interfaces that answer, sorted (as ``wg show`` lists them)."""
    if not directory.is_dir():
        return []
    names = (p.name.removesuffix(".sock") for p in directory.iterdir() if p.name.endswith(".sock"))
    return sorted(n for n in names if n and interface_answers(n, directory))


def _exchange(name: str, request: bytes, directory: Path, timeout: float) -> str:
    path = socket_path(name, directory)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(request)
            data = b""
            while not data.endswith(b"\n\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise UsageError(
            f"no WireGuard interface {name!r}: there is no {path} (start it with `natkit wg up`)"
        ) from None
    except OSError as exc:
        raise UsageError(f"WireGuard interface {name!r} does not answer on {path}: {exc.strerror or exc}") from None
    return data.decode("utf-8", "replace")


def get_device(name: str, *, directory: Path = SOCKET_DIR, timeout: float = 5.0) -> DeviceInfo:
    """``get=1`` on interface ``name``: what ``wg show NAME`` reads."""
    return parse_get(_exchange(name, b"get=1\n\n", directory, timeout))


def set_device(name: str, request: SetRequest, *, directory: Path = SOCKET_DIR, timeout: float = 5.0) -> None:
    """``set=1`` on interface ``name``; :class:`UapiError` if the device refuses."""
    answer = _exchange(name, format_set(request).encode(), directory, timeout)
    parse_get(answer)  # only an errno line; raises on errno != 0


__all__ = [
    "SOCKET_DIR",
    "CoreBackend",
    "DeviceInfo",
    "PeerChange",
    "PeerInfo",
    "SetRequest",
    "UapiBackend",
    "UapiError",
    "UapiServer",
    "WireGuardCore",
    "format_get",
    "format_set",
    "get_device",
    "interface_answers",
    "list_interfaces",
    "parse_get",
    "parse_set",
    "set_device",
    "socket_path",
]
