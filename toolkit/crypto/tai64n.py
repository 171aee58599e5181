"""TAI64N timestamps: the 12-byte clock a WireGuard initiation carries, encrypted.

Follows protocols.md §8.2 (wireguard-go ``tai64n/tai64n.go``) and the WireGuard whitepaper §5.4.2.
Layout: a big-endian u64 ``0x400000000000000a + unix_seconds`` (the TAI64 label; the ``0x0a`` is the
10 s offset TAI64 conventionally applies, WireGuard keeps it although it ignores leap seconds) then a
big-endian u32 of nanoseconds.

The responder keeps the newest timestamp it accepted from each peer and drops an initiation whose
timestamp is not strictly newer: a replayed initiation cannot reset a session (whitepaper §5.1).
Because both fields are big-endian, comparing the raw 12 bytes compares the times; :class:`Tai64n`
orders that way.

Blurring: wireguard-go clears the low 24 bits of the nanoseconds (``whitenerMask``, about 16.8 ms),
so the timestamp does not leak a precise clock to an observer who later learns the keys. Two
initiations within the same 16.8 ms window get equal timestamps and the second is rejected as a
replay, which the handshake flood limit (20 ms, protocols.md §8.5) makes moot. :meth:`Tai64n.from_wall`
blurs by default, like wireguard-go; ``blur=False`` keeps full precision (a test or a capture that
wants the exact clock).

The clock is injected: this module never reads the time. Pass ``now_wall`` as float seconds since
the Unix epoch (``time.time()``) or use :meth:`Tai64n.from_ns` with integer nanoseconds
(``time.time_ns()``) to avoid float rounding.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from toolkit.errors import BadLengthError, BadValueError

TAI64N_LEN = 12
TAI64_BASE = 0x400000000000000A  # protocols.md §8.2: label of Unix second 0
WHITENER_MASK = 0x1000000 - 1  # wireguard-go tai64n.go: low 24 bits of the nanoseconds are cleared
NS_PER_S = 1_000_000_000

_STRUCT = struct.Struct(">QI")


@dataclass(frozen=True, slots=True, order=True)
class Tai64n:
    """A TAI64N label: Unix seconds and nanoseconds. Ordered as the wire bytes are (newer is greater)."""

    seconds: int
    nanos: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.nanos < NS_PER_S:
            raise BadValueError(f"TAI64N nanoseconds must be in 0..999999999, got {self.nanos}")
        if not -TAI64_BASE <= self.seconds <= 0xFFFFFFFFFFFFFFFF - TAI64_BASE:
            raise BadValueError(f"TAI64N seconds {self.seconds} do not fit the 64-bit label")

    @classmethod
    def from_ns(cls, unix_ns: int, *, blur: bool = True) -> Tai64n:
        """From integer nanoseconds since the Unix epoch; ``blur`` clears the low 24 bits like wireguard-go."""
        seconds, nanos = divmod(int(unix_ns), NS_PER_S)
        if blur:
            nanos &= ~WHITENER_MASK
        return cls(seconds, nanos)

    @classmethod
    def from_wall(cls, now_wall: float, *, blur: bool = True) -> Tai64n:
        """From float seconds since the Unix epoch (an injected wall clock)."""
        seconds = int(now_wall // 1)
        nanos = min(round((now_wall - seconds) * NS_PER_S), NS_PER_S - 1)
        return cls.from_ns(seconds * NS_PER_S + nanos, blur=blur)

    @classmethod
    def decode(cls, data: bytes) -> Tai64n:
        """Parse the 12 wire bytes. Raises :class:`BadLengthError` or :class:`BadValueError`."""
        if len(data) != TAI64N_LEN:
            raise BadLengthError(f"a TAI64N timestamp has {TAI64N_LEN} bytes, got {len(data)}")
        label, nanos = _STRUCT.unpack(bytes(data))
        return cls(label - TAI64_BASE, nanos)

    def encode(self) -> bytes:
        """The 12 wire bytes: BE u64 ``TAI64_BASE + seconds`` || BE u32 nanoseconds (protocols.md §8.2)."""
        return _STRUCT.pack(TAI64_BASE + self.seconds, self.nanos)

    def __bytes__(self) -> bytes:
        return self.encode()

    @property
    def unix(self) -> float:
        """Seconds since the Unix epoch as a float (for display and arithmetic)."""
        return self.seconds + self.nanos / NS_PER_S

    def is_after(self, other: Tai64n | None) -> bool:
        """Strictly newer than ``other`` (None counts as the beginning of time): the replay rule."""
        return other is None or self > other

    def __str__(self) -> str:
        try:
            when = datetime.fromtimestamp(self.seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        except (OverflowError, OSError, ValueError):
            return f"TAI64N({self.seconds}s+{self.nanos}ns)"
        return f"{when}.{self.nanos:09d}Z"


def tai64n(now_wall: float, *, blur: bool = True) -> bytes:
    """The 12-byte timestamp of an injected wall clock (float Unix seconds), blurred like wireguard-go."""
    return Tai64n.from_wall(now_wall, blur=blur).encode()


__all__ = ["NS_PER_S", "TAI64N_LEN", "TAI64_BASE", "WHITENER_MASK", "Tai64n", "tai64n"]
