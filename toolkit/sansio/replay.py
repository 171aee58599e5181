"""The anti-replay sliding window of WireGuard transport counters (RFC 6479 design).

Follows protocols.md §8.5 (wireguard-go ``replay/replay.go``) and the whitepaper §5.4.6. Every
transport message carries a 64-bit counter; the receiver accepts each counter at most once, accepts
reordering within a window behind the highest counter seen, and rejects counters that are too old
or at/above the hard limit ``REJECT_AFTER_MESSAGES``.

RFC 6479 layout: a ring of ``RING_BLOCKS`` = 128 blocks of 64 bits. Counter ``c`` lives in block
``c >> 6`` (modulo 128) at bit ``c & 63``. When a counter beyond the highest one arrives, the blocks
between the old and the new head are zeroed (at most 128 of them, whatever the jump), so the work
per packet is O(1) amortised and never O(window). One block is kept as slack for the head block
being filled, so the usable window is ``(128 - 1) * 64 = 8128`` counters: a counter more than 8128
behind the highest one seen is rejected, any counter inside the window is accepted once.

Like wireguard-go, the filter starts with "highest seen" = 0, so counter 0 is in the window from the
start, and the check runs *after* the packet authenticated (an attacker cannot move the window with
forged counters). A new session (new keypair) gets a new filter or :meth:`ReplayFilter.reset`.

Pure state, no I/O, no clock: this module is part of :mod:`toolkit.sansio`.
"""

from __future__ import annotations

BLOCK_BIT_LOG = 6
BLOCK_BITS = 1 << BLOCK_BIT_LOG  # 64 bits per block (a Go uint64)
RING_BLOCKS = 1 << 7  # 128 blocks in the ring
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128: protocols.md §8.5
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1  # protocols.md §8.5: hard counter limit

_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayFilter:
    """Accept each transport counter once, within a window of :data:`WINDOW_SIZE` behind the highest.

    >>> f = ReplayFilter()
    >>> f.check_and_update(0), f.check_and_update(0), f.check_and_update(9000), f.check_and_update(871)
    (True, False, True, False)
    """

    __slots__ = ("_last", "_ring")

    def __init__(self) -> None:
        self._last = 0
        self._ring = [0] * RING_BLOCKS

    def reset(self) -> None:
        """Forget every counter (a new session)."""
        self._last = 0
        self._ring = [0] * RING_BLOCKS

    @property
    def last(self) -> int:
        """The highest counter accepted so far (0 before any)."""
        return self._last

    def check_and_update(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """True and remember ``counter`` if it is new; False for a duplicate, a too-old one or ``>= limit``."""
        if counter >= limit or counter < 0:
            return False
        block = counter >> BLOCK_BIT_LOG
        last = self._last
        ring = self._ring
        if counter > last:  # move the window forward, zeroing the blocks it enters
            current = last >> BLOCK_BIT_LOG
            end = current + min(block - current, RING_BLOCKS)
            for i in range(current + 1, end + 1):
                ring[i & _BLOCK_MASK] = 0
            self._last = counter
        elif last - counter > WINDOW_SIZE:  # behind the window
            return False
        slot = block & _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = ring[slot]
        if old & bit:
            return False
        ring[slot] = old | bit
        return True

    def would_accept(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        """What :meth:`check_and_update` would answer, without remembering anything."""
        if counter >= limit or counter < 0:
            return False
        if counter > self._last:
            return True
        if self._last - counter > WINDOW_SIZE:
            return False
        return not self._ring[(counter >> BLOCK_BIT_LOG) & _BLOCK_MASK] & (1 << (counter & _BIT_MASK))

    def __repr__(self) -> str:
        return f"ReplayFilter(last={self._last})"


__all__ = [
    "BLOCK_BITS",
    "REJECT_AFTER_MESSAGES",
    "RING_BLOCKS",
    "WINDOW_SIZE",
    "ReplayFilter",
]
