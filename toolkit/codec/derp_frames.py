"""DERP frames as frozen dataclasses: the handshake and packet frames, and the :data:`Frame` union.

Follows protocols.md §2.2 and §2.3. Frame = ``type u8 ‖ length u32 BE ‖ payload`` (§2.2). This
module holds the frames of the handshake (ServerKey, ClientInfo, ServerInfo) and those that carry a
peer's packet (SendPacket, RecvPacket, ForwardPacket); the control frames are in
:mod:`toolkit.codec.derp_control` and the constants, enums and frame header in
:mod:`toolkit.codec.derp_base`, both re-exported here. Each class has ``TYPE``, ``encode()`` (the
whole frame), ``encode_payload()`` and a one-line ``summary()``. Constructors validate what the wire
can carry and raise :class:`~toolkit.errors.BadValueError`. Use these through
:mod:`toolkit.codec.derp`, which re-exports them together with the decoders (and states the
decoding decisions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

# fmt: off
# isort: off
from toolkit.codec.derp_base import (
    CLIENT_INFO_MAX, CLIENT_INFO_MIN, CLIENT_MAX_FRAME, FRAME_HEADER_LEN, KEY_LEN, MAGIC, MAX_INFO_LEN,
    MAX_PACKET_SIZE, MAX_PING_LEN, NONCE_LEN, PING_LEN, PROTOCOL_VERSION, SERVER_KEY_LEN, WRITE_MAX_FRAME,
    FrameType, PeerGoneReason, PeerPresentFlags, _check_bytes, _Frame, frame_header, type_name,
)
from toolkit.codec.derp_control import (
    ClosePeer, Health, KeepAlive, NotePreferred, PeerGone, PeerPresent, Ping, Pong, Restarting, UnknownFrame,
    WatchConns,
)
# isort: on
# fmt: on
from toolkit.types import NodePublicKey


@dataclass(frozen=True, slots=True)
class ServerKey(_Frame):
    """S→C greeting: MAGIC ‖ server public key ‖ extra bytes reserved for future use."""

    TYPE: ClassVar[FrameType] = FrameType.SERVER_KEY
    key: NodePublicKey
    extra: bytes = b""

    def encode_payload(self) -> bytes:
        return MAGIC + self.key.raw + self.extra

    def summary(self) -> str:
        more = f" +{len(self.extra)}B extra" if self.extra else ""
        return f"DERP ServerKey {self.key.short()}{more}"


@dataclass(frozen=True, slots=True)
class ClientInfo(_Frame):
    """C→S: client public key ‖ nonce ‖ box(JSON) sealed to the server key (see toolkit.crypto.derp)."""

    TYPE: ClassVar[FrameType] = FrameType.CLIENT_INFO
    key: NodePublicKey
    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check_bytes("ClientInfo nonce", self.nonce, NONCE_LEN, NONCE_LEN)
        _check_bytes("ClientInfo box", self.box, 0, CLIENT_INFO_MAX - CLIENT_INFO_MIN)

    @property
    def sealed(self) -> bytes:
        """``nonce ‖ box``, the form NaCl's SealTo produces."""
        return self.nonce + self.box

    def encode_payload(self) -> bytes:
        return self.key.raw + self.nonce + self.box

    def summary(self) -> str:
        return f"DERP ClientInfo from {self.key.short()} (sealed {len(self.box)}B)"


@dataclass(frozen=True, slots=True)
class ServerInfo(_Frame):
    """S→C: nonce ‖ box(JSON) sealed by the server to the client key."""

    TYPE: ClassVar[FrameType] = FrameType.SERVER_INFO
    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        _check_bytes("ServerInfo nonce", self.nonce, NONCE_LEN, NONCE_LEN)
        _check_bytes("ServerInfo box", self.box, 0, MAX_INFO_LEN)

    @property
    def sealed(self) -> bytes:
        return self.nonce + self.box

    def encode_payload(self) -> bytes:
        return self.nonce + self.box

    def summary(self) -> str:
        return f"DERP ServerInfo (sealed {len(self.box)}B)"


@dataclass(frozen=True, slots=True)
class SendPacket(_Frame):
    """C→S: destination key ‖ packet (at most 64 KiB)."""

    TYPE: ClassVar[FrameType] = FrameType.SEND_PACKET
    dst: NodePublicKey
    packet: bytes

    def __post_init__(self) -> None:
        _check_bytes("SendPacket packet", self.packet, 0, MAX_PACKET_SIZE)

    def encode_payload(self) -> bytes:
        return self.dst.raw + self.packet

    def summary(self) -> str:
        return f"DERP SendPacket to {self.dst.short()} {len(self.packet)}B"


@dataclass(frozen=True, slots=True)
class RecvPacket(_Frame):
    """S→C: source key ‖ packet (protocol v2; v0/v1 had no source key and are not supported)."""

    TYPE: ClassVar[FrameType] = FrameType.RECV_PACKET
    src: NodePublicKey
    packet: bytes

    def __post_init__(self) -> None:
        _check_bytes("RecvPacket packet", self.packet, 0, MAX_PACKET_SIZE)

    def encode_payload(self) -> bytes:
        return self.src.raw + self.packet

    def summary(self) -> str:
        return f"DERP RecvPacket from {self.src.short()} {len(self.packet)}B"


@dataclass(frozen=True, slots=True)
class ForwardPacket(_Frame):
    """mesh→S: src key ‖ dst key ‖ packet (mesh-key clients only)."""

    TYPE: ClassVar[FrameType] = FrameType.FORWARD_PACKET
    src: NodePublicKey
    dst: NodePublicKey
    packet: bytes

    def __post_init__(self) -> None:
        _check_bytes("ForwardPacket packet", self.packet, 0, MAX_PACKET_SIZE)

    def encode_payload(self) -> bytes:
        return self.src.raw + self.dst.raw + self.packet

    def summary(self) -> str:
        return f"DERP ForwardPacket {self.src.short()} -> {self.dst.short()} {len(self.packet)}B"


Frame: TypeAlias = (
    ServerKey
    | ClientInfo
    | ServerInfo
    | SendPacket
    | RecvPacket
    | KeepAlive
    | NotePreferred
    | PeerGone
    | PeerPresent
    | ForwardPacket
    | WatchConns
    | ClosePeer
    | Ping
    | Pong
    | Health
    | Restarting
    | UnknownFrame
)

# fmt: off
__all__ = [
    "CLIENT_INFO_MAX", "CLIENT_INFO_MIN", "CLIENT_MAX_FRAME", "FRAME_HEADER_LEN", "KEY_LEN", "MAGIC", "MAX_INFO_LEN",
    "MAX_PACKET_SIZE", "MAX_PING_LEN", "NONCE_LEN", "PING_LEN", "PROTOCOL_VERSION", "SERVER_KEY_LEN", "WRITE_MAX_FRAME",
    "ClientInfo", "ClosePeer", "ForwardPacket", "Frame", "FrameType", "Health", "KeepAlive", "NotePreferred",
    "PeerGone", "PeerGoneReason", "PeerPresent", "PeerPresentFlags", "Ping", "Pong", "RecvPacket", "Restarting",
    "SendPacket", "ServerInfo", "ServerKey", "UnknownFrame", "WatchConns", "frame_header", "type_name",
]
# fmt: on
