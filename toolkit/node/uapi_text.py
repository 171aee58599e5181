"""The text forms of WireGuard's cross-platform userspace API (``get=1`` / ``set=1``).

Follows https://www.wireguard.com/xplatform/ ("Configuration Protocol"), as wireguard-go's
``device/uapi.go`` and wireguard-tools' ``ipc-uapi.h`` implement it: the device and peer records a
``get`` answer carries, the changes a ``set`` request asks for, and their parsers and formatters.
Keys are lowercase hex on this socket; ``0`` or all-zero means "none". The socket itself (server
and client) is :mod:`toolkit.node.uapi`, which re-exports everything here.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from dataclasses import dataclass
from typing import Any

from toolkit.crypto.keys import public_key as derive_public_key
from toolkit.errors import NatkitError, UsageError
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

_ZERO = bytes(32)


class UapiError(NatkitError):
    """A UAPI request failed; ``errno`` is the positive error number sent (negated) on the wire."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.errno = code


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One peer as ``get=1`` reports it. ``last_handshake`` is wall-clock seconds (None: never)."""

    public_key: NodePublicKey
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    allowed_ips: tuple[str, ...] = ()
    last_handshake: float | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    persistent_keepalive: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device as ``get=1`` reports it."""

    private_key: NodePrivateKey | None = None
    listen_port: int | None = None
    peers: tuple[PeerInfo, ...] = ()
    fwmark: int | None = None

    @property
    def public_key(self) -> NodePublicKey | None:
        return derive_public_key(self.private_key) if self.private_key is not None else None


@dataclass(frozen=True, slots=True)
class PeerChange:
    """The ``set=1`` lines of one peer. None means "leave unchanged"; a zero PSK or keepalive 0 clears."""

    public_key: NodePublicKey
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SetRequest:
    """A parsed ``set=1`` request."""

    private_key: NodePrivateKey | None = None
    listen_port: int | None = None
    replace_peers: bool = False
    peers: tuple[PeerChange, ...] = ()
    fwmark: int | None = None


# --- text forms ---------------------------------------------------------------------------------


def format_get(device: DeviceInfo) -> str:
    """The body of a ``get=1`` answer (without the ``errno`` line), in wireguard-go's key order."""
    lines: list[str] = []
    if device.private_key is not None:
        lines.append(f"private_key={device.private_key.hex()}")
    if device.listen_port:
        lines.append(f"listen_port={device.listen_port}")
    if device.fwmark:
        lines.append(f"fwmark={device.fwmark}")
    for peer in device.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        lines.append(f"preshared_key={(peer.preshared_key or _ZERO).hex()}")
        lines.append("protocol_version=1")
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        sec = int(peer.last_handshake) if peer.last_handshake else 0
        nsec = min(round((peer.last_handshake - sec) * 1e9), 999_999_999) if peer.last_handshake else 0
        lines.append(f"last_handshake_time_sec={sec}")
        lines.append(f"last_handshake_time_nsec={nsec}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive or 0}")
        lines.extend(f"allowed_ip={prefix}" for prefix in peer.allowed_ips)
    return "".join(line + "\n" for line in lines)


def parse_get(text: str) -> DeviceInfo:
    """Parse a ``get=1`` answer (with its ``errno`` line). :class:`UapiError` for errno != 0 or bad lines."""
    device: dict[str, Any] = {}
    peers: list[dict[str, Any]] = []
    code: int | None = None
    for line in _lines(text):
        key, value = _split(line)
        if key == "errno":
            code = _uint(key, value, 1 << 31) if not value.startswith("-") else -_uint(key, value[1:], 1 << 31)
        elif key == "public_key":
            peers.append({"public_key": NodePublicKey(_hex32(key, value)), "allowed_ips": []})
        elif not peers:
            if key == "private_key":
                raw = _hex32(key, value)
                device["private_key"] = NodePrivateKey(raw) if raw != _ZERO else None
            elif key in ("listen_port", "fwmark"):
                device[key] = _uint(key, value, 0xFFFF if key == "listen_port" else 0xFFFFFFFF) or None
        else:
            _peer_get_line(peers[-1], key, value)
    if code is None:
        raise UapiError(errno.EPROTO, "the device's answer has no errno line")
    if code != 0:
        raise UapiError(abs(code), f"the device answered errno={code} ({os.strerror(abs(code))})")
    infos = []
    for p in peers:
        sec, nsec = p.pop("sec", 0), p.pop("nsec", 0)
        p["last_handshake"] = sec + nsec / 1e9 if sec or nsec else None
        p["allowed_ips"] = tuple(p["allowed_ips"])
        infos.append(PeerInfo(**p))
    return DeviceInfo(peers=tuple(infos), **device)


def _peer_get_line(peer: dict[str, Any], key: str, value: str) -> None:
    if key == "preshared_key":
        raw = _hex32(key, value)
        peer["preshared_key"] = raw if raw != _ZERO else None
    elif key == "endpoint":
        peer["endpoint"] = _endpoint(value)
    elif key == "allowed_ip":
        peer["allowed_ips"].append(_prefix(value))
    elif key == "last_handshake_time_sec":
        peer["sec"] = _uint(key, value, 1 << 63)
    elif key == "last_handshake_time_nsec":
        peer["nsec"] = _uint(key, value, 999_999_999)
    elif key in ("rx_bytes", "tx_bytes"):
        peer[key] = _uint(key, value, (1 << 64) - 1)
    elif key == "persistent_keepalive_interval":
        peer["persistent_keepalive"] = _uint(key, value, 0xFFFF) or None
    # protocol_version and keys a newer implementation adds are ignored, as `wg` does


def format_set(request: SetRequest) -> str:
    """A whole ``set=1`` request, ending with the empty line."""
    lines = ["set=1"]
    if request.private_key is not None:
        lines.append(f"private_key={request.private_key.hex()}")
    if request.listen_port is not None:
        lines.append(f"listen_port={request.listen_port}")
    if request.fwmark is not None:
        lines.append(f"fwmark={request.fwmark}")
    if request.replace_peers:
        lines.append("replace_peers=true")
    for peer in request.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        if peer.remove:
            lines.append("remove=true")
            continue
        if peer.update_only:
            lines.append("update_only=true")
        if peer.preshared_key is not None:
            lines.append(f"preshared_key={peer.preshared_key.hex()}")
        if peer.endpoint is not None:
            lines.append(f"endpoint={peer.endpoint}")
        if peer.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        if peer.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={prefix}" for prefix in peer.allowed_ips)
    return "\n".join(lines) + "\n\n"


def parse_set(text: str) -> SetRequest:
    """Parse the lines after ``set=1`` (up to the empty line). :class:`UapiError` (EINVAL) on a bad line."""
    device: dict[str, Any] = {}
    peers: list[dict[str, Any]] = []
    for line in _lines(text):
        key, value = _split(line)
        if key == "public_key":
            peers.append({"public_key": NodePublicKey(_hex32(key, value)), "allowed_ips": []})
        elif not peers:
            if key == "private_key":
                device[key] = NodePrivateKey(_hex32(key, value))
            elif key == "listen_port":
                device[key] = _uint(key, value, 0xFFFF)
            elif key == "fwmark":
                device[key] = _uint(key, value, 0xFFFFFFFF)
            elif key == "replace_peers":
                device[key] = _true(key, value)
            else:
                raise UapiError(errno.EINVAL, f"invalid UAPI device key: {key}")
        else:
            _peer_set_line(peers[-1], key, value)
    changes = tuple(PeerChange(**{**p, "allowed_ips": tuple(p["allowed_ips"])}) for p in peers)
    return SetRequest(peers=changes, **device)


def _peer_set_line(peer: dict[str, Any], key: str, value: str) -> None:
    if key in ("remove", "update_only", "replace_allowed_ips"):
        peer[key] = _true(key, value)
    elif key == "preshared_key":
        peer[key] = _hex32(key, value)
    elif key == "endpoint":
        peer[key] = _endpoint(value)
    elif key == "persistent_keepalive_interval":
        peer["persistent_keepalive"] = _uint(key, value, 0xFFFF)
    elif key == "allowed_ip":
        peer["allowed_ips"].append(_prefix(value))
    elif key == "protocol_version":
        if value != "1":
            raise UapiError(errno.EINVAL, f"invalid protocol version: {value}")
    else:
        raise UapiError(errno.EINVAL, f"invalid UAPI peer key: {key}")


def _lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


def _split(line: str) -> tuple[str, str]:
    key, sep, value = line.partition("=")
    if not sep:
        raise UapiError(errno.EPROTO, f"failed to parse line {line!r}")
    return key, value


def _hex32(key: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 32 or len(value) != 64:
        raise UapiError(errno.EINVAL, f"{key}: {value!r} is not 64 hex digits")
    return raw


def _uint(key: str, value: str, maximum: int) -> int:
    if not value.isdigit() or int(value) > maximum:
        raise UapiError(errno.EINVAL, f"{key}: {value!r} is not a number in 0..{maximum}")
    return int(value)


def _true(key: str, value: str) -> bool:
    if value != "true":
        raise UapiError(errno.EINVAL, f"{key}: invalid value {value!r} (only 'true')")
    return True


def _endpoint(value: str) -> Endpoint:
    try:
        return Endpoint.parse(value)
    except UsageError:
        raise UapiError(errno.EINVAL, f"endpoint: {value!r} is not IP:port") from None


def _prefix(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise UapiError(errno.EINVAL, f"allowed_ip: {value!r} is not a prefix") from None
