"""Disco: Tailscale's path-discovery messages, the outer wrapper and the inner plaintexts.

Follows protocols.md §1.1 (wrapper), §1.2 (plaintext layouts) and §1.3 (golden vectors), which
paraphrase Tailscale's ``disco/disco.go``. This module only moves bytes: sealing and opening the
NaCl box lives in ``toolkit.crypto.disco``. Ping, Pong and CallMeMaybe (types 1-3) and
:func:`decode_message` are defined here; the sizes, :class:`MsgType` and the wrapper are in
:mod:`toolkit.codec.disco_wire`, the peer-relay messages (types 4-9) in
:mod:`toolkit.codec.disco_relay`. Import from this module: it re-exports both.

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
from typing import ClassVar, TypeAlias

# fmt: off
# isort: off
from toolkit.codec.disco_relay import (
    AllocateUDPRelayEndpointRequest, AllocateUDPRelayEndpointResponse, BindUDPRelayEndpoint,
    BindUDPRelayEndpointAnswer, BindUDPRelayEndpointChallenge, CallMeMaybeVia, _bind_parser, _parse_alloc_request,
    _parse_alloc_response, _parse_call_me_maybe_via,
)
from toolkit.codec.disco_wire import (
    ALLOC_REQUEST_LEN, BIND_COMMON_LEN, CALL_ME_MAYBE_PACKET_BASE, CHALLENGE_LEN, EP_LEN, HEADER_LEN, KEY_LEN, MAGIC,
    MAGIC_LEN, MESSAGE_HEADER_LEN, NONCE_LEN, PING_LEN, PING_PACKET_SIZE, PONG_LEN, PONG_PACKET_SIZE,
    RELAY_ENDPOINT_FIXED_LEN, TAG_LEN, TXID_LEN, VERSION, WRAPPER_MIN_LEN, WRAPPER_OVERHEAD, _ZERO_KEY, MsgType,
    Wrapper, _decode_endpoints, _encode_endpoints, _header, _plural, decode_wrapper, looks_like_disco,
)
# isort: on
# fmt: on
from toolkit.errors import BadValueError, DecodeError, TruncatedError, UnknownTypeError
from toolkit.types import Endpoint, NodePublicKey, TxID

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


# fmt: off
__all__ = [
    "ALLOC_REQUEST_LEN", "BIND_COMMON_LEN", "CALL_ME_MAYBE_PACKET_BASE", "CHALLENGE_LEN", "EP_LEN", "HEADER_LEN",
    "KEY_LEN", "MAGIC", "MAGIC_LEN", "MESSAGE_HEADER_LEN", "NONCE_LEN", "PING_LEN", "PING_PACKET_SIZE", "PONG_LEN",
    "PONG_PACKET_SIZE", "RELAY_ENDPOINT_FIXED_LEN", "TAG_LEN", "TXID_LEN", "VERSION", "WRAPPER_MIN_LEN",
    "WRAPPER_OVERHEAD", "AllocateUDPRelayEndpointRequest", "AllocateUDPRelayEndpointResponse", "BindUDPRelayEndpoint",
    "BindUDPRelayEndpointAnswer", "BindUDPRelayEndpointChallenge", "CallMeMaybe", "CallMeMaybeVia", "Message",
    "MsgType", "Ping", "Pong", "Wrapper", "decode_message", "decode_wrapper", "looks_like_disco",
]
# fmt: on
