"""Disco: Tailscale's path-discovery messages, the outer wrapper and the inner plaintexts.

Follows protocols.md §1.1 (wrapper), §1.2 (plaintext layouts) and §1.3 (golden vectors), which
paraphrase Tailscale's ``disco/disco.go``. This module only moves bytes: sealing and opening the
NaCl box lives in ``toolkit.crypto.disco``.

Parse rules are Tailscale's, with these documented decisions:

* Ping, Pong and the three Bind messages ignore the version byte (Tailscale does); they are
  re-encoded as version 0. Trailing bytes are ignored where Tailscale ignores them.
* CallMeMaybe with a version other than 0, an empty payload or a payload that is not a multiple
  of 18 bytes decodes to an empty CallMeMaybe, not an error (Tailscale does the same).
* CallMeMaybeVia and the two Allocate messages with a version other than 0: Tailscale returns a
  zero-valued message and no error. natkit raises :class:`BadMagicError` instead, so a sniffer
  shows "unsupported version" rather than a message full of zero keys; a node drops it either way.
* Ping's NodeKey: Tailscale treats an all-zero key as "no key" (``NodeKey.IsZero()``) and never
  writes one. Here ``node_key=None`` is "no key", a zero key given to :class:`Ping` becomes
  ``None``, and 32 zero bytes after the TxID are counted as padding. Tailscale would count them as
  a zero key and subtract 32 from the padding; counting them as padding is what makes
  ``decode_message(Ping(tx, None, 40).encode())`` give back the same message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeAlias, TypeVar

from toolkit.errors import BadLengthError, BadMagicError, BadValueError, DecodeError, TruncatedError, UnknownTypeError
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey, TxID

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


# Ping, Pong, CallMeMaybe (protocols.md §1.2)


@dataclass(frozen=True, slots=True)
class Ping:
    """Ping: TxID, the sender's node key (optional), ``padding`` zero bytes (MTU probes)."""

    TYPE: ClassVar[MsgType] = MsgType.PING
    txid: TxID
    node_key: NodePublicKey | None = None
    padding: int = 0

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise BadValueError(f"padding must be >= 0, got {self.padding}")
        if self.node_key is not None and self.node_key.raw == _ZERO_KEY:
            object.__setattr__(self, "node_key", None)  # Tailscale: a zero key is no key

    def encode(self) -> bytes:
        key = self.node_key.raw if self.node_key is not None else b""
        return _header(self.TYPE) + self.txid.raw + key + bytes(self.padding)

    def summary(self) -> str:
        text = f"disco Ping tx={self.txid.short()}"
        if self.node_key is not None:
            text += f" {self.node_key.short()}"
        if self.padding:
            text += f" padding={self.padding}"
        return text


def _parse_ping(ver: int, p: bytes) -> Ping:
    if len(p) < TXID_LEN:
        raise TruncatedError(f"a disco Ping has at least {TXID_LEN} payload bytes, got {len(p)}", offset=2)
    rest = p[TXID_LEN:]
    key = rest[:KEY_LEN]
    if len(key) == KEY_LEN and key != _ZERO_KEY:
        return Ping(TxID(p[:TXID_LEN]), NodePublicKey(key), len(rest) - KEY_LEN)
    return Ping(TxID(p[:TXID_LEN]), None, len(rest))


@dataclass(frozen=True, slots=True)
class Pong:
    """Pong: the ping's TxID and the source address the ping came from (a STUN-like answer)."""

    TYPE: ClassVar[MsgType] = MsgType.PONG
    txid: TxID
    src: Endpoint

    def encode(self) -> bytes:
        return _header(self.TYPE) + self.txid.raw + _encode_endpoints((self.src,))

    def summary(self) -> str:
        return f"disco Pong tx={self.txid.short()} src={self.src}"


def _parse_pong(ver: int, p: bytes) -> Pong:
    if len(p) < PONG_LEN:
        raise TruncatedError(f"a disco Pong has {PONG_LEN} payload bytes, got {len(p)}", offset=2)
    return Pong(TxID(p[:TXID_LEN]), _decode_endpoints(p[TXID_LEN:PONG_LEN])[0])


@dataclass(frozen=True, slots=True)
class CallMeMaybe:
    """CallMeMaybe: the sender's candidate endpoints (sent over DERP only)."""

    TYPE: ClassVar[MsgType] = MsgType.CALL_ME_MAYBE
    endpoints: tuple[Endpoint, ...] = ()

    def encode(self) -> bytes:
        return _header(self.TYPE) + _encode_endpoints(self.endpoints)

    def summary(self) -> str:
        return f"disco CallMeMaybe {_plural(len(self.endpoints), 'endpoint')}"


def _parse_call_me_maybe(ver: int, p: bytes) -> CallMeMaybe:
    if len(p) % EP_LEN != 0 or ver != VERSION or not p:
        return CallMeMaybe()  # Tailscale: an empty message, not an error
    return CallMeMaybe(_decode_endpoints(p))


# Peer-relay handshake: Bind, Challenge, Answer share one 72-byte layout (protocols.md §1.2)


@dataclass(frozen=True, slots=True)
class _BindCommon:
    TYPE: ClassVar[MsgType]
    vni: int
    generation: int
    remote_key: DiscoPublicKey
    challenge: bytes = bytes(CHALLENGE_LEN)

    def __post_init__(self) -> None:
        _check_uint("vni", self.vni, _U32)
        _check_uint("generation", self.generation, _U32)
        if len(self.challenge) != CHALLENGE_LEN:
            raise BadValueError(f"a challenge has {CHALLENGE_LEN} bytes, got {len(self.challenge)}")

    def encode(self) -> bytes:
        body = struct.pack(">II", self.vni, self.generation) + self.remote_key.raw + self.challenge
        return _header(self.TYPE) + body

    def summary(self) -> str:
        return (
            f"disco {type(self).__name__} vni={self.vni} gen={self.generation} remote={self.remote_key.short()}"
            f" challenge={self.challenge.hex()[:8]}.."
        )


@dataclass(frozen=True, slots=True)
class BindUDPRelayEndpoint(_BindCommon):
    """Client -> relay server, first of the 3-way bind handshake (challenge is padding)."""

    TYPE: ClassVar[MsgType] = MsgType.BIND_UDP_RELAY_ENDPOINT


@dataclass(frozen=True, slots=True)
class BindUDPRelayEndpointChallenge(_BindCommon):
    """Relay server -> client: the challenge to echo back."""

    TYPE: ClassVar[MsgType] = MsgType.BIND_UDP_RELAY_ENDPOINT_CHALLENGE


@dataclass(frozen=True, slots=True)
class BindUDPRelayEndpointAnswer(_BindCommon):
    """Client -> relay server: echoes the challenge."""

    TYPE: ClassVar[MsgType] = MsgType.BIND_UDP_RELAY_ENDPOINT_ANSWER


_B = TypeVar("_B", bound=_BindCommon)


def _bind_parser(cls: type[_B]) -> Callable[[int, bytes], _B]:
    def parse(ver: int, p: bytes) -> _B:
        if len(p) < BIND_COMMON_LEN:
            raise TruncatedError(f"a disco {cls.__name__} has {BIND_COMMON_LEN} payload bytes, got {len(p)}", offset=2)
        vni, gen = struct.unpack_from(">II", p)
        return cls(vni, gen, DiscoPublicKey(p[8:40]), p[40:BIND_COMMON_LEN])

    return parse


# Relay allocation over DERP (protocols.md §1.2)


def _check_relay_body(m: CallMeMaybeVia | AllocateUDPRelayEndpointResponse) -> None:
    _check_uint("lamport_id", m.lamport_id, _U64)
    _check_uint("vni", m.vni, _U32)
    _check_uint("bind_lifetime_ns", m.bind_lifetime_ns, _U64)
    _check_uint("steady_state_lifetime_ns", m.steady_state_lifetime_ns, _U64)
    if len(m.client_disco) != 2:
        raise BadValueError(f"client_disco holds 2 keys, got {len(m.client_disco)}")
    if not m.endpoints:
        raise BadValueError("a relay endpoint needs at least one address (Tailscale rejects none)")


def _encode_relay_body(m: CallMeMaybeVia | AllocateUDPRelayEndpointResponse) -> bytes:
    return (
        m.server_disco.raw
        + m.client_disco[0].raw
        + m.client_disco[1].raw
        + struct.pack(">QIQQ", m.lamport_id, m.vni, m.bind_lifetime_ns, m.steady_state_lifetime_ns)
        + _encode_endpoints(m.endpoints)
    )


_RelayBody = tuple[DiscoPublicKey, tuple[DiscoPublicKey, DiscoPublicKey], int, int, int, int, tuple[Endpoint, ...]]


def _decode_relay_body(p: bytes, name: str) -> _RelayBody:
    # Tailscale's UDPRelayEndpoint.decode: N >= 1 and no stray trailing bytes.
    if len(p) < RELAY_ENDPOINT_FIXED_LEN + EP_LEN:
        raise TruncatedError(f"a disco {name} relay endpoint has at least {RELAY_ENDPOINT_FIXED_LEN + EP_LEN} bytes")
    if (len(p) - RELAY_ENDPOINT_FIXED_LEN) % EP_LEN != 0:
        raise BadLengthError(f"a disco {name} ends in a partial endpoint ({len(p) - RELAY_ENDPOINT_FIXED_LEN} bytes)")
    lamport, vni, bind_ns, steady_ns = struct.unpack_from(">QIQQ", p, 96)
    clients = (DiscoPublicKey(p[32:64]), DiscoPublicKey(p[64:96]))
    endpoints = _decode_endpoints(p[RELAY_ENDPOINT_FIXED_LEN:])
    return DiscoPublicKey(p[:32]), clients, lamport, vni, bind_ns, steady_ns, endpoints


def _check_version(ver: int, name: str) -> None:
    if ver != VERSION:
        raise BadMagicError(f"disco {name} version {ver} is not supported (only 0)", offset=1)


def _relay_summary(name: str, m: CallMeMaybeVia | AllocateUDPRelayEndpointResponse) -> str:
    return f"disco {name} vni={m.vni} server={m.server_disco.short()} {_plural(len(m.endpoints), 'endpoint')}"


@dataclass(frozen=True, slots=True)
class CallMeMaybeVia:
    """CallMeMaybe through a peer relay: the allocated relay endpoint (DERP only)."""

    TYPE: ClassVar[MsgType] = MsgType.CALL_ME_MAYBE_VIA
    server_disco: DiscoPublicKey
    client_disco: tuple[DiscoPublicKey, DiscoPublicKey]
    lamport_id: int
    vni: int
    bind_lifetime_ns: int
    steady_state_lifetime_ns: int
    endpoints: tuple[Endpoint, ...]

    def __post_init__(self) -> None:
        _check_relay_body(self)

    def encode(self) -> bytes:
        return _header(self.TYPE) + _encode_relay_body(self)

    def summary(self) -> str:
        return _relay_summary("CallMeMaybeVia", self)


def _parse_call_me_maybe_via(ver: int, p: bytes) -> CallMeMaybeVia:
    _check_version(ver, "CallMeMaybeVia")
    return CallMeMaybeVia(*_decode_relay_body(p, "CallMeMaybeVia"))


@dataclass(frozen=True, slots=True)
class AllocateUDPRelayEndpointRequest:
    """Ask a relay server (over DERP) for an endpoint the two clients may bind to."""

    TYPE: ClassVar[MsgType] = MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST
    client_disco: tuple[DiscoPublicKey, DiscoPublicKey]
    generation: int

    def __post_init__(self) -> None:
        _check_uint("generation", self.generation, _U32)
        if len(self.client_disco) != 2:
            raise BadValueError(f"client_disco holds 2 keys, got {len(self.client_disco)}")

    def encode(self) -> bytes:
        a, b = self.client_disco
        return _header(self.TYPE) + a.raw + b.raw + struct.pack(">I", self.generation)

    def summary(self) -> str:
        a, b = self.client_disco
        return f"disco AllocateUDPRelayEndpointRequest gen={self.generation} clients={a.short()},{b.short()}"


def _parse_alloc_request(ver: int, p: bytes) -> AllocateUDPRelayEndpointRequest:
    _check_version(ver, "AllocateUDPRelayEndpointRequest")
    if len(p) < ALLOC_REQUEST_LEN:
        raise TruncatedError(f"a disco AllocateUDPRelayEndpointRequest has {ALLOC_REQUEST_LEN} payload bytes", offset=2)
    (gen,) = struct.unpack_from(">I", p, 2 * KEY_LEN)
    return AllocateUDPRelayEndpointRequest((DiscoPublicKey(p[:32]), DiscoPublicKey(p[32:64])), gen)


@dataclass(frozen=True, slots=True)
class AllocateUDPRelayEndpointResponse:
    """The relay server's answer: the request's generation and the allocated endpoint."""

    TYPE: ClassVar[MsgType] = MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE
    generation: int
    server_disco: DiscoPublicKey
    client_disco: tuple[DiscoPublicKey, DiscoPublicKey]
    lamport_id: int
    vni: int
    bind_lifetime_ns: int
    steady_state_lifetime_ns: int
    endpoints: tuple[Endpoint, ...]

    def __post_init__(self) -> None:
        _check_uint("generation", self.generation, _U32)
        _check_relay_body(self)

    def encode(self) -> bytes:
        return _header(self.TYPE) + struct.pack(">I", self.generation) + _encode_relay_body(self)

    def summary(self) -> str:
        return _relay_summary(f"AllocateUDPRelayEndpointResponse gen={self.generation}", self)


def _parse_alloc_response(ver: int, p: bytes) -> AllocateUDPRelayEndpointResponse:
    _check_version(ver, "AllocateUDPRelayEndpointResponse")
    if len(p) < 4:
        raise TruncatedError("a disco AllocateUDPRelayEndpointResponse starts with a 4-byte generation", offset=2)
    (gen,) = struct.unpack_from(">I", p)
    return AllocateUDPRelayEndpointResponse(gen, *_decode_relay_body(p[4:], "AllocateUDPRelayEndpointResponse"))


# Dispatch

Message: TypeAlias = (
    Ping
    | Pong
    | CallMeMaybe
    | BindUDPRelayEndpoint
    | BindUDPRelayEndpointChallenge
    | BindUDPRelayEndpointAnswer
    | CallMeMaybeVia
    | AllocateUDPRelayEndpointRequest
    | AllocateUDPRelayEndpointResponse
)

_PARSERS: dict[int, Callable[[int, bytes], Message]] = {
    MsgType.PING: _parse_ping,
    MsgType.PONG: _parse_pong,
    MsgType.CALL_ME_MAYBE: _parse_call_me_maybe,
    MsgType.BIND_UDP_RELAY_ENDPOINT: _bind_parser(BindUDPRelayEndpoint),
    MsgType.BIND_UDP_RELAY_ENDPOINT_CHALLENGE: _bind_parser(BindUDPRelayEndpointChallenge),
    MsgType.BIND_UDP_RELAY_ENDPOINT_ANSWER: _bind_parser(BindUDPRelayEndpointAnswer),
    MsgType.CALL_ME_MAYBE_VIA: _parse_call_me_maybe_via,
    MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST: _parse_alloc_request,
    MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE: _parse_alloc_response,
}


def decode_message(plaintext: bytes) -> Message:
    """Parse a box's plaintext ``type || version || payload`` (protocols.md §1.2).

    Raises only :class:`DecodeError` subclasses; an unknown type is :class:`UnknownTypeError`
    (Tailscale's receivers ignore those, for forward compatibility, protocols.md §1.1).
    """
    data = bytes(plaintext)
    if len(data) < MESSAGE_HEADER_LEN:
        raise TruncatedError(f"a disco message has at least 2 bytes (type, version), got {len(data)}")
    parser = _PARSERS.get(data[0])
    if parser is None:
        raise UnknownTypeError(f"unknown disco message type 0x{data[0]:02x}", offset=0)
    try:
        return parser(data[1], data[MESSAGE_HEADER_LEN:])
    except DecodeError:
        raise
    except (ValueError, IndexError, struct.error) as exc:  # defensive: the parsers check lengths first
        raise BadValueError(f"malformed disco {MsgType(data[0]).name}: {exc}") from exc
