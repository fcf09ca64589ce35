"""Consumer lag per partition, from end offsets and committed offsets."""

from __future__ import annotations

from appfirst.telemetry import lags


def test_lag_is_end_minus_committed_for_owned_partitions_with_a_known_end() -> None:
    owned = {("send-requests", 0), ("send-requests", 1), ("dispatches", 2)}
    highwater = {("send-requests", 0): 120, ("send-requests", 1): None, ("dispatches", 2): 7}
    committed = {("send-requests", 0): 100, ("dispatches", 2): 7, ("other", 9): 1}
    assert lags(owned, highwater, committed, {}) == {("send-requests", 0): 20, ("dispatches", 2): 0}


def test_with_nothing_committed_lag_counts_from_the_earliest_offset() -> None:
    owned = {("a", 0), ("a", 1)}
    highwater = {("a", 0): 50, ("a", 1): 50}
    assert lags(owned, highwater, {("a", 0): None}, {("a", 0): 30}) == {("a", 0): 20, ("a", 1): 50}
