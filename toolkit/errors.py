"""Every exception natkit raises on purpose.

Decoders in ``toolkit.codec`` raise only :class:`DecodeError` subclasses, on any input
(design.md §2). Crypto failures (a box that does not open) are :class:`CryptoError`.
Bad user input (a config file, a CLI argument) is :class:`UsageError`; the CLI turns it into
one line on stderr and exit status 2.
"""

from __future__ import annotations


class NatkitError(Exception):
    """Base class of every natkit error."""


class DecodeError(NatkitError, ValueError):
    """Bytes that do not decode as the wire format they were handed to.

    ``reason`` is a short machine-friendly tag (counted by sniffers and nodes),
    the message is the human explanation.
    """

    reason = "malformed"

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


class TruncatedError(DecodeError):
    """Fewer bytes than the format needs."""

    reason = "truncated"


class BadMagicError(DecodeError):
    """A magic number, cookie or version field is wrong."""

    reason = "bad-magic"


class BadLengthError(DecodeError):
    """A length field is inconsistent, or a size limit is exceeded."""

    reason = "bad-length"


class BadChecksumError(DecodeError):
    """A FINGERPRINT, MESSAGE-INTEGRITY or similar check failed."""

    reason = "bad-checksum"


class UnknownTypeError(DecodeError):
    """A message or frame type this decoder does not know."""

    reason = "unknown-type"


class BadValueError(DecodeError):
    """A field holds a value the format does not allow."""

    reason = "bad-value"


class CryptoError(NatkitError):
    """A cryptographic operation failed (wrong key, bad tag, bad key material)."""

    reason = "crypto"


class OpenError(CryptoError):
    """A sealed box (disco, DERP ClientInfo) did not open with the keys at hand."""

    reason = "box-not-opened"


class UsageError(NatkitError):
    """Bad input from a user: a CLI argument, a file, a config. Shown as one line, exit 2."""


__all__ = [
    "NatkitError",
    "DecodeError",
    "TruncatedError",
    "BadMagicError",
    "BadLengthError",
    "BadChecksumError",
    "UnknownTypeError",
    "BadValueError",
    "CryptoError",
    "OpenError",
    "UsageError",
]
