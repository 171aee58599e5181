"""DERP control frames: everything that does not carry a peer's packet (protocols.md §2.3, §2.4).

KeepAlive, NotePreferred, PeerGone, PeerPresent, WatchConns, ClosePeer, Ping, Pong, Health and
Restarting as frozen dataclasses, plus :class:`UnknownFrame` for a type byte this codec does not
know (kept whole; DERP peers skip such frames by length, §2.3). Each class has ``TYPE``,
``encode()``, ``encode_payload()`` and ``summary()`` from :class:`~toolkit.codec.derp_base._Frame`;
constructors raise :class:`~toolkit.errors.BadValueError` for what the wire cannot carry. Use them
through :mod:`toolkit.codec.derp`, which re-exports them with the decoders.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from toolkit.codec.derp_base import (
    _KNOWN_REASONS,
    _KNOWN_TYPES,
    MAX_PING_LEN,
    PING_LEN,
    FrameType,
    PeerGoneReason,
    PeerPresentFlags,
    _check_bytes,
    _Frame,
)
from toolkit.errors import BadValueError
from toolkit.types import Endpoint, NodePublicKey

_RESTARTING = struct.Struct(">II")


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


# fmt: off
__all__ = [
    "ClosePeer", "Health", "KeepAlive", "NotePreferred", "PeerGone", "PeerPresent", "Ping", "Pong", "Restarting",
    "UnknownFrame", "WatchConns",
]
# fmt: on
