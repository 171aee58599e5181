"""STUN on raw bytes: header framing, MESSAGE-INTEGRITY, FINGERPRINT and the credential keys.

Follows RFC 8489 §6 (the 20-byte header and the attribute walk), §14 (TLV padding), §14.5-§14.7
(MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256, FINGERPRINT: computed over the bytes before them with
an adjusted length field) and §9.1.2, §9.2.2, §18.5.1 (short- and long-term credential keys), and
Tailscale's ``stun.Is`` (protocols.md §3.3). Everything here works on wire bytes, not on
:class:`~toolkit.codec.stun.Message`, so the received bytes can be checked as they are (the checks are
separate from decoding). :mod:`toolkit.codec.stun` builds on this and re-exports the public names;
import from there.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import stringprep
import struct
import unicodedata

from toolkit.codec.stun_attrs import MAGIC_COOKIE, AttrType
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, TruncatedError
from toolkit.types import TxID

HEADER_LEN = 20
FINGERPRINT_XOR = 0x5354554E
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")


def _header(msg_type: int, body_len: int, txid: TxID) -> bytes:
    if body_len > 0xFFFF:
        raise BadLengthError(f"STUN message body of {body_len} bytes exceeds 65535")
    return struct.pack("!HHI", msg_type, body_len, MAGIC_COOKIE) + txid.raw


def _with_length(prefix: bytes, body_len: int) -> bytes:
    """``prefix`` with its header length field replaced (RFC 8489 §14.5-§14.7 "adjusted length")."""
    return prefix[:2] + body_len.to_bytes(2, "big") + prefix[4:]


def _hmac_sha1(prefix: bytes, key: bytes) -> bytes:
    # RFC 8489 §14.5: length counts up to the end of MESSAGE-INTEGRITY (4 + 20 bytes)
    return hmac.new(key, _with_length(prefix, len(prefix) - HEADER_LEN + 24), hashlib.sha1).digest()


def _hmac_sha256(prefix: bytes, key: bytes, size: int = 32) -> bytes:
    # RFC 8489 §14.6: same rule, the attribute being 4 + size bytes (truncation keeps the first bytes)
    mac = hmac.new(key, _with_length(prefix, len(prefix) - HEADER_LEN + 4 + size), hashlib.sha256).digest()
    return mac[:size]


def _crc(prefix: bytes) -> int:
    # RFC 8489 §14.7: CRC-32 (ISO 3309 / zlib) over the message up to FINGERPRINT, length including it
    return (binascii.crc32(_with_length(prefix, len(prefix) - HEADER_LEN + 8)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


def _parse(data: bytes) -> tuple[int, TxID, list[tuple[int, int, bytes]]]:
    """Validate the header (RFC 8489 §6) and walk the TLVs: (type, [(attr type, offset, value)])."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise TruncatedError(f"a STUN message has a 20-byte header, got {len(data)} bytes")
    msg_type, length = struct.unpack_from("!HH", data)
    if msg_type & 0xC000:
        raise BadMagicError("not STUN: the top two bits of the message type are not zero", offset=0)
    if data[4:8] != _COOKIE_BYTES:
        raise BadMagicError(f"not STUN: magic cookie is {data[4:8].hex()}, expected 2112a442", offset=4)
    if length % 4:
        raise BadLengthError(f"STUN length {length} is not a multiple of 4", offset=2)
    end = HEADER_LEN + length
    if end > len(data):
        raise TruncatedError(f"STUN header says {length} bytes of attributes, only {len(data) - HEADER_LEN} follow")
    txid = TxID(data[8:20])
    attrs: list[tuple[int, int, bytes]] = []
    pos = HEADER_LEN
    while pos < end:  # bytes beyond `end` are ignored (protocols.md §3.3)
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        if pos + 4 + attr_len > end:
            raise TruncatedError(
                f"STUN attribute {attr_type:#06x} of {attr_len} bytes overruns the message", offset=pos
            )
        attrs.append((attr_type, pos, data[pos + 4 : pos + 4 + attr_len]))
        pos += 4 + attr_len + (-attr_len % 4)  # RFC 8489 §14: values are padded to 4 bytes
    return msg_type, txid, attrs


def is_stun(data: bytes) -> bool:
    """Tailscale's ``stun.Is`` (protocols.md §3.3): 20+ bytes, top two bits zero, magic cookie."""
    return len(data) >= HEADER_LEN and data[0] & 0xC0 == 0 and bytes(data[4:8]) == _COOKIE_BYTES


def _find(data: bytes, attr_type: int) -> tuple[bytes, int, bytes, bool] | None:
    """The first attribute of ``attr_type``: (message prefix before it, its index, value, is last)."""
    _, _, attrs = _parse(data)
    for i, (t, off, value) in enumerate(attrs):
        if t == attr_type:
            return bytes(data[:off]), i, value, i == len(attrs) - 1
    return None


def verify_fingerprint(data: bytes) -> bool | None:
    """None without FINGERPRINT; False unless it is the last attribute and its CRC matches
    (RFC 8489 §14.7). Raises DecodeError if ``data`` is not STUN framing."""
    found = _find(data, AttrType.FINGERPRINT)
    if found is None:
        return None
    prefix, _, value, last = found
    return last and len(value) == 4 and int.from_bytes(value, "big") == _crc(prefix)


def verify_integrity(data: bytes, key: bytes) -> bool | None:
    """Check the first MESSAGE-INTEGRITY with ``key`` (RFC 8489 §14.5); None when there is none."""
    found = _find(data, AttrType.MESSAGE_INTEGRITY)
    if found is None:
        return None
    prefix, _, value, _ = found
    return len(value) == 20 and hmac.compare_digest(value, _hmac_sha1(prefix, key))


def verify_integrity_sha256(data: bytes, key: bytes) -> bool | None:
    """Check the first MESSAGE-INTEGRITY-SHA256 (possibly truncated) with ``key`` (RFC 8489 §14.6)."""
    found = _find(data, AttrType.MESSAGE_INTEGRITY_SHA256)
    if found is None:
        return None
    prefix, _, value, _ = found
    if len(value) not in (16, 20, 24, 28, 32):
        return False
    return hmac.compare_digest(value, _hmac_sha256(prefix, key, len(value)))


# --- credentials: RFC 8489 §9.1.2, §9.2.2, §18.5.1 -------------------------------------------------


def _opaque_string(s: str) -> str:
    """RFC 8265 §4.2 OpaqueString, simplified: non-ASCII spaces become U+0020, then NFC.
    Disallowed code points are not rejected. ASCII passwords pass through unchanged."""
    s = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in s)
    return unicodedata.normalize("NFC", s)


def _saslprep(s: str) -> str:
    """RFC 4013 SASLprep (what RFC 5389 and the RFC 5769 vectors use), simplified: drop the
    "mapped to nothing" characters (RFC 3454 B.1), non-ASCII spaces (C.1.2) to U+0020, NFKC.
    Prohibited-output and bidi checks are not done."""
    s = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in s if not stringprep.in_table_b1(ch))
    return unicodedata.normalize("NFKC", s)


def short_term_key(password: str, *, saslprep: bool = False) -> bytes:
    """The HMAC key for short-term credentials: OpaqueString(password) in UTF-8 (RFC 8489 §9.1.2);
    ``saslprep=True`` uses RFC 5389's SASLprep instead."""
    return (_saslprep(password) if saslprep else _opaque_string(password)).encode("utf-8")


def long_term_key(username: str, realm: str, password: str, *, algorithm: str = "md5", saslprep: bool = False) -> bytes:
    """The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password), realm
    and password through OpaqueString (or SASLprep). ``algorithm="sha256"`` gives the SHA-256 key of
    PASSWORD-ALGORITHM 0x0002 (RFC 8489 §18.5.1.2)."""
    prep = _saslprep if saslprep else _opaque_string
    text = f"{username}:{prep(realm)}:{prep(password)}".encode()
    if algorithm == "md5":
        return hashlib.md5(text, usedforsecurity=False).digest()
    if algorithm == "sha256":
        return hashlib.sha256(text).digest()
    raise BadValueError(f"unknown STUN password algorithm {algorithm!r}: use 'md5' or 'sha256'")


# fmt: off
__all__ = [
    "FINGERPRINT_XOR", "HEADER_LEN", "is_stun", "long_term_key", "short_term_key", "verify_fingerprint",
    "verify_integrity", "verify_integrity_sha256",
]
# fmt: on
