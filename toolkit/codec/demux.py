"""The single-socket demux: is this datagram STUN, disco, WireGuard, or Geneve-wrapped?

Follows protocols.md §4.11 (magicsock's ``packetLooksLike``), which is used both for UDP
datagrams and for DERP packet bodies. Rules, in order:

1. STUN: ``stun.Is`` (len >= 20, top two bits of byte 0 clear, magic cookie at 4..8) and
   byte 1 == 0x01 (a Binding request or response) (protocols.md §3.3).
2. Geneve: len >= 8, version bits 0, reserved bits of byte 1 clear, byte 7 zero. Protocol
   0x7A11 with the disco magic after the header is Geneve-wrapped disco; 0x7A11 without it is
   treated as naked WireGuard; 0x7A12 is Geneve-wrapped WireGuard; other protocols fall through.
3. Disco: len >= 38 and the magic ``TS💬``.
4. Anything else is WireGuard.

:func:`classify` is magicsock's rule with one addition: a datagram that would fall through to
rule 4 but is shorter than 32 bytes (the smallest WireGuard message, a keepalive; wireguard-go
drops anything shorter) is :attr:`Kind.UNKNOWN`. :func:`classify_strict` also returns UNKNOWN
when the bytes handed to WireGuard do not have a WireGuard type and size (protocols.md §8.1).
Both are byte checks only, cheap enough for every datagram of a capture.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from toolkit.codec import disco, geneve, stun, wireguard
from toolkit.errors import DecodeError

_STUN_COOKIE = b"\x21\x12\xa4\x42"  # RFC 8489 §5
_DISCO_MAGIC = disco.MAGIC
_DISCO_HEADER_LEN = disco.HEADER_LEN  # 38
_GENEVE_LEN = geneve.HEADER_LEN  # 8
_GENEVE_DISCO = geneve.PROTO_DISCO.to_bytes(2, "big")
_GENEVE_WG = geneve.PROTO_WIREGUARD.to_bytes(2, "big")
_WG_MIN = wireguard.TRANSPORT_MIN_LEN  # 32
_WG_EXACT = (0, wireguard.INITIATION_LEN, wireguard.RESPONSE_LEN, wireguard.COOKIE_REPLY_LEN)


class Kind(StrEnum):
    STUN = "stun"
    DISCO = "disco"
    WIREGUARD = "wireguard"
    GENEVE_DISCO = "geneve-disco"
    GENEVE_WIREGUARD = "geneve-wireguard"
    UNKNOWN = "unknown"


def is_stun_binding(data: bytes) -> bool:
    """Rule 1: ``stun.Is(b) && b[1] == 0x01`` (protocols.md §3.3, §4.11)."""
    return len(data) >= 20 and data[0] & 0xC0 == 0 and data[1] == 0x01 and data[4:8] == _STUN_COOKIE


def _wg_valid(data: bytes, off: int) -> bool:
    # protocols.md §8.1: type 1..4, three zero bytes, exact handshake sizes, transport >= 32.
    n = len(data) - off
    if n < _WG_MIN or data[off + 1] or data[off + 2] or data[off + 3]:
        return False
    t = data[off]
    if t == 4:
        return True
    return 1 <= t <= 3 and n == _WG_EXACT[t]


def classify(data: bytes) -> Kind:
    """Which codec a datagram goes to, by magicsock's rules (see the module docstring)."""
    n = len(data)
    if n >= 20 and data[1] == 0x01 and data[0] & 0xC0 == 0 and data[4:8] == _STUN_COOKIE:
        return Kind.STUN
    if n >= _GENEVE_LEN and data[0] & 0xC0 == 0 and data[1] & 0x3F == 0 and data[7] == 0:
        proto = data[2:4]
        if proto == _GENEVE_DISCO:
            if n >= _GENEVE_LEN + _DISCO_HEADER_LEN and data[8:14] == _DISCO_MAGIC:
                return Kind.GENEVE_DISCO
            return Kind.WIREGUARD if n >= _WG_MIN else Kind.UNKNOWN  # magicsock: "naked WireGuard"
        if proto == _GENEVE_WG:
            return Kind.GENEVE_WIREGUARD
    if n >= _DISCO_HEADER_LEN and data[:6] == _DISCO_MAGIC:
        return Kind.DISCO
    return Kind.WIREGUARD if n >= _WG_MIN else Kind.UNKNOWN


def classify_strict(data: bytes) -> Kind:
    """Like :func:`classify`, but WireGuard only if the bytes have a WireGuard type and size."""
    kind = classify(data)
    if kind is Kind.WIREGUARD and not _wg_valid(data, 0):
        return Kind.UNKNOWN
    if kind is Kind.GENEVE_WIREGUARD and not _wg_valid(data, _GENEVE_LEN):
        return Kind.UNKNOWN
    return kind


@dataclass(frozen=True, slots=True)
class Decoded:
    """A classified and decoded datagram. Disco boxes stay sealed (``message`` is a Wrapper)."""

    kind: Kind
    message: object | None
    error: DecodeError | None
    geneve: geneve.Header | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.message is not None


def _decode_payload(kind: Kind, payload: bytes) -> object:
    if kind is Kind.STUN:
        return stun.decode(payload)
    if kind in (Kind.DISCO, Kind.GENEVE_DISCO):
        return disco.decode_wrapper(payload)
    return wireguard.decode(payload)  # WIREGUARD, GENEVE_WIREGUARD, and UNKNOWN (to say why)


def decode_datagram(data: bytes) -> Decoded:
    """Classify with :func:`classify`, then decode with the matching codec. Never raises.

    A decode failure lands in ``.error``; for :attr:`Kind.UNKNOWN` it is WireGuard's reason
    for rejecting the bytes. The Geneve header, when there is one, is decoded strictly
    (``geneve.decode``); if that fails the payload is not decoded.
    """
    data = bytes(data)
    kind = classify(data)
    header: geneve.Header | None = None
    payload = data
    try:
        if kind in (Kind.GENEVE_DISCO, Kind.GENEVE_WIREGUARD):
            header = geneve.decode(data)
            payload = data[geneve.HEADER_LEN :]
        return Decoded(kind, _decode_payload(kind, payload), None, header)
    except DecodeError as exc:
        return Decoded(kind, None, exc, header)


__all__ = ["Decoded", "Kind", "classify", "classify_strict", "decode_datagram", "is_stun_binding"]
