"""Geneve: the 8-byte header Tailscale's peer relays put in front of disco and WireGuard.

Follows protocols.md §1.5 (Tailscale's ``net/packet/geneve.go``) and RFC 8926 §3.4, with no
options. Layout::

    byte 0   Ver(2) | Opt Len(6)          Tailscale: both 0
    byte 1   O(1) | C(1) | Rsvd(6)        Tailscale: 0x80 is its "control" flag, rest 0
    byte 2-3 Protocol Type (BE)           0x7A11 disco, 0x7A12 WireGuard
    byte 4-6 VNI (BE, 24 bits)
    byte 7   reserved, 0

Tailscale calls the 0x80 bit of byte 1 "Control"; RFC 8926 names that bit O ("control
packet"), and C (0x40) is "critical options present". :func:`decode` is strict: it accepts only
what Tailscale sends (version 0, no options, reserved bits 0), so :meth:`Header.encode` gives
back the same 8 bytes. The demux rule :func:`looks_like_geneve` is magicsock's (protocols.md
§4.11 rule 2), which is laxer: it lets Opt Len and the C bit through.
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.errors import BadMagicError, BadValueError, TruncatedError

HEADER_LEN = 8  # GeneveFixedHeaderLength
PROTO_DISCO = 0x7A11  # GeneveProtocolDisco
PROTO_WIREGUARD = 0x7A12  # GeneveProtocolWireGuard
CONTROL_FLAG = 0x80  # byte 1: Tailscale's "Control" (RFC 8926 §3.4 O bit)
CRITICAL_FLAG = 0x40  # byte 1: RFC 8926 C bit; Tailscale never sets it
VNI_MAX = 0xFFFFFF

_PROTO_NAMES = {PROTO_DISCO: "disco", PROTO_WIREGUARD: "WireGuard"}


def looks_like_geneve(data: bytes) -> bool:
    """magicsock's test for a Geneve header (protocols.md §4.11 rule 2); the protocol is not checked."""
    return len(data) >= HEADER_LEN and data[0] & 0xC0 == 0 and data[1] & 0x3F == 0 and data[7] == 0


@dataclass(frozen=True, slots=True)
class Header:
    """A Geneve header without options: payload protocol, 24-bit VNI, control flag."""

    protocol: int
    vni: int
    control: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFFFF:
            raise BadValueError(f"Geneve protocol {self.protocol:#x} does not fit in 16 bits")
        if not 0 <= self.vni <= VNI_MAX:
            raise BadValueError(f"Geneve VNI {self.vni} does not fit in 24 bits")

    @property
    def protocol_name(self) -> str:
        return _PROTO_NAMES.get(self.protocol, f"{self.protocol:#06x}")

    def encode(self) -> bytes:
        # RFC 8926 §3.4; protocols.md §1.5
        flags = CONTROL_FLAG if self.control else 0
        return bytes((0, flags)) + self.protocol.to_bytes(2, "big") + self.vni.to_bytes(3, "big") + b"\x00"

    def summary(self) -> str:
        ctl = " control" if self.control else ""
        return f"Geneve vni={self.vni} proto={self.protocol_name}{ctl}"


def decode(data: bytes) -> Header:
    """Decode the first 8 bytes of ``data`` (the payload follows at :data:`HEADER_LEN`)."""
    data = bytes(data[:HEADER_LEN])
    if len(data) < HEADER_LEN:
        raise TruncatedError(f"a Geneve header has {HEADER_LEN} bytes, got {len(data)}")
    version = data[0] >> 6
    if version != 0:
        raise BadMagicError(f"Geneve version {version} is not supported (only 0)", offset=0)
    opt_words = data[0] & 0x3F
    if opt_words:
        raise BadValueError(f"Geneve options ({opt_words * 4} bytes) are not supported", offset=0)
    if data[1] & ~CONTROL_FLAG & 0xFF:
        raise BadValueError(f"Geneve flags byte {data[1]:#04x} has bits other than control set", offset=1)
    if data[7] != 0:
        raise BadValueError(f"Geneve reserved byte 7 is {data[7]:#04x}, not 0", offset=7)
    return Header(
        protocol=int.from_bytes(data[2:4], "big"),
        vni=int.from_bytes(data[4:7], "big"),
        control=bool(data[1] & CONTROL_FLAG),
    )


__all__ = [
    "CONTROL_FLAG",
    "CRITICAL_FLAG",
    "HEADER_LEN",
    "PROTO_DISCO",
    "PROTO_WIREGUARD",
    "VNI_MAX",
    "Header",
    "decode",
    "looks_like_geneve",
]
