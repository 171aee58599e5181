"""The DERP token bucket (toolkit/sansio/tokenbucket.py), shared by the relay and the client: Go's
``x/time/rate`` semantics (start full, refill up to the burst, never delay), and a Hypothesis check that
no sequence of requests gets more than the burst plus the refill."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.sansio.tokenbucket import TokenBucket


def test_like_go_rate_limiter() -> None:
    bucket = TokenBucket(rate=100, burst=50)
    assert bucket.allow(50, 0.0)  # starts full
    assert not bucket.allow(1, 0.0)
    assert bucket.allow(10, 0.1)  # refilled 10
    assert not bucket.allow(51, 100.0)  # never more than the burst
    assert bucket.allow(50, 100.0)
    assert not TokenBucket(rate=10, burst=0).allow(1, 5.0)  # Go: burst 0 lets nothing through


def test_rate_zero_spends_the_burst_once_and_bad_values_raise() -> None:
    bucket = TokenBucket(rate=0, burst=3, now=0.0)  # Go's zero Limit: the burst, then nothing
    assert [bucket.allow(1, t) for t in (0.0, 1.0, 2.0, 3.0, 100.0)] == [True, True, True, False, False]
    for rate, burst in ((-1, 10), (1, -1)):
        with pytest.raises(ValueError, match="rate >= 0 and burst >= 0"):
            TokenBucket(rate=rate, burst=burst)


def test_start_time_counts_from_construction_or_first_use() -> None:
    server = TokenBucket(rate=1, burst=3, now=10.0)  # the relay's: full when the client connected
    assert server.allow(3, 10.0) and not server.allow(1, 10.5) and server.allow(1, 11.0)
    client = TokenBucket(rate=1, burst=3)  # the client's: full at its first send, whenever that is
    assert client.allow(3, 500.0) and not client.allow(1, 500.5) and client.allow(1, 501.0)


def test_a_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=10, burst=10, now=5.0)
    assert bucket.allow(10, 5.0)
    assert not bucket.allow(1, 4.0)
    assert bucket.allow(1, 5.1 + 1e-9)  # 5.0 is still the reference: 0.1 s refilled one token


@settings(max_examples=200)
@given(
    st.floats(0.0, 1000.0),
    st.floats(0.0, 1000.0),
    st.lists(st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 300.0)), max_size=40),
)
def test_never_more_than_burst_plus_refill(rate: float, burst: float, steps: list[tuple[float, float]]) -> None:
    bucket, now, spent = TokenBucket(rate, burst, now=0.0), 0.0, 0.0
    for dt, n in steps:
        now += dt
        if bucket.allow(n, now):
            spent += n
        assert 0.0 <= bucket.tokens <= burst
    assert spent <= burst + rate * now + 1e-6
