"""DERP framing basics: constants, the type enums, the 5-byte frame header and the frame base class.

Follows protocols.md §2.2 (frame = ``type u8 ‖ length u32 BE ‖ payload``, the size limits, the
magic) and §2.3 (the frame types, PeerGone reasons, PeerPresent flags, the server's bounds on
ClientInfo and Ping). The frame dataclasses built on :class:`_Frame` live in
:mod:`toolkit.codec.derp_frames` (handshake and packet frames) and :mod:`toolkit.codec.derp_control`
(control frames); use all of them through :mod:`toolkit.codec.derp`, which re-exports this module's
public names.
"""

from __future__ import annotations

import abc
import struct
from enum import IntEnum, IntFlag
from typing import ClassVar

from toolkit.errors import BadLengthError, BadValueError

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


class _Frame(abc.ABC):
    """Shared behaviour of the frame dataclasses: ``encode()`` = header ‖ ``encode_payload()``."""

    __slots__ = ()
    TYPE: ClassVar[FrameType]

    @property
    def frame_type(self) -> int:
        """The type byte; ``TYPE`` for the known frames, the kept byte for :class:`UnknownFrame`."""
        return self.TYPE

    @abc.abstractmethod
    def encode_payload(self) -> bytes:
        """The frame's payload, without the 5-byte header."""

    def encode(self) -> bytes:
        """The whole frame, header included. Raises BadLengthError above WRITE_MAX_FRAME (§2.2)."""
        body = self.encode_payload()
        if len(body) > WRITE_MAX_FRAME:
            raise BadLengthError(f"frame of {len(body)} bytes is larger than the write limit {WRITE_MAX_FRAME}")
        return frame_header(self.frame_type, len(body)) + body

    @abc.abstractmethod
    def summary(self) -> str:
        """One line for lessons, e.g. ``DERP SendPacket to nodekey:ab12.. 124B``."""


# fmt: off
__all__ = [
    "CLIENT_INFO_MAX", "CLIENT_INFO_MIN", "CLIENT_MAX_FRAME", "FRAME_HEADER_LEN", "KEY_LEN", "MAGIC", "MAX_INFO_LEN",
    "MAX_PACKET_SIZE", "MAX_PING_LEN", "NONCE_LEN", "PING_LEN", "PROTOCOL_VERSION", "SERVER_KEY_LEN", "WRITE_MAX_FRAME",
    "FrameType", "PeerGoneReason", "PeerPresentFlags", "frame_header", "type_name",
]
# fmt: on
