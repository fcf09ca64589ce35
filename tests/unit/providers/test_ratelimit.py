"""The token bucket keeps any caller pattern under its rate."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.providers.ratelimit import TokenBucket


def test_a_burst_up_to_capacity_goes_at_once_then_paces() -> None:
    bucket = TokenBucket(rate=20, capacity=20)
    waits = [bucket.reserve(0.0) for _ in range(25)]
    assert waits[:20] == [0.0] * 20
    assert waits[20:] == pytest.approx([0.05, 0.10, 0.15, 0.20, 0.25])


def test_tokens_come_back_with_time_but_never_beyond_capacity() -> None:
    bucket = TokenBucket(rate=10, capacity=5)
    for _ in range(5):
        bucket.reserve(0.0)
    assert bucket.reserve(0.5) == 0.0  # five back, one used
    assert bucket.reserve(100.0) == 0.0
    assert bucket.tokens == 4.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 10), min_size=1, max_size=300), st.floats(1, 100))
def test_no_window_ever_exceeds_rate_times_length_plus_burst(
    arrivals: list[float], rate: float
) -> None:
    bucket = TokenBucket(rate=rate, capacity=max(1.0, rate / 4))
    sends = sorted(t + bucket.reserve(t) for t in sorted(arrivals))
    for i, start in enumerate(sends):
        for j in range(i, len(sends)):
            window = sends[j] - start
            assert j - i + 1 <= rate * window + bucket.capacity + 1e-6


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, capacity=1)


async def test_a_stalled_event_loop_releases_no_burst_after_it() -> None:
    # Waiters queued on the bucket, then the loop blocked for 0.2 s (a long batch, a GC):
    # those whose turn fell within the stall must not all go at once after it.
    rate = 100.0
    bucket = TokenBucket(rate=rate, capacity=1.0)
    released: list[float] = []
    fifth = asyncio.Event()

    async def caller() -> None:
        await bucket.acquire()
        released.append(time.monotonic())
        if len(released) == 5:
            fifth.set()

    callers = [asyncio.ensure_future(caller()) for _ in range(40)]
    await fifth.wait()
    time.sleep(0.2)  # noqa: ASYNC251 - the stall: the loop runs nothing else meanwhile
    await asyncio.gather(*callers)
    for i, start in enumerate(released):
        for j in range(i, len(released)):
            # A token bucket's bound, and one more for the turn that was due at the stall.
            assert j - i + 1 <= rate * (released[j] - start) + bucket.capacity + 1 + 1e-6
