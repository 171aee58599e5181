"""DERP frames as frozen dataclasses, and how each one encodes (protocols.md §2.2, §2.3).

Frame = ``type u8 ‖ length u32 BE ‖ payload`` (§2.2). Each class has ``TYPE``, ``encode()`` (the whole
frame), ``encode_payload()`` and a one-line ``summary()``. Constructors validate what the wire can carry
and raise :class:`~toolkit.errors.BadValueError`. Use these through :mod:`toolkit.codec.derp`, which
re-exports them together with the decoders (and states the decoding decisions).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import ClassVar, TypeAlias

from toolkit.errors import BadLengthError, BadValueError
from toolkit.types import Endpoint, NodePublicKey

# protocols.md §2.2
MAGIC = b"DERP\xf0\x9f\x94\x91"  # "DERP🔑"
FRAME_HEADER_LEN = 5
MAX_PACKET_SIZE = 64 << 10
MAX_INFO_LEN = 1 << 20
CLIENT_MAX_FRAME = 1 << 20  # the Go client drops the connection on larger frames
WRITE_MAX_FRAME = 10 << 20  # WriteFrame refuses larger frames
KEY_LEN = 32
NONCE_LEN = 24
PROTOCOL_VERSION = 2
# protocols.md §2.3: the server's bounds on ClientInfo, and on a Ping body
CLIENT_INFO_MIN = KEY_LEN + NONCE_LEN
CLIENT_INFO_MAX = 256 << 10
PING_LEN = 8
MAX_PING_LEN = 1000
SERVER_KEY_LEN = len(MAGIC) + KEY_LEN

_HEADER = struct.Struct(">BI")
_RESTARTING = struct.Struct(">II")


class FrameType(IntEnum):
    """The one-byte frame type (protocols.md §2.3)."""

    SERVER_KEY = 0x01
    CLIENT_INFO = 0x02
    SERVER_INFO = 0x03
    SEND_PACKET = 0x04
    RECV_PACKET = 0x05
    KEEP_ALIVE = 0x06
    NOTE_PREFERRED = 0x07
    PEER_GONE = 0x08
    PEER_PRESENT = 0x09
    FORWARD_PACKET = 0x0A
    WATCH_CONNS = 0x10
    CLOSE_PEER = 0x11
    PING = 0x12
    PONG = 0x13
    HEALTH = 0x14
    RESTARTING = 0x15


class PeerGoneReason(IntEnum):
    """Why the server has no path to a peer (protocols.md §2.3, PeerGone)."""

    DISCONNECTED = 0x00
    NOT_HERE = 0x01
    MESH_CONN_BROKE = 0xF0  # invented locally by mesh clients; never on the wire

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


_KNOWN_REASONS = frozenset(int(r) for r in PeerGoneReason)


class PeerPresentFlags(IntFlag):
    """The optional flags byte of PeerPresent (protocols.md §2.3). Zero means "not supported"."""

    REGULAR = 1
    MESH_PEER = 2
    PROBER = 4
    NOT_IDEAL = 8


def frame_header(frame_type: int, length: int) -> bytes:
    """The 5-byte header ``type u8 ‖ length u32 BE`` (protocols.md §2.2)."""
    if not 0 <= frame_type <= 0xFF or not 0 <= length <= 0xFFFFFFFF:
        raise BadValueError(f"frame header type={frame_type} length={length} out of range")
    return _HEADER.pack(frame_type, length)


_KNOWN_TYPES = frozenset(int(t) for t in FrameType)


def type_name(frame_type: int) -> str:
    """``SEND_PACKET`` for a known type, ``0x42`` for another byte."""
    return FrameType(frame_type).name if frame_type in _KNOWN_TYPES else f"0x{frame_type:02x}"


def _check_bytes(name: str, value: bytes, lo: int, hi: int) -> None:
    if not isinstance(value, bytes):
        raise BadValueError(f"{name} must be bytes, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise BadValueError(f"{name} has {len(value)} bytes, allowed {lo}..{hi}")


class _Frame:
    """Shared behaviour of the frame dataclasses: ``encode()`` = header ‖ ``encode_payload()``."""

    __slots__ = ()
    TYPE: ClassVar[FrameType]

    @property
    def frame_type(self) -> int:
        """The type byte; ``TYPE`` for the known frames, the kept byte for :class:`UnknownFrame`."""
        return self.TYPE

    def encode_payload(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The whole frame, header included. Raises BadLengthError above WRITE_MAX_FRAME (§2.2)."""
        body = self.encode_payload()
        if len(body) > WRITE_MAX_FRAME:
            raise BadLengthError(f"frame of {len(body)} bytes is larger than the write limit {WRITE_MAX_FRAME}")
        return frame_header(self.frame_type, len(body)) + body

    def summary(self) -> str:
        raise NotImplementedError


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
class KeepAlive(_Frame):
    """S→C every 60 s (+ jitter), empty (protocols.md §2.4)."""

    TYPE: ClassVar[FrameType] = FrameType.KEEP_ALIVE

    def encode_payload(self) -> bytes:
        return b""

    def summary(self) -> str:
        return "DERP KeepAlive"


@dataclass(frozen=True, slots=True)
class NotePreferred(_Frame):
    """C→S: whether this server is the client's home DERP (one byte; any non-zero byte means yes)."""

    TYPE: ClassVar[FrameType] = FrameType.NOTE_PREFERRED
    preferred: bool

    def encode_payload(self) -> bytes:
        return b"\x01" if self.preferred else b"\x00"

    def summary(self) -> str:
        return f"DERP NotePreferred {'home' if self.preferred else 'not-home'}"


@dataclass(frozen=True, slots=True)
class PeerGone(_Frame):
    """S→C: key ‖ reason. ``reason`` is a PeerGoneReason, or a plain int for a value this module does not know."""

    TYPE: ClassVar[FrameType] = FrameType.PEER_GONE
    key: NodePublicKey
    reason: PeerGoneReason | int = PeerGoneReason.DISCONNECTED

    def __post_init__(self) -> None:
        if isinstance(self.reason, bool) or not isinstance(self.reason, int) or not 0 <= self.reason <= 0xFF:
            raise BadValueError(f"PeerGone reason {self.reason!r} is not a byte")
        if self.reason in _KNOWN_REASONS:
            object.__setattr__(self, "reason", PeerGoneReason(self.reason))

    def encode_payload(self) -> bytes:
        return self.key.raw + bytes([self.reason])

    def summary(self) -> str:
        label = self.reason.label if isinstance(self.reason, PeerGoneReason) else f"reason 0x{self.reason:02x}"
        return f"DERP PeerGone {self.key.short()} ({label})"


@dataclass(frozen=True, slots=True)
class PeerPresent(_Frame):
    """S→mesh watcher: key ‖ [IP16 ‖ port u16] ‖ [flags u8 ‖ extra]. Shorter forms come from older servers."""

    TYPE: ClassVar[FrameType] = FrameType.PEER_PRESENT
    key: NodePublicKey
    endpoint: Endpoint | None = None
    flags: PeerPresentFlags | None = None
    extra: bytes = b""

    def __post_init__(self) -> None:
        if self.flags is not None:
            if self.endpoint is None:
                raise BadValueError("PeerPresent flags need an endpoint before them")
            if not 0 <= int(self.flags) <= 0xFF:
                raise BadValueError(f"PeerPresent flags {int(self.flags)} are not a byte")
            object.__setattr__(self, "flags", PeerPresentFlags(int(self.flags)))
        if self.extra and self.flags is None:
            raise BadValueError("PeerPresent extra bytes need flags before them")

    def encode_payload(self) -> bytes:
        out = self.key.raw
        if self.endpoint is not None:
            out += self.endpoint.packed16() + self.endpoint.port.to_bytes(2, "big")
        if self.flags is not None:
            out += bytes([int(self.flags)]) + self.extra
        return out

    def summary(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint is not None else ""
        flags = ""
        if self.flags is not None:
            names = [f.name.lower().replace("_", "-") for f in PeerPresentFlags if f in self.flags and f.name]
            flags = f" [{','.join(names) or hex(int(self.flags))}]"
        return f"DERP PeerPresent {self.key.short()}{where}{flags}"


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


@dataclass(frozen=True, slots=True)
class WatchConns(_Frame):
    """C→S, empty: subscribe to PeerPresent/PeerGone (mesh-key clients only)."""

    TYPE: ClassVar[FrameType] = FrameType.WATCH_CONNS

    def encode_payload(self) -> bytes:
        return b""

    def summary(self) -> str:
        return "DERP WatchConns"


@dataclass(frozen=True, slots=True)
class ClosePeer(_Frame):
    """C→S: close that peer's connection (mesh-key clients only)."""

    TYPE: ClassVar[FrameType] = FrameType.CLOSE_PEER
    key: NodePublicKey

    def encode_payload(self) -> bytes:
        return self.key.raw

    def summary(self) -> str:
        return f"DERP ClosePeer {self.key.short()}"


def _ping_text(data: bytes) -> str:
    more = len(data) - PING_LEN
    return data[:PING_LEN].hex() + (f" +{more}B" if more > 0 else "")


@dataclass(frozen=True, slots=True)
class Ping(_Frame):
    """Either way: 8..1000 bytes; the answer is a Pong with the first 8 (:meth:`pong`)."""

    TYPE: ClassVar[FrameType] = FrameType.PING
    data: bytes

    def __post_init__(self) -> None:
        _check_bytes("Ping data", self.data, PING_LEN, MAX_PING_LEN)

    def pong(self) -> Pong:
        return Pong(self.data[:PING_LEN])

    def encode_payload(self) -> bytes:
        return self.data

    def summary(self) -> str:
        return f"DERP Ping {_ping_text(self.data)}"


@dataclass(frozen=True, slots=True)
class Pong(_Frame):
    """Either way: the (first 8) bytes of the Ping it answers."""

    TYPE: ClassVar[FrameType] = FrameType.PONG
    data: bytes

    def __post_init__(self) -> None:
        _check_bytes("Pong data", self.data, PING_LEN, MAX_PING_LEN)

    def encode_payload(self) -> bytes:
        return self.data

    def summary(self) -> str:
        return f"DERP Pong {_ping_text(self.data)}"


@dataclass(frozen=True, slots=True)
class Health(_Frame):
    """S→C: UTF-8 problem text; the empty text means healthy again."""

    TYPE: ClassVar[FrameType] = FrameType.HEALTH
    problem: str = ""

    def encode_payload(self) -> bytes:
        try:
            return self.problem.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadValueError(f"Health problem is not encodable as UTF-8: {exc}") from None

    def summary(self) -> str:
        return f"DERP Health problem {self.problem!r}" if self.problem else "DERP Health OK"


@dataclass(frozen=True, slots=True)
class Restarting(_Frame):
    """S→C: reconnect in (ms) ‖ try for (ms), both u32 BE."""

    TYPE: ClassVar[FrameType] = FrameType.RESTARTING
    reconnect_in_ms: int
    try_for_ms: int

    def __post_init__(self) -> None:
        for name in ("reconnect_in_ms", "try_for_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
                raise BadValueError(f"Restarting {name}={v!r} is not a u32")

    def encode_payload(self) -> bytes:
        return _RESTARTING.pack(self.reconnect_in_ms, self.try_for_ms)

    def summary(self) -> str:
        return f"DERP Restarting reconnect in {self.reconnect_in_ms}ms, try for {self.try_for_ms}ms"


@dataclass(frozen=True, slots=True)
class UnknownFrame(_Frame):
    """A frame type this module does not know, kept whole: DERP peers skip these by length (§2.3).

    It has no ``TYPE``; :attr:`frame_type` (= ``type``) gives its type byte.
    """

    type: int
    payload: bytes

    def __post_init__(self) -> None:
        if isinstance(self.type, bool) or not isinstance(self.type, int) or not 0 <= self.type <= 0xFF:
            raise BadValueError(f"frame type {self.type!r} is not a byte")
        if self.type in _KNOWN_TYPES:
            raise BadValueError(f"frame type {FrameType(self.type).name} is known; use its own class")
        if not isinstance(self.payload, bytes):
            raise BadValueError("UnknownFrame payload must be bytes")

    @property
    def frame_type(self) -> int:
        return self.type

    def encode_payload(self) -> bytes:
        return self.payload

    def summary(self) -> str:
        return f"DERP frame type 0x{self.type:02x} (unknown, skipped) {len(self.payload)}B"


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
