"""Value types shared by every layer: endpoints, keys and transaction ids.

Keys, endpoints and transaction ids are types, not bare bytes or tuples (design.md §6).
Key text forms follow Tailscale (``nodekey:<64 hex>``, ``discokey:<64 hex>``, protocols.md §1.1)
and WireGuard (44-character base64, as ``wg`` prints them); :meth:`Key32.parse` accepts all three.
This module is stdlib-only; generating keys and deriving public keys lives in ``toolkit.crypto``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from toolkit.errors import BadValueError, UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_K = TypeVar("_K", bound="Key32")


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """An IP address and a UDP/TCP port (Go's ``netip.AddrPort``).

    IPv4-mapped IPv6 addresses are unmapped on construction, so ``::ffff:1.2.3.4:5``
    and ``1.2.3.4:5`` are the same endpoint (protocols.md §1.2, §3.3).
    """

    ip: IPAddress
    port: int

    def __post_init__(self) -> None:
        ip = self.ip
        if isinstance(ip, str):
            ip = ipaddress.ip_address(ip)
            object.__setattr__(self, "ip", ip)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            object.__setattr__(self, "ip", ip.ipv4_mapped)
        if not isinstance(self.port, int) or not 0 <= self.port <= 0xFFFF:
            raise BadValueError(f"port {self.port!r} is not in 0..65535")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``1.2.3.4:567`` or ``[2001:db8::1]:789``. Raises :class:`UsageError`."""
        text = text.strip()
        try:
            if text.startswith("["):
                host, _, port = text[1:].partition("]:")
                if not port:
                    raise ValueError("missing ]:port")
            else:
                host, sep, port = text.rpartition(":")
                if not sep or ":" in host:
                    raise ValueError("missing :port")
            return cls(ipaddress.ip_address(host), int(port))
        except (ValueError, BadValueError) as exc:
            raise UsageError(
                f"{text!r} is not an endpoint: write IPv4 as 1.2.3.4:567 and IPv6 as [2001:db8::1]:789 ({exc})"
            ) from None

    @classmethod
    def from_packed16(cls, ip16: bytes, port: int) -> Endpoint:
        """Decode the 16-byte address form used by disco and DERP (v4 as ``::ffff:a.b.c.d``)."""
        return cls(ipaddress.IPv6Address(bytes(ip16)), port)

    def packed16(self) -> bytes:
        """The 16-byte form: IPv6 as is, IPv4 as a v4-mapped IPv6 address (protocols.md §1.2)."""
        if isinstance(self.ip, ipaddress.IPv4Address):
            return b"\x00" * 10 + b"\xff\xff" + self.ip.packed
        return self.ip.packed

    @property
    def is_ipv6(self) -> bool:
        return self.ip.version == 6

    @property
    def family(self) -> int:
        return self.ip.version

    def as_tuple(self) -> tuple[str, int]:
        """The ``(host, port)`` form sockets take."""
        return (str(self.ip), self.port)

    def __str__(self) -> str:
        if self.ip.version == 6:
            return f"[{self.ip}]:{self.port}"
        return f"{self.ip}:{self.port}"

    def __repr__(self) -> str:
        return f"Endpoint({str(self)!r})"


class Key32:
    """32 bytes of key material with text forms. Subclasses name the key's role.

    ``str(key)`` is the prefixed hex form (``discokey:ab12...``); :meth:`b64` is the
    WireGuard base64 form; :meth:`parse` takes either, or bare hex.
    """

    __slots__ = ("raw",)
    prefix: ClassVar[str] = "key:"
    is_private: ClassVar[bool] = False
    raw: bytes

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != 32:
            raise BadValueError(f"{type(self).__name__} needs 32 bytes, got {len(raw)}")
        object.__setattr__(self, "raw", raw)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    @classmethod
    def parse(cls: type[_K], text: str) -> _K:
        """Parse prefixed hex, bare hex (64 chars) or base64 (44 chars). Raises :class:`UsageError`."""
        t = text.strip()
        if ":" in t:
            prefix, _, rest = t.partition(":")
            if prefix + ":" != cls.prefix:
                raise UsageError(f"{text!r}: expected a {cls.prefix!r} key, got prefix {prefix + ':'!r}")
            t = rest
        try:
            if len(t) == 64:
                return cls(bytes.fromhex(t))
            if len(t) == 44:
                return cls(base64.b64decode(t, validate=True))
        except (ValueError, binascii.Error):
            pass
        raise UsageError(
            f"{text!r} is not a 32-byte key: give 64 hex digits (optionally prefixed {cls.prefix!r}) "
            "or 44 base64 characters"
        )

    def hex(self) -> str:
        return self.raw.hex()

    def b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def short(self) -> str:
        """A short form for summaries: ``[disco:abcd1234..]``-style, 8 hex digits."""
        return f"{self.prefix}{self.raw.hex()[:8]}.."

    def __bytes__(self) -> bytes:
        return self.raw

    def __str__(self) -> str:
        if self.is_private:
            return f"{self.prefix}<hidden>"
        return f"{self.prefix}{self.raw.hex()}"

    def __repr__(self) -> str:
        if self.is_private:
            return f"{type(self).__name__}(<hidden>)"
        return f"{type(self).__name__}({self.short()})"

    def text(self) -> str:
        """The prefixed hex form, also for private keys (for key files the user asked for)."""
        return f"{self.prefix}{self.raw.hex()}"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.raw))

    def __lt__(self, other: Key32) -> bool:
        return self.raw < other.raw


class NodePublicKey(Key32):
    """A node's WireGuard/Curve25519 public key (also a DERP client or server key)."""

    __slots__ = ()
    prefix = "nodekey:"


class NodePrivateKey(Key32):
    """A node's WireGuard/Curve25519 private key."""

    __slots__ = ()
    prefix = "privkey:"
    is_private = True


class DiscoPublicKey(Key32):
    """A disco public key, sent in clear in every disco wrapper (protocols.md §1.1)."""

    __slots__ = ()
    prefix = "discokey:"


class DiscoPrivateKey(Key32):
    """A disco private key; regenerated at every node start."""

    __slots__ = ()
    prefix = "discoprivkey:"
    is_private = True


@dataclass(frozen=True, slots=True)
class TxID:
    """A 12-byte transaction id, shared by STUN (RFC 8489 §5) and disco Ping/Pong (protocols.md §1.2)."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes):
            object.__setattr__(self, "raw", bytes(self.raw))
        if len(self.raw) != 12:
            raise BadValueError(f"a transaction id has 12 bytes, got {len(self.raw)}")

    @classmethod
    def parse(cls, text: str) -> TxID:
        try:
            return cls(bytes.fromhex(text))
        except (ValueError, BadValueError):
            raise UsageError(f"{text!r} is not a transaction id: give 24 hex digits") from None

    def hex(self) -> str:
        return self.raw.hex()

    def short(self) -> str:
        return self.raw.hex()[:4] + ".."

    def __bytes__(self) -> bytes:
        return self.raw

    def __str__(self) -> str:
        return self.raw.hex()


__all__ = [
    "IPAddress",
    "Endpoint",
    "Key32",
    "NodePublicKey",
    "NodePrivateKey",
    "DiscoPublicKey",
    "DiscoPrivateKey",
    "TxID",
]
