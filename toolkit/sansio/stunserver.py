"""The sans-IO STUN server: every answer natkit's STUN server gives, decided without sockets or clocks.

Follows RFC 8489 §6.3 (basic checks; other methods → 400; unknown comprehension-required attributes
→ 420 with UNKNOWN-ATTRIBUTES), §6.2.2 (TCP framing), §14.7 (FINGERPRINT), RFC 5780 §6.1 and §7
(behaviour discovery), RFC 5389 §12.2 / RFC 3489 §11 (classic clients) and Tailscale's server
(protocols.md §3.2). The asyncio driver (:mod:`toolkit.services.stunserver`) and the simulator feed
messages to :meth:`StunServerCore.handle` (TCP through :meth:`StunServerCore.open_stream`) and send
the :class:`Reply` values it returns. Decisions:

* Tailscale's ``tailnode`` request (SOFTWARE "tailnode", FINGERPRINT last and valid) gets exactly
  derper's reply, ``01 01 ‖ len ‖ cookie ‖ TxID ‖ XOR-MAPPED-ADDRESS``, in both modes, whatever else
  the request carries (Tailscale ignores it too).
* Basic mode (no ``alternate``): the answer leaves from the socket the request arrived on (``local``;
  one core can serve several independent sockets). CHANGE-REQUEST gets 420 listing it (RFC 5780 §6:
  a server without an alternate address and port "MUST respond with a 420").
* RFC 5780 mode (``primary`` A:P, ``alternate`` B:Q; the server owns A:P, A:Q, B:P, B:Q): success
  responses carry MAPPED-ADDRESS and XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS (§6.1),
  error responses RESPONSE-ORIGIN and OTHER-ADDRESS too; CHANGE-REQUEST picks the sending socket by
  §6.1 Table 1. Over TCP a reply can only go back on the connection: CHANGE-REQUEST and RESPONSE-PORT
  get 420 there.
* RESPONSE-PORT (UDP, both modes): the reply goes to the request's source IP at that port (§7.5); port
  0, or RESPONSE-PORT with PADDING (§6.1), gets 400. PADDING in a request puts ``padding_size`` bytes
  of PADDING (default 1500, a typical MTU; rounded up to 4) in the reply (§7.6).
* Classic RFC 3489 requests (bytes 4..8 are not the cookie; the 16-byte transaction id is echoed):
  MAPPED-ADDRESS and SOURCE-ADDRESS, plus CHANGED-ADDRESS in RFC 5780 mode; no XOR attributes,
  SOFTWARE or FINGERPRINT. RESPONSE-ADDRESS (a reflection tool RFC 5389 removed) gets 420. The codec
  reads and writes them (:func:`toolkit.codec.stun.decode_classic`, :func:`~toolkit.codec.stun.encode_classic`).
* FINGERPRINT goes into a response when the request had one; SOFTWARE (``software``) into every
  non-classic, non-Tailscale response. USERNAME, MESSAGE-INTEGRITY(-SHA256), USERHASH, REALM, NONCE,
  PRIORITY and USE-CANDIDATE are understood and ignored: no authentication here (RFC 8489 §9: the
  usage decides; a public STUN server uses none). Attributes after MESSAGE-INTEGRITY are ignored (§14.5).
* Over TCP a connection idle for ``Timing.stun_tcp_idle_timeout`` (40 s) is closed (:class:`StunStream`).
* A request whose framing is fine but an attribute value is not gets 400. Anything else that is not a
  well-formed request is dropped, counted as ``dropped:<reason>`` (:data:`DROP_REASONS`) and traced,
  never raised: indications (Binding keepalives), responses, bad FINGERPRINT, garbage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from toolkit.codec import stun

# fmt: off
# isort: off
from toolkit.codec.stun import (
    HEADER_LEN, MAGIC_COOKIE, AttrType, ChangedAddress, ChangeRequest, Class, ErrorCode, MappedAddress,
    Message, MessageIntegrity, MessageIntegritySha256, Method, OtherAddress, Padding, ResponseOrigin, ResponsePort,
    Software, SourceAddress, StunAttribute, UnknownAttributes, XorMappedAddress,
)
# isort: on
# fmt: on
from toolkit.errors import DecodeError, UsageError
from toolkit.sansio.stunstream import StunStream
from toolkit.sansio.trace import TraceKind, Tracer, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID

Transport = Literal["udp", "tcp"]
Mode = Literal["basic", "rfc5780"]
_A = TypeVar("_A", bound=StunAttribute)

COOKIE = MAGIC_COOKIE.to_bytes(4, "big")
DEFAULT_PADDING = 1500  # RFC 5780 §7.6: "a length of PADDING equal to the MTU on the outgoing interface"

# Why a message got no answer: shorter than a header or than its header says; longer than that (UDP);
# top two type bits set; length not a multiple of 4 or an attribute overrunning; other framing errors;
# FINGERPRINT wrong or not last (RFC 8489 §14.7); indications (§6.3.2) and responses; RFC 5780 mode: an
# address that is not one of the four; a TCP stream that does not frame as STUN (the connection is closed).
# fmt: off
DROP_REASONS = (
    "truncated", "trailing-bytes", "not-stun", "bad-length", "malformed", "bad-fingerprint", "indication", "response",
    "unknown-local", "tcp-garbage",
)
# fmt: on

# Comprehension-required attributes (RFC 8489 §14: < 0x8000) a Binding request may carry here.
# fmt: off
_IGNORED = frozenset({
    AttrType.USERNAME, AttrType.MESSAGE_INTEGRITY, AttrType.MESSAGE_INTEGRITY_SHA256, AttrType.USERHASH, AttrType.REALM,
    AttrType.NONCE, AttrType.PRIORITY, AttrType.USE_CANDIDATE, AttrType.PADDING,
})
# fmt: on


@dataclass(frozen=True, slots=True)
class Reply:
    """A datagram to send: ``data`` from the server's own socket ``from_local`` to ``to``.
    Over TCP the driver writes ``data`` on the connection the request came in on."""

    data: bytes
    from_local: Endpoint
    to: Endpoint


def rfc5780_pair(listen: Sequence[Endpoint]) -> tuple[Endpoint, Endpoint] | None:
    """The (A:P, B:Q) pair when ``listen`` asks for RFC 5780 mode: exactly two concrete addresses of
    one family with different IPs and different non-zero ports. None means independent basic servers."""
    if len(listen) != 2:
        return None
    a, b = listen
    if a.family != b.family or a.ip == b.ip or a.port == b.port or 0 in (a.port, b.port):
        return None
    if a.ip.is_unspecified or b.ip.is_unspecified:
        return None
    return a, b


class StunServerCore:
    """One STUN server: basic, or RFC 5780 behaviour discovery with ``alternate``. See the module doc."""

    def __init__(
        self,
        primary: Endpoint,
        alternate: Endpoint | None = None,
        *,
        software: str = "natkit",
        tracer: Tracer | None = None,
        padding_size: int = DEFAULT_PADDING,
        timing: Timing = DEFAULT,
        name: str | None = None,
    ) -> None:
        if alternate is not None and rfc5780_pair((primary, alternate)) is None:
            msg = "two concrete addresses of one family, different IPs and different non-zero ports"
            raise UsageError(f"RFC 5780 mode needs {msg}, got {primary} and {alternate}")
        self.primary = primary
        self.alternate = alternate
        self.software = software
        self.tracer = tracer
        self.padding_size = max(0, padding_size + (-padding_size % 4))
        self.timing = timing
        self.name = name or f"stun-server {primary}"
        self.counters: Counter[str] = Counter()

    @property
    def mode(self) -> Mode:
        return "basic" if self.alternate is None else "rfc5780"

    @property
    def local_endpoints(self) -> tuple[Endpoint, ...]:
        """The sockets this server answers from: A:P, A:Q, B:P, B:Q in RFC 5780 mode."""
        if self.alternate is None:
            return (self.primary,)
        a, b = self.primary, self.alternate
        return (a, Endpoint(a.ip, b.port), Endpoint(b.ip, a.port), b)

    def other_address(self, local: Endpoint) -> Endpoint | None:
        """Ca:Cp for a request that arrived on ``local`` (RFC 5780 §6.1), None if not ours / basic."""
        a, b = self.primary, self.alternate
        if b is None or local.ip not in (a.ip, b.ip) or local.port not in (a.port, b.port):
            return None
        return Endpoint(b.ip if local.ip == a.ip else a.ip, b.port if local.port == a.port else a.port)

    # --- input ---------------------------------------------------------------------------------

    def handle(
        self, data: bytes, src: Endpoint, local: Endpoint, transport: Transport = "udp", now: float = 0.0
    ) -> list[Reply]:
        """One message from ``src`` received on the server's socket ``local``: the replies to send."""
        data = bytes(data)
        if self.tracer is not None:
            self._trace(now, "received", f"{transport} {len(data)} bytes on {local}", src, data)
        if len(data) < HEADER_LEN:
            return self._drop(now, src, data, "truncated")
        if data[0] & 0xC0:
            return self._drop(now, src, data, "not-stun")
        declared = HEADER_LEN + int.from_bytes(data[2:4], "big")
        if declared != len(data):
            return self._drop(now, src, data, "truncated" if declared > len(data) else "trailing-bytes")
        classic = data[4:8] != COOKIE
        wire = data[:4] + COOKIE + data[8:] if classic else data
        try:
            fp_ok = stun.verify_fingerprint(wire)  # walks the header and the TLVs: raises on framing errors
        except DecodeError as exc:
            return self._drop(now, src, data, exc.reason if exc.reason in DROP_REASONS else "malformed")
        if not classic and fp_ok is False:
            return self._drop(now, src, data, "bad-fingerprint")
        cls, method = stun.decode_type(int.from_bytes(data[:2], "big"))  # the top two bits are zero here
        if cls != Class.REQUEST:
            return self._drop(now, src, data, "indication" if cls == Class.INDICATION else "response")
        other = self.other_address(local)
        if self.alternate is not None and other is None:
            return self._drop(now, src, data, "unknown-local")
        had_fp = not classic and fp_ok is True
        ctx = _Ctx(data[4:20] if classic else b"", TxID(data[8:20]), method, src, local, other, had_fp)
        try:
            msg = stun.decode(wire)
        except DecodeError as exc:  # the framing is fine, an attribute value is not
            return self._error(now, ctx, 400, f"Bad Request: {exc.reason} attribute")
        if not classic and msg.method == Method.BINDING and msg.software == "tailnode" and had_fp:
            # protocols.md §3.2: exactly Tailscale's reply, nothing but XOR-MAPPED-ADDRESS
            self.counters["tailnode"] += 1
            return self._answer(now, stun.binding_response(msg.txid, src), local, src)
        if msg.method != Method.BINDING:
            return self._error(now, ctx, 400, "Bad Request: this server answers Binding only")
        return self._binding(now, ctx, msg, transport)

    def open_stream(self, src: Endpoint, local: Endpoint, now: float = 0.0) -> StunStream:
        """A TCP connection from ``src`` accepted on ``local`` (RFC 8489 §6.2.2)."""
        self.counters["tcp-connections"] += 1
        return StunStream(self, src, local, now)

    # --- decisions -----------------------------------------------------------------------------

    def _binding(self, now: float, ctx: _Ctx, msg: Message, transport: Transport) -> list[Reply]:
        attrs = _before_integrity(msg.attributes)
        understood = set(_IGNORED)
        if transport == "udp":
            understood.add(AttrType.RESPONSE_PORT)
            if self.alternate is not None:
                understood.add(AttrType.CHANGE_REQUEST)
        unknown: list[int] = []
        for a in attrs:
            t = a.attr_type
            if t < 0x8000 and t not in understood and t not in unknown:
                unknown.append(t)
        if unknown:
            return self._error(now, ctx, 420, "Unknown Attribute", tuple(unknown))
        change = _first(attrs, ChangeRequest)
        rport = _first(attrs, ResponsePort)
        pad = _first(attrs, Padding)
        if rport is not None and pad is not None:
            return self._error(now, ctx, 400, "Bad Request: PADDING with RESPONSE-PORT (RFC 5780 section 6.1)")
        if rport is not None and rport.port == 0:
            return self._error(now, ctx, 400, "Bad Request: RESPONSE-PORT 0")
        origin = ctx.local
        if ctx.other is not None and change is not None:  # RFC 5780 §6.1 Table 1
            origin = Endpoint(
                ctx.other.ip if change.change_ip else ctx.local.ip,
                ctx.other.port if change.change_port else ctx.local.port,
            )
        to = ctx.src if rport is None else Endpoint(ctx.src.ip, rport.port)
        out: list[StunAttribute]
        if ctx.txid16:  # RFC 3489 §11.2: MAPPED-ADDRESS, SOURCE-ADDRESS, CHANGED-ADDRESS
            out = [MappedAddress(ctx.src), SourceAddress(origin)]
            if ctx.other is not None:
                out.append(ChangedAddress(ctx.other))
            self.counters["classic"] += 1
            data = stun.encode_classic(Message(Class.SUCCESS, Method.BINDING, ctx.txid, tuple(out)), ctx.txid16)
            return self._answer(now, data, origin, to)
        out = [XorMappedAddress(ctx.src)]
        if ctx.other is not None:
            out += [MappedAddress(ctx.src), ResponseOrigin(origin), OtherAddress(ctx.other)]
        if pad is not None and self.padding_size:
            out.append(Padding.zeros(self.padding_size))
        if self.software:
            out.append(Software(self.software))
        if change is not None or rport is not None:
            self.counters["probes"] += 1
        data = Message(Class.SUCCESS, Method.BINDING, ctx.txid, tuple(out)).encode(fingerprint=ctx.had_fp)
        return self._answer(now, data, origin, to)

    # --- output --------------------------------------------------------------------------------

    def _error(self, now: float, ctx: _Ctx, code: int, reason: str, unknown: tuple[int, ...] = ()) -> list[Reply]:
        """An error response (RFC 8489 §6.3.4) from the socket the request came in on."""
        self.counters["error_responses"] += 1
        self.counters[f"error:{code}"] += 1
        attrs: list[StunAttribute] = []
        if ctx.txid16:
            # RFC 3489 §11.2.9, §11.2.10: reason padded to 4 bytes, an even number of unknown types
            attrs.append(ErrorCode(code, reason + " " * (-len(reason) % 4)))
            if unknown:
                attrs.append(UnknownAttributes(unknown + unknown[-1:] * (len(unknown) % 2)))
            data = stun.encode_classic(Message(Class.ERROR, ctx.method, ctx.txid, tuple(attrs)), ctx.txid16)
            return self._send(now, data, ctx.local, ctx.src)
        attrs.append(ErrorCode(code, reason))
        if unknown:
            attrs.append(UnknownAttributes(unknown))
        if ctx.other is not None:
            attrs += [ResponseOrigin(ctx.local), OtherAddress(ctx.other)]
        if self.software:
            attrs.append(Software(self.software))
        data = Message(Class.ERROR, ctx.method, ctx.txid, tuple(attrs)).encode(fingerprint=ctx.had_fp)
        return self._send(now, data, ctx.local, ctx.src)

    def _answer(self, now: float, data: bytes, origin: Endpoint, to: Endpoint) -> list[Reply]:
        self.counters["answered"] += 1
        return self._send(now, data, origin, to)

    def _send(self, now: float, data: bytes, origin: Endpoint, to: Endpoint) -> list[Reply]:
        if self.tracer is not None:
            try:
                detail = stun.decode(data).summary()
            except DecodeError:
                detail = f"STUN (RFC 3489) {stun.decode_classic(data)[1].summary()[5:]}"
            self._trace(now, "sent", f"{detail} from {origin}", to, data)
        return [Reply(data, origin, to)]

    def _drop(self, now: float, src: Endpoint, data: bytes, reason: str) -> list[Reply]:
        self.counters[f"dropped:{reason}"] += 1
        if self.tracer is not None:
            self._trace(now, "dropped", f"{len(data)} bytes dropped", src, data, reason)
        return []

    def _trace(
        self, now: float, kind: TraceKind, detail: str, ep: Endpoint, raw: bytes, reason: str | None = None
    ) -> None:
        assert self.tracer is not None
        self.tracer(TraceRecord(now, self.name, None, kind, detail, reason, raw, ep))

    def summary(self) -> str:
        """``answered 40 (tailnode 12, classic 3), errors 1, dropped 2 (bad-fingerprint 1, not-stun 1)``."""
        c = self.counters
        kinds = ", ".join(f"{k} {c[k]}" for k in ("tailnode", "classic", "probes") if c[k])
        drops = sorted((k.removeprefix("dropped:"), n) for k, n in c.items() if k.startswith("dropped:"))
        text = f"answered {c['answered']}" + (f" ({kinds})" if kinds else "")
        text += f", errors {c['error_responses']}, dropped {sum(n for _, n in drops)}"
        if drops:
            text += " (" + ", ".join(f"{r} {n}" for r, n in drops) + ")"
        if c["tcp-connections"]:
            text += f", tcp connections {c['tcp-connections']}"
        return text


@dataclass(frozen=True, slots=True)
class _Ctx:
    """What an answer to one request needs. ``txid16`` is the classic 16-byte id (empty otherwise)."""

    txid16: bytes
    txid: TxID
    method: int
    src: Endpoint
    local: Endpoint
    other: Endpoint | None
    had_fp: bool


def _before_integrity(attrs: tuple[StunAttribute, ...]) -> tuple[StunAttribute, ...]:
    """RFC 8489 §14.5: attributes after MESSAGE-INTEGRITY(-SHA256) are ignored (FINGERPRINT aside)."""
    for i, a in enumerate(attrs):
        if isinstance(a, MessageIntegrity | MessageIntegritySha256):
            return attrs[: i + 1]
    return attrs


def _first(attrs: tuple[StunAttribute, ...], cls: type[_A]) -> _A | None:
    for a in attrs:
        if type(a) is cls:
            return a
    return None


# fmt: off
__all__ = [
    "COOKIE", "DEFAULT_PADDING", "DROP_REASONS", "Mode", "Reply", "StunServerCore", "StunStream", "Transport",
    "rfc5780_pair",
]
# fmt: on
