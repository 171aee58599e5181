"""The RFC 6479 replay window (protocols.md §8.5), against a set-and-max reference model."""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.sansio.replay import REJECT_AFTER_MESSAGES, WINDOW_SIZE, ReplayFilter
from toolkit.timing import Timing


class ReferenceFilter:
    """The obvious model: remember every counter; reject duplicates, too old (> WINDOW behind max), >= limit."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.max = 0  # wireguard-go starts with last = 0

    def check_and_update(self, counter: int, limit: int = REJECT_AFTER_MESSAGES) -> bool:
        if counter >= limit or counter in self.seen or self.max - counter > WINDOW_SIZE:
            return False
        self.seen.add(counter)
        self.max = max(self.max, counter)
        return True


def test_constants() -> None:
    assert WINDOW_SIZE == 8128 == (128 - 1) * 64
    assert REJECT_AFTER_MESSAGES == 2**64 - 2**13 - 1 == Timing().reject_after_messages


def test_in_order_and_duplicates() -> None:
    f = ReplayFilter()
    assert all(f.check_and_update(c) for c in range(20_000))
    assert f.last == 19_999
    assert not any(f.check_and_update(c) for c in range(19_999 - WINDOW_SIZE, 20_000))


def test_reordering_inside_the_window() -> None:
    f = ReplayFilter()
    assert f.check_and_update(5000)
    assert [f.check_and_update(c) for c in (4999, 10, 0, 4999, 5001, 10)] == [True, True, True, False, True, False]
    assert f.last == 5001


def test_exactly_at_the_edge() -> None:
    f = ReplayFilter()
    assert f.check_and_update(10_000)
    assert not f.would_accept(10_000 - WINDOW_SIZE - 1)
    assert not f.check_and_update(10_000 - WINDOW_SIZE - 1)  # 8129 behind: too old
    assert f.would_accept(10_000 - WINDOW_SIZE)
    assert f.check_and_update(10_000 - WINDOW_SIZE)  # exactly 8128 behind: still inside
    assert not f.check_and_update(10_000 - WINDOW_SIZE)
    assert f.check_and_update(10_001)
    assert not f.check_and_update(10_000 - WINDOW_SIZE)  # the window moved past it


def test_big_jump_clears_the_ring() -> None:
    f = ReplayFilter()
    for c in range(0, 8000, 3):
        assert f.check_and_update(c)
    assert f.check_and_update(10**12)
    # everything old is outside the window; counters near the new head are all fresh
    assert not f.check_and_update(7998)
    assert all(f.check_and_update(10**12 - d) for d in range(1, WINDOW_SIZE + 1))
    assert not f.check_and_update(10**12 - WINDOW_SIZE - 1)


def test_limit() -> None:
    f = ReplayFilter()
    assert not f.check_and_update(REJECT_AFTER_MESSAGES)
    assert not f.check_and_update(2**64 - 1)
    assert f.check_and_update(REJECT_AFTER_MESSAGES - 1)
    assert not f.check_and_update(100, limit=100)
    assert f.check_and_update(REJECT_AFTER_MESSAGES - 2, limit=REJECT_AFTER_MESSAGES)
    assert not f.check_and_update(-1)


def test_would_accept_does_not_remember() -> None:
    f = ReplayFilter()
    assert f.would_accept(3) and f.would_accept(3)
    assert f.check_and_update(3) and not f.would_accept(3)


def test_reset() -> None:
    f = ReplayFilter()
    f.check_and_update(0)
    f.check_and_update(50_000)
    f.reset()
    assert f.last == 0 and f.check_and_update(0) and f.check_and_update(1)
    assert repr(f) == "ReplayFilter(last=1)"


def test_fast_enough_for_a_bulk_transfer() -> None:
    f = ReplayFilter()
    start = time.perf_counter()
    for c in range(100_000):  # ~140 MB of 1400-byte packets
        f.check_and_update(c)
    assert time.perf_counter() - start < 2.0  # O(1) per packet; O(window) would take minutes


counters = st.one_of(
    st.integers(0, 3 * WINDOW_SIZE),
    st.integers(WINDOW_SIZE - 70, WINDOW_SIZE + 70),
    st.integers(2**20, 2**20 + 3 * WINDOW_SIZE),
    st.integers(REJECT_AFTER_MESSAGES - 3 * WINDOW_SIZE, 2**64 - 1),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(counters, max_size=300))
def test_matches_reference_on_random_sequences(seq: list[int]) -> None:
    f, ref = ReplayFilter(), ReferenceFilter()
    for c in seq:
        assert f.check_and_update(c) == ref.check_and_update(c), c


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**40), st.lists(st.integers(-WINDOW_SIZE - 200, 200), max_size=300))
def test_matches_reference_near_a_moving_head(base: int, deltas: list[int]) -> None:
    f, ref = ReplayFilter(), ReferenceFilter()
    head = base
    for d in deltas:
        c = max(0, head + d)
        head = max(head, c)
        assert f.would_accept(c) == (ref.check_and_update(c)) == f.check_and_update(c), c
