"""Disco peer-relay messages: the Bind handshake, CallMeMaybeVia and relay allocation (types 4-9).

Follows protocols.md §1.2 (plaintext layouts), which paraphrases Tailscale's ``disco/disco.go``:
BindUDPRelayEndpoint, ...Challenge and ...Answer share one 72-byte layout (vni, generation, remote
disco key, challenge); CallMeMaybeVia and AllocateUDPRelayEndpointResponse carry the same relay
endpoint body (server and client disco keys, lamport id, vni, lifetimes, N >= 1 endpoints). The Bind
messages ignore the version byte; CallMeMaybeVia and the Allocate messages reject a version other
than 0 with :class:`~toolkit.errors.BadMagicError` (see :mod:`toolkit.codec.disco` for why).
:mod:`toolkit.codec.disco` re-exports the classes and dispatches to the parsers here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from toolkit.codec.disco_wire import (
    _U32,
    _U64,
    ALLOC_REQUEST_LEN,
    BIND_COMMON_LEN,
    CHALLENGE_LEN,
    EP_LEN,
    KEY_LEN,
    RELAY_ENDPOINT_FIXED_LEN,
    VERSION,
    MsgType,
    _check_uint,
    _decode_endpoints,
    _encode_endpoints,
    _header,
    _plural,
)
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, TruncatedError
from toolkit.types import DiscoPublicKey, Endpoint

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


# fmt: off
__all__ = [
    "AllocateUDPRelayEndpointRequest", "AllocateUDPRelayEndpointResponse", "BindUDPRelayEndpoint",
    "BindUDPRelayEndpointAnswer", "BindUDPRelayEndpointChallenge", "CallMeMaybeVia",
]
# fmt: on
