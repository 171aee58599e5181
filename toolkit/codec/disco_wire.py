"""Disco wire basics: the sizes, the message types, the outer wrapper and the shared field encodings.

Follows protocols.md §1.1 (the wrapper ``magic ‖ sender disco key ‖ nonce ‖ box`` and magicsock's
demux rule) and §1.2 (the plaintext header ``type ‖ version``, endpoint encoding, payload sizes),
which paraphrase Tailscale's ``disco/disco.go``. The messages themselves are in
:mod:`toolkit.codec.disco` (Ping, Pong, CallMeMaybe, and the decoder) and
:mod:`toolkit.codec.disco_relay` (the peer-relay messages); :mod:`toolkit.codec.disco` re-exports
this module's public names, so import from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from toolkit.errors import BadMagicError, BadValueError, TruncatedError
from toolkit.types import DiscoPublicKey, Endpoint

# protocols.md §1.1: the wrapper.
MAGIC = b"TS\xf0\x9f\x92\xac"  # "TS💬"
MAGIC_LEN = 6
KEY_LEN = 32
NONCE_LEN = 24
TAG_LEN = 16  # Poly1305 tag at the start of the NaCl box
HEADER_LEN = MAGIC_LEN + KEY_LEN  # 38, magicsock's discoHeaderLen
WRAPPER_MIN_LEN = HEADER_LEN + NONCE_LEN  # 62, disco.LooksLikeDiscoWrapper
WRAPPER_OVERHEAD = WRAPPER_MIN_LEN + TAG_LEN  # 78 bytes around the plaintext

# protocols.md §1.2: the plaintext.
VERSION = 0
MESSAGE_HEADER_LEN = 2  # type, version
TXID_LEN = 12
PING_LEN = TXID_LEN + KEY_LEN  # 44, disco.PingLen
PONG_LEN = TXID_LEN + 16 + 2  # 30
EP_LEN = 16 + 2  # 18: IP as 16 bytes (v4-mapped for IPv4), port BE
CHALLENGE_LEN = 32  # BindUDPRelayChallengeLen
BIND_COMMON_LEN = 4 + 4 + KEY_LEN + CHALLENGE_LEN  # 72
ALLOC_REQUEST_LEN = 2 * KEY_LEN + 4  # 68
RELAY_ENDPOINT_FIXED_LEN = 3 * KEY_LEN + 8 + 4 + 8 + 8  # 124, before the N endpoints

# protocols.md §1.2: whole-packet sizes (UDP payload, no Geneve).
PING_PACKET_SIZE = WRAPPER_OVERHEAD + MESSAGE_HEADER_LEN + PING_LEN  # 124, discoPingSize
PONG_PACKET_SIZE = WRAPPER_OVERHEAD + MESSAGE_HEADER_LEN + PONG_LEN  # 110
CALL_ME_MAYBE_PACKET_BASE = WRAPPER_OVERHEAD + MESSAGE_HEADER_LEN  # 80, plus 18 per endpoint

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_ZERO_KEY = bytes(KEY_LEN)


class MsgType(IntEnum):
    """The first plaintext byte (protocols.md §1.2)."""

    PING = 1
    PONG = 2
    CALL_ME_MAYBE = 3
    BIND_UDP_RELAY_ENDPOINT = 4
    BIND_UDP_RELAY_ENDPOINT_CHALLENGE = 5
    BIND_UDP_RELAY_ENDPOINT_ANSWER = 6
    CALL_ME_MAYBE_VIA = 7
    ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST = 8
    ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE = 9


# The wrapper (protocols.md §1.1)


def looks_like_disco(data: bytes) -> bool:
    """magicsock's demux rule: at least magic + sender key (38 bytes) and the magic."""
    return len(data) >= HEADER_LEN and data[:MAGIC_LEN] == MAGIC


@dataclass(frozen=True, slots=True)
class Wrapper:
    """``magic || sender disco key || nonce || box`` where box is ``tag(16) || ciphertext``."""

    sender: DiscoPublicKey
    nonce: bytes
    box: bytes

    def __post_init__(self) -> None:
        if len(self.nonce) != NONCE_LEN:
            raise BadValueError(f"a disco nonce has {NONCE_LEN} bytes, got {len(self.nonce)}")
        if len(self.box) < TAG_LEN:
            raise BadValueError(f"a NaCl box has at least {TAG_LEN} bytes (the tag), got {len(self.box)}")

    @property
    def sealed(self) -> bytes:
        """``nonce || box``: what NaCl's ``Box.decrypt`` takes (protocols.md §1.1)."""
        return self.nonce + self.box

    def encode(self) -> bytes:
        return MAGIC + self.sender.raw + self.nonce + self.box

    def summary(self) -> str:
        return f"disco from {self.sender.short()} {len(self.box) - TAG_LEN}B sealed"


def decode_wrapper(data: bytes) -> Wrapper:
    """Split a disco packet into sender key, nonce and box. The box is not opened here."""
    data = bytes(data)
    if data[:MAGIC_LEN] != MAGIC[: len(data)]:
        raise BadMagicError("not a disco packet: the first 6 bytes are not 'TS💬'", offset=0)
    if len(data) < WRAPPER_MIN_LEN + TAG_LEN:
        raise TruncatedError(f"a disco packet has at least {WRAPPER_MIN_LEN + TAG_LEN} bytes, got {len(data)}")
    return Wrapper(
        DiscoPublicKey(data[MAGIC_LEN:HEADER_LEN]),
        data[HEADER_LEN:WRAPPER_MIN_LEN],
        data[WRAPPER_MIN_LEN:],
    )


# Field helpers


def _header(t: MsgType) -> bytes:
    return bytes((t, VERSION))


def _encode_endpoints(endpoints: tuple[Endpoint, ...]) -> bytes:
    return b"".join(ep.packed16() + ep.port.to_bytes(2, "big") for ep in endpoints)


def _decode_endpoints(p: bytes) -> tuple[Endpoint, ...]:
    # Callers guarantee len(p) % EP_LEN == 0; the IP is unmapped (protocols.md §1.2).
    return tuple(
        Endpoint.from_packed16(p[i : i + 16], int.from_bytes(p[i + 16 : i + 18], "big"))
        for i in range(0, len(p), EP_LEN)
    )


def _check_uint(name: str, value: int, limit: int) -> None:
    if not 0 <= value <= limit:
        raise BadValueError(f"{name} {value} does not fit in {limit.bit_length()} bits")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# fmt: off
__all__ = [
    "ALLOC_REQUEST_LEN", "BIND_COMMON_LEN", "CALL_ME_MAYBE_PACKET_BASE", "CHALLENGE_LEN", "EP_LEN", "HEADER_LEN",
    "KEY_LEN", "MAGIC", "MAGIC_LEN", "MESSAGE_HEADER_LEN", "NONCE_LEN", "PING_LEN", "PING_PACKET_SIZE", "PONG_LEN",
    "PONG_PACKET_SIZE", "RELAY_ENDPOINT_FIXED_LEN", "TAG_LEN", "TXID_LEN", "VERSION", "WRAPPER_MIN_LEN",
    "WRAPPER_OVERHEAD", "MsgType", "Wrapper", "decode_wrapper", "looks_like_disco",
]
# fmt: on
