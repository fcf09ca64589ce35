"""The deadline index and the safe-until rule of the sweep."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from appfirst.rules.schedule import DeadlineIndex, EndIndex, InputProgress, safe_until


def test_pop_due_returns_only_what_is_due_in_due_order() -> None:
    index = DeadlineIndex()
    index.update(0, "a", 30.0)
    index.update(0, "b", 10.0)
    index.update(0, "c", 20.0)
    index.update(1, "d", 5.0)
    assert index.pop_due(0, 20.0) == [("b", 10.0), ("c", 20.0)]
    assert index.pending() == 2
    assert index.pop_due(0, 25.0) == []
    assert index.next_due(0) == 30.0


def test_moved_and_cancelled_deadlines_are_not_returned() -> None:
    index = DeadlineIndex()
    index.update(0, "moved", 10.0)
    index.update(0, "moved", 50.0)  # a delivered receipt moved it later
    index.update(0, "cancelled", 10.0)
    index.update(0, "cancelled", None)  # read in time
    assert index.pop_due(0, 20.0) == []
    assert index.pop_due(0, 50.0) == [("moved", 50.0)]
    assert index.pending() == 0


def test_dropping_a_partition_forgets_it_and_own_keeps_an_empty_one() -> None:
    index = DeadlineIndex()
    index.update(3, "x", 1.0)
    index.drop(3)
    index.own(4)
    assert index.partitions() == {4}
    assert index.pop_due(3, math.inf) == []


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.one_of(st.none(), st.floats(0, 100))), max_size=60
    ),
    st.floats(0, 100),
)
def test_pop_due_agrees_with_the_latest_due_time_of_each_message(
    updates: list[tuple[str, float | None]], until: float
) -> None:
    index = DeadlineIndex()
    latest: dict[str, float | None] = {}
    for message_id, due in updates:
        index.update(0, message_id, due)
        latest[message_id] = due
    popped = index.pop_due(0, until)
    want = sorted((d, m) for m, d in latest.items() if d is not None and d <= until)
    assert sorted((d, m) for m, d in popped) == want
    assert index.pending() == sum(1 for d in latest.values() if d is not None and d > until)


def test_the_cost_of_a_sweep_follows_what_is_due_not_what_is_pending() -> None:
    index = DeadlineIndex()
    rng = random.Random(1)
    for i in range(100_000):
        index.update(0, f"m{i}", 1_000 + rng.random() * 1_000)
    index.update(0, "due", 5.0)
    heap = index._heaps[0]
    before = len(heap)
    assert index.pop_due(0, 10.0) == [("due", 5.0)]
    assert len(heap) == before - 1  # one pop, nothing else touched


LIVE = {"now": 100.0, "lateness": 5.0, "replay": False}


def test_live_all_caught_up_is_now() -> None:
    assert safe_until([InputProgress(True, None)] * 3, **LIVE) == 100.0  # type: ignore[arg-type]


def test_live_backlog_holds_the_sweep_to_its_watermark_less_lateness() -> None:
    progress = [InputProgress(True, 99.0), InputProgress(False, 60.0), InputProgress(True, None)]
    assert safe_until(progress, **LIVE) == 55.0  # type: ignore[arg-type]


def test_an_input_not_read_at_all_holds_everything() -> None:
    progress = [InputProgress(True, 99.0), InputProgress(False, None)]
    assert safe_until(progress, **LIVE) == -math.inf  # type: ignore[arg-type]


def test_replay_uses_the_slowest_input_and_ignores_finished_ones() -> None:
    progress = [InputProgress(False, 500.0), InputProgress(False, 300.0), InputProgress(True, 1.0)]
    assert safe_until(progress, now=0, lateness=99, replay=True) == 300.0
    assert safe_until([InputProgress(True, 5.0)] * 3, now=0, lateness=0, replay=True) == math.inf


# --- the retention index ----------------------------------------------------------------


def test_a_row_goes_once_its_bucket_has_wholly_passed_never_before_its_end() -> None:
    index = EndIndex(grain=30.0)
    index.note(0, "a", 95.0)  # the bucket of 90 to 120
    index.note(0, "b", None)  # pending work: never listed
    assert index.pop_due(0, 100.0) == []
    assert index.pop_due(0, 119.9) == []
    assert index.pop_due(0, 120.0) == ["a"]
    assert index.pop_due(0, 1e12) == []


def test_a_key_rewritten_straight_after_is_listed_once() -> None:
    index = EndIndex(grain=10.0)
    index.note(0, "a", 1.0)
    index.note(0, "a", 2.0)
    index.note(0, "b", 3.0)
    index.note(0, "a", 4.0)  # after another key: listed again, the caller skips a repeat
    assert index.listed() == 3
    assert index.pop_due(0, 10.0) == ["a", "b", "a"]


def test_buckets_come_out_in_time_order_per_partition_and_drop_forgets_one() -> None:
    index = EndIndex(grain=1.0)
    for key, end in (("late", 50.5), ("early", 3.2), ("middle", 20.0)):
        index.note(0, key, end)
    index.note(1, "other", 1.0)
    assert index.pop_due(0, 100.0) == ["early", "middle", "late"]
    index.drop(1)
    assert index.pop_due(1, 100.0) == [] and index.listed() == 0


@settings(max_examples=200, deadline=None)
@given(
    notes=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.floats(0, 1000, allow_nan=False)), max_size=40
    ),
    until=st.floats(0, 1100, allow_nan=False),
    grain=st.sampled_from([0.25, 1.0, 30.0]),
)
def test_end_index_is_never_early_and_at_most_a_grain_late(
    notes: list[tuple[str, float]], until: float, grain: float
) -> None:
    index = EndIndex(grain=grain)
    for key, end in notes:
        index.note(0, key, end)
    out = index.pop_due(0, until)
    popped = set(out)
    for key in popped:  # each time a key came out, for a listing whose end has passed
        assert out.count(key) <= sum(1 for k, end in notes if k == key and end <= until)
    for key, end in notes:  # and every end a grain or more ago came out
        if end <= until - grain:
            assert key in popped
