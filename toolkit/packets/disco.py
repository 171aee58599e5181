"""scapy layers for disco: the sealed outer wrapper, the inner messages, and Geneve for peer relays.

Follows protocols.md §1.1 (wrapper: magic, sender disco key, nonce, NaCl box), §1.2 (plaintext
``type ‖ version ‖ payload`` for the nine message types) and §1.5 (the 8-byte Geneve header),
using the constants of :mod:`toolkit.codec.disco` and :mod:`toolkit.codec.geneve`; summaries are
the codec's own (design.md §2: packets is a view over the codecs).

The box can only be opened with a key (:mod:`toolkit.packets.keyring`). When it opens, the
plaintext is dissected with :class:`DiscoMessage` and attached as the payload of :class:`Disco`:
``show()`` then prints the decrypted message under the wrapper. That payload is *inside* the box,
so it is not part of the wrapper's bytes: ``bytes(pkt)`` stays the wire. To seal a message you
built as a layer, use :func:`toolkit.packets.crafter.disco_bytes`.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

from scapy.config import conf
from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    Field,
    IntField,
    LongField,
    PacketListField,
    ShortField,
    ThreeBytesField,
    XByteField,
    XShortEnumField,
    XStrField,
    XStrFixedLenField,
)
from scapy.packet import Packet

from toolkit.codec import disco as codec
from toolkit.codec import geneve as geneve_codec
from toolkit.errors import DecodeError
from toolkit.types import DiscoPublicKey

MSG_NAMES = {int(t): "".join(w.capitalize() for w in t.name.split("_")) for t in codec.MsgType}
_ZERO_KEY = bytes(codec.KEY_LEN)


class IP16Field(Field[str, bytes]):
    """A 16-byte address as disco and DERP write it: IPv4 as v4-mapped IPv6 (protocols.md §1.2).

    Shown unmapped (``1.2.3.4``), settable as ``"1.2.3.4"`` or ``"2001:db8::1"``.
    """

    def __init__(self, name: str, default: str | None) -> None:
        super().__init__(name, default, "16s")

    def i2m(self, pkt: Packet | None, x: Any) -> bytes:
        if x is None:
            return bytes(16)
        if isinstance(x, bytes):
            return x
        ip = ipaddress.ip_address(str(x))
        return b"\x00" * 10 + b"\xff\xff" + ip.packed if ip.version == 4 else ip.packed

    def m2i(self, pkt: Packet | None, x: bytes) -> str:
        ip = ipaddress.IPv6Address(bytes(x))
        return str(ip.ipv4_mapped or ip)

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        return self.m2i(pkt, x) if isinstance(x, bytes) and len(x) == 16 else x

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return str(x)


class _NodeKeyField(XStrFixedLenField):
    """Ping's optional NodeKey: present when 32 non-zero bytes follow the TxID (protocols.md §1.2,
    with the codec's rule that an all-zero key counts as padding)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, None, codec.KEY_LEN)

    def getfield(self, pkt: Packet, s: bytes) -> tuple[bytes, bytes | None]:  # type: ignore[override]
        if len(s) >= codec.KEY_LEN and s[: codec.KEY_LEN] != _ZERO_KEY:
            return s[codec.KEY_LEN :], s[: codec.KEY_LEN]
        return s, None

    def addfield(self, pkt: Packet, s: bytes, val: Any) -> bytes:
        return s if val is None else s + bytes(val)


class Disco(Packet):
    """The outer wrapper (protocols.md §1.1): ``TS💬`` ‖ sender disco key ‖ nonce ‖ box (tag ‖ ciphertext)."""

    name = "disco"
    fields_desc: ClassVar[list[Any]] = [
        XStrFixedLenField("magic", codec.MAGIC, codec.MAGIC_LEN),
        XStrFixedLenField("sender", _ZERO_KEY, codec.KEY_LEN),
        XStrFixedLenField("nonce", bytes(codec.NONCE_LEN), codec.NONCE_LEN),
        XStrField("box", bytes(codec.TAG_LEN)),
    ]

    def do_build_payload(self) -> bytes:
        if isinstance(self.payload, DiscoMessage):
            return b""  # an opened message is inside the box, not after it
        return bytes(super().do_build_payload())

    @property
    def sender_key(self) -> DiscoPublicKey:
        return DiscoPublicKey(bytes(self.sender))

    def attach_plaintext(self, plaintext: bytes) -> Packet:
        """Show an opened box: dissect ``plaintext`` as the payload of this wrapper."""
        short = len(plaintext) < codec.MESSAGE_HEADER_LEN  # not even type and version: raw
        inner = conf.raw_layer(plaintext) if short else DiscoMessage(plaintext)
        self.remove_payload()
        self.add_payload(inner)
        return inner

    def mysummary(self) -> str:
        try:
            return codec.decode_wrapper(bytes(self)).summary()
        except DecodeError as exc:
            return f"disco (malformed: {exc.reason}: {exc})"


class DiscoEndpoint(Packet):
    """One 18-byte endpoint: IP16 ‖ port (protocols.md §1.2)."""

    name = "disco endpoint"
    fields_desc: ClassVar[list[Any]] = [IP16Field("ip", "::"), ShortField("port", 0)]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def mysummary(self) -> str:
        ip = str(self.ip)
        return f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}"


def _hdr(msg_type: int) -> list[Any]:
    return [ByteEnumField("type", msg_type, MSG_NAMES), ByteField("version", codec.VERSION)]


class DiscoMessage(Packet):
    """A box's plaintext ``type ‖ version ‖ payload`` (protocols.md §1.2); this base keeps an
    unknown type's payload raw in ``data``. Dissecting with it picks the class of the type byte."""

    name = "disco message"
    fields_desc: ClassVar[list[Any]] = [*_hdr(0), XStrField("data", b"")]
    registry: ClassVar[dict[int, type[DiscoMessage]]] = {}

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if cls is DiscoMessage and _pkt:
            found = DiscoMessage.registry.get(_pkt[0], DiscoMessage)
            # too short for the type's fixed fields: shown raw, the summary says what is missing
            return found if len(_pkt) >= _MIN_LEN.get(found, 0) else DiscoMessage
        return cls

    def to_codec(self) -> codec.Message:
        return codec.decode_message(bytes(self))

    def mysummary(self) -> str:
        try:
            text = self.to_codec().summary()
        except DecodeError as exc:
            text = f"disco {MSG_NAMES.get(self.type, hex(self.type))} (malformed: {exc.reason}: {exc})"
        if isinstance(self.underlayer, Disco):
            text += f" from {DiscoPublicKey(bytes(self.underlayer.sender)).short()}"
        return text


class DiscoPing(DiscoMessage):
    name = "disco Ping"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.PING),
        XStrFixedLenField("txid", bytes(codec.TXID_LEN), codec.TXID_LEN),
        _NodeKeyField("node_key"),
        XStrField("padding", b""),
    ]


class DiscoPong(DiscoMessage):
    name = "disco Pong"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.PONG),
        XStrFixedLenField("txid", bytes(codec.TXID_LEN), codec.TXID_LEN),
        IP16Field("src", "::"),
        ShortField("port", 0),
    ]


class DiscoCallMeMaybe(DiscoMessage):
    name = "disco CallMeMaybe"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.CALL_ME_MAYBE),
        PacketListField("endpoints", [], DiscoEndpoint),
    ]


def _bind_fields(msg_type: int) -> list[Any]:
    return [
        *_hdr(msg_type),
        IntField("vni", 0),
        IntField("generation", 0),
        XStrFixedLenField("remote_key", _ZERO_KEY, codec.KEY_LEN),
        XStrFixedLenField("challenge", bytes(codec.CHALLENGE_LEN), codec.CHALLENGE_LEN),
    ]


class DiscoBindUDPRelayEndpoint(DiscoMessage):
    name = "disco BindUDPRelayEndpoint"
    fields_desc: ClassVar[list[Any]] = _bind_fields(codec.MsgType.BIND_UDP_RELAY_ENDPOINT)


class DiscoBindUDPRelayEndpointChallenge(DiscoMessage):
    name = "disco BindUDPRelayEndpointChallenge"
    fields_desc: ClassVar[list[Any]] = _bind_fields(codec.MsgType.BIND_UDP_RELAY_ENDPOINT_CHALLENGE)


class DiscoBindUDPRelayEndpointAnswer(DiscoMessage):
    name = "disco BindUDPRelayEndpointAnswer"
    fields_desc: ClassVar[list[Any]] = _bind_fields(codec.MsgType.BIND_UDP_RELAY_ENDPOINT_ANSWER)


def _relay_body() -> list[Any]:
    return [
        XStrFixedLenField("server_disco", _ZERO_KEY, codec.KEY_LEN),
        XStrFixedLenField("client_disco_a", _ZERO_KEY, codec.KEY_LEN),
        XStrFixedLenField("client_disco_b", _ZERO_KEY, codec.KEY_LEN),
        LongField("lamport_id", 0),
        IntField("vni", 0),
        LongField("bind_lifetime_ns", 0),
        LongField("steady_state_lifetime_ns", 0),
        PacketListField("endpoints", [], DiscoEndpoint),
    ]


class DiscoCallMeMaybeVia(DiscoMessage):
    name = "disco CallMeMaybeVia"
    fields_desc: ClassVar[list[Any]] = [*_hdr(codec.MsgType.CALL_ME_MAYBE_VIA), *_relay_body()]


class DiscoAllocateUDPRelayEndpointRequest(DiscoMessage):
    name = "disco AllocateUDPRelayEndpointRequest"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_REQUEST),
        XStrFixedLenField("client_disco_a", _ZERO_KEY, codec.KEY_LEN),
        XStrFixedLenField("client_disco_b", _ZERO_KEY, codec.KEY_LEN),
        IntField("generation", 0),
    ]


class DiscoAllocateUDPRelayEndpointResponse(DiscoMessage):
    name = "disco AllocateUDPRelayEndpointResponse"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.ALLOCATE_UDP_RELAY_ENDPOINT_RESPONSE),
        IntField("generation", 0),
        *_relay_body(),
    ]


for _cls in (
    DiscoPing,
    DiscoPong,
    DiscoCallMeMaybe,
    DiscoBindUDPRelayEndpoint,
    DiscoBindUDPRelayEndpointChallenge,
    DiscoBindUDPRelayEndpointAnswer,
    DiscoCallMeMaybeVia,
    DiscoAllocateUDPRelayEndpointRequest,
    DiscoAllocateUDPRelayEndpointResponse,
):
    DiscoMessage.registry[_cls().type] = _cls
_MIN_LEN = {c: len(c()) for c in DiscoMessage.registry.values()}


class TSGeneve(Packet):
    """Geneve as Tailscale's peer relays use it (protocols.md §1.5, RFC 8926 §3.4), no options.

    Named ``TSGeneve`` so it does not clash with scapy's contrib ``GENEVE``. The payload is
    disco or WireGuard by the protocol field; disco without its magic is WireGuard (§4.11).
    """

    name = "Geneve (Tailscale)"
    fields_desc: ClassVar[list[Any]] = [
        BitField("version", 0, 2),
        BitField("opt_len", 0, 6),
        BitField("control", 0, 1),
        BitField("critical", 0, 1),
        BitField("reserved1", 0, 6),
        XShortEnumField(
            "protocol",
            geneve_codec.PROTO_DISCO,
            {geneve_codec.PROTO_DISCO: "disco", geneve_codec.PROTO_WIREGUARD: "WireGuard"},
        ),
        ThreeBytesField("vni", 0),
        XByteField("reserved2", 0),
    ]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        from toolkit.packets.wireguard import WireGuard

        if self.protocol == geneve_codec.PROTO_DISCO and payload[: codec.MAGIC_LEN] == codec.MAGIC:
            return Disco
        if self.protocol in (geneve_codec.PROTO_DISCO, geneve_codec.PROTO_WIREGUARD):
            return WireGuard
        return super().guess_payload_class(payload)

    def mysummary(self) -> str:
        raw = bytes(self)[: geneve_codec.HEADER_LEN]
        try:
            return geneve_codec.decode(raw).summary()
        except DecodeError as exc:
            return f"Geneve (malformed: {exc.reason}: {exc})"


def endpoints_of(pkt: Packet) -> list[str]:
    """The endpoints of a CallMeMaybe(-Via) layer as ``ip:port`` strings."""
    return [ep.mysummary() for ep in pkt.endpoints]


__all__ = [
    "MSG_NAMES",
    "Disco",
    "DiscoAllocateUDPRelayEndpointRequest",
    "DiscoAllocateUDPRelayEndpointResponse",
    "DiscoBindUDPRelayEndpoint",
    "DiscoBindUDPRelayEndpointAnswer",
    "DiscoBindUDPRelayEndpointChallenge",
    "DiscoCallMeMaybe",
    "DiscoCallMeMaybeVia",
    "DiscoEndpoint",
    "DiscoMessage",
    "DiscoPing",
    "DiscoPong",
    "IP16Field",
    "TSGeneve",
    "endpoints_of",
]
